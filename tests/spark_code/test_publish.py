"""A writer killed half-way: readers still find the previous version, and the next writer puts it back.

The state a killed writer leaves is made here with the same moves the writer does, under the name of a process
that really ran and ended (tests/fruits_assets/test_interrupted_runs.py kills real runs).
"""

import os
import socket
import subprocess

from pyspark.ml.feature import StandardScaler
from pyspark.ml.linalg import Vectors

from spark_code import storage
from spark_code.ml_models import ModelArtifact, load_model, save_model
from spark_code.parquet_store import class_dir, read_classes, read_table, write_classes, write_table
from spark_code.publish import owner_is_dead


def _dead_tag() -> str:
    process = subprocess.Popen(["true"])
    process.wait()
    return f"0dead.{process.pid}@{socket.gethostname()}"


def _rows(spark, data):
    return spark.createDataFrame(data, "path string, label string, split string, value int")


def _values(df) -> dict[str, int]:
    return {r["path"]: r["value"] for r in df.collect()}


def _killed_mid_swap(spark, base: str, name: str, partial: list) -> None:
    """The state of a writer killed between moving a class aside and moving its staged version in."""
    tag = _dead_tag()
    storage.rename(spark, class_dir(spark, base, name), class_dir(spark, f"{base}/_previous-{tag}", name))
    _rows(spark, partial).write.partitionBy("label").parquet(f"{base}/_staging-{tag}")


def test_readers_see_the_previous_class_and_the_next_write_replaces_it(spark, tmp_path):
    base = str(tmp_path / "asset")
    write_classes(
        _rows(spark, [("a1", "Apple é", "Training", 1), ("b1", "Banana", "Training", 2)]), base, ["Apple é", "Banana"]
    )
    _killed_mid_swap(spark, base, "Apple é", [("half", "Apple é", "Training", 7)])
    assert _values(read_classes(spark, base, ["Apple é", "Banana"])) == {"a1": 1, "b1": 2}
    write_classes(_rows(spark, [("a2", "Apple é", "Training", 3)]), base, ["Apple é"])
    assert _values(read_classes(spark, base, ["Apple é", "Banana"])) == {"a2": 3, "b1": 2}
    assert [p.name for p in (tmp_path / "asset").iterdir() if p.name.startswith("_")] == []


def test_writing_another_class_puts_back_a_class_left_aside(spark, tmp_path):
    base = str(tmp_path / "asset")
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple"])
    _killed_mid_swap(spark, base, "Apple", [("half", "Apple", "Training", 7)])
    assert not (tmp_path / "asset" / "label=Apple").exists()
    write_classes(_rows(spark, [("c1", "Cherry", "Training", 5)]), base, ["Cherry"])
    assert (tmp_path / "asset" / "label=Apple").is_dir()
    assert _values(read_classes(spark, base, ["Apple", "Cherry"])) == {"a1": 1, "c1": 5}
    assert sorted(p.name for p in (tmp_path / "asset").iterdir()) == ["label=Apple", "label=Cherry"]


def test_a_running_writers_staging_folder_is_left_alone(spark, tmp_path):
    base = tmp_path / "asset"
    alive = base / f"_staging-0live.{os.getpid()}@{socket.gethostname()}" / "_temporary"
    alive.mkdir(parents=True)
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), str(base), ["Apple"])
    assert alive.is_dir()


def test_a_table_left_aside_is_read_and_restored(spark, tmp_path):
    base = str(tmp_path / "evaluation")
    write_table(_rows(spark, [("a1", "Apple", "Test", 1)]), base)
    storage.rename(spark, base, f"{base}._previous-{_dead_tag()}")
    assert _values(read_table(spark, base)) == {"a1": 1}
    write_table(_rows(spark, [("a2", "Apple", "Test", 2)]), base)
    assert _values(read_table(spark, base)) == {"a2": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation"]


def test_a_model_left_aside_is_loaded_and_replaced(spark, tmp_path):
    data = spark.createDataFrame([(Vectors.dense([1.0, 2.0]),), (Vectors.dense([3.0, 6.0]),)], ["x"])
    first = StandardScaler(inputCol="x", outputCol="y", withMean=True).fit(data)
    path = str(tmp_path / "model")
    save_model(spark, ModelArtifact(first, {"version": 1}), path)
    storage.rename(spark, path, f"{path}._previous")  # killed between the two moves of the next save
    loaded = load_model(spark, path)
    assert loaded.notes == {"version": 1} and loaded.model.mean.toArray().tolist() == [2.0, 4.0]
    save_model(spark, ModelArtifact(first, {"version": 2}), path)
    assert load_model(spark, path).notes == {"version": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_owner_of_a_temporary_folder(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "node-1.example.com")
    alive, dead = os.getpid(), int(_dead_tag().split(".")[1].split("@")[0])
    assert owner_is_dead(f"_staging-0abc.{dead}@node-1.example.com")
    assert owner_is_dead(f"evaluation._previous-0abc.{dead}@node-1.example.com")
    assert not owner_is_dead(f"_staging-0abc.{alive}@node-1.example.com")
    assert not owner_is_dead(f"_staging-0abc.{dead}@other-host")  # another machine's writer may still run
    assert not owner_is_dead("_staging-0abc")
