"""Publishing by pointer: readers find a complete version whatever point a writer was killed at, and later writers
delete what dead writers left, on local disk (with Spark) and on S3 (a real S3 API on loopback, without Spark).

The states a killed writer leaves are made here with the writer's own steps, under the tag of a process that really
ran and ended; tests/fruits_assets/test_interrupted_runs.py kills real runs, and the S3 test below kills a real
writer process.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.ml.feature import StandardScaler
from pyspark.ml.linalg import Vectors

from spark_code import publish, storage
from spark_code.ml_models import ModelArtifact, load_model, save_model
from spark_code.parquet_store import read_arrow, read_classes, read_table, write_classes, write_table
from tests.conftest import REPO


def _dead_tag() -> str:
    process = subprocess.Popen(["true"])
    process.wait()
    return f"0dead.{process.pid}@{socket.gethostname()}"


def _rows(spark, data):
    return spark.createDataFrame(data, "path string, label string, split string, value int")


def _values(df) -> dict[str, int]:
    return {r["path"]: r["value"] for r in df.collect()}


def test_a_writer_killed_before_publishing_changes_nothing_and_its_version_is_deleted(spark, tmp_path):
    base = str(tmp_path / "asset")
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple"])
    dead = f"{base}/{publish.VERSIONS}/{_dead_tag()}"
    _rows(spark, [("half", "Apple", "Training", 7)]).write.partitionBy("label").parquet(dead)
    assert _values(read_classes(spark, base, ["Apple"])) == {"a1": 1}
    assert publish.leftovers(base) == [dead[len(base) + 1 :]]
    write_classes(_rows(spark, [("c1", "Cherry", "Training", 5)]), base, ["Cherry"])
    assert _values(read_classes(spark, base, ["Apple", "Cherry"])) == {"a1": 1, "c1": 5}
    assert publish.leftovers(base) == [] and not os.path.exists(dead)


def test_a_writer_killed_after_publishing_leaves_the_new_class_and_the_old_one_is_deleted_later(spark, tmp_path):
    base = str(tmp_path / "asset")
    write_classes(
        _rows(spark, [("a1", "Apple", "Training", 1), ("b1", "Banana", "Training", 2)]), base, ["Apple", "Banana"]
    )
    first = publish.current(base, "label=Apple").rsplit("/", 1)[0]
    # The dead writer wrote its version and replaced Apple's pointer, then died before marking and cleaning up.
    dead = f"{base}/{publish.VERSIONS}/{_dead_tag()}"
    _rows(spark, [("a2", "Apple", "Training", 3)]).write.partitionBy("label").parquet(dead)
    storage.write_text(f"{base}/{publish.POINTERS}/label=Apple", f"{dead[len(base) + 1 :]}/label=Apple")
    assert _values(read_classes(spark, base, ["Apple", "Banana"])) == {"a2": 3, "b1": 2}
    assert publish.leftovers(base) == [f"{first[len(base) + 1 :]}/label=Apple"]
    write_classes(_rows(spark, [("c1", "Cherry", "Training", 5)]), base, ["Cherry"])
    assert publish.leftovers(base) == [] and not os.path.exists(f"{first}/label=Apple")
    assert _values(read_classes(spark, base, ["Apple", "Banana", "Cherry"])) == {"a2": 3, "b1": 2, "c1": 5}


def test_a_running_writers_version_is_left_alone(spark, tmp_path):
    base = tmp_path / "asset"
    alive = base / publish.VERSIONS / f"0live.{os.getpid()}@{socket.gethostname()}" / "_temporary"
    alive.mkdir(parents=True)
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), str(base), ["Apple"])
    assert alive.is_dir()


def test_a_table_version_never_published_is_ignored_then_deleted(spark, tmp_path):
    base = str(tmp_path / "evaluation")
    write_table(_rows(spark, [("a1", "Apple", "Test", 1)]), base)
    dead = f"{base}/{publish.VERSIONS}/{_dead_tag()}"
    _rows(spark, [("half", "Apple", "Test", 7)]).write.partitionBy("label").parquet(dead)
    assert _values(read_table(spark, base)) == {"a1": 1}
    write_table(_rows(spark, [("a2", "Apple", "Test", 2)]), base)
    assert _values(read_table(spark, base)) == {"a2": 2}
    assert publish.leftovers(base) == [] and len(os.listdir(f"{base}/{publish.VERSIONS}")) == 1


def test_a_model_version_never_published_is_ignored_then_deleted(spark, tmp_path):
    data = spark.createDataFrame([(Vectors.dense([1.0, 2.0]),), (Vectors.dense([3.0, 6.0]),)], ["x"])
    model = StandardScaler(inputCol="x", outputCol="y", withMean=True).fit(data)
    path = str(tmp_path / "model")
    save_model(spark, ModelArtifact(model, {"version": 1}), path)
    model.write().save(f"{path}/{publish.VERSIONS}/{_dead_tag()}")  # killed before its notes and its pointer
    loaded = load_model(spark, path)
    assert loaded.notes == {"version": 1} and loaded.model.mean.toArray().tolist() == [2.0, 4.0]
    save_model(spark, ModelArtifact(model, {"version": 2}), path)
    assert load_model(spark, path).notes == {"version": 2}
    assert publish.leftovers(path) == [] and len(os.listdir(f"{path}/{publish.VERSIONS}")) == 1


def test_owner_of_a_version(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "node-1.example.com")
    alive, dead = os.getpid(), int(_dead_tag().split(".")[1].split("@")[0])
    assert publish.owner_is_dead(f"0abc.{dead}@node-1.example.com")
    assert not publish.owner_is_dead(f"0abc.{alive}@node-1.example.com")
    assert not publish.owner_is_dead(f"0abc.{dead}@other-host")  # another machine's writer may still run
    assert not publish.owner_is_dead("0abc")


# On S3: the same protocol through the S3 API of a loopback server. Spark cannot reach S3 here (no Hadoop S3
# connector offline), so pyarrow writes the Parquet files Spark would write; everything else is the product's code.

S3_WRITER = """
import sys, time
import pyarrow as pa, pyarrow.parquet as pq
from spark_code import publish, storage

base, count = sys.argv[1], int(sys.argv[2])
version = publish.new_version(base)
fs, path = storage.filesystem(version)
for i in range(count):
    table = pa.table({"path": [f"new{i}"], "value": [100 + i]})
    pq.write_table(table, f"{path}/label=Apple/part-{i:05d}.parquet", filesystem=fs)
    print("wrote", i, flush=True)
    time.sleep(0.5)
publish.commit(base, version, ["label=Apple"])
print("published", flush=True)
"""


def _s3_write(base: str, values: dict[str, int]) -> None:
    version = publish.new_version(base)
    fs, path = storage.filesystem(version)
    table = pa.table({"path": list(values), "value": list(values.values())})
    pq.write_table(table, f"{path}/label=Apple/part-00000.parquet", filesystem=fs)
    publish.commit(base, version, ["label=Apple"])


def _s3_values(base: str) -> dict[str, int]:
    table = read_arrow(base)
    assert set(table.column("label").to_pylist()) == {"Apple"}
    return dict(zip(table.column("path").to_pylist(), table.column("value").to_pylist(), strict=True))


def _s3_keys(bucket: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.mark.usefixtures("aws")
def test_on_s3_a_writer_killed_mid_write_changes_nothing_and_the_next_writer_cleans_up(tmp_path):
    bucket = "fruits-publish-test"
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    base = f"s3://{bucket}/outputs/image_embeddings"
    _s3_write(base, {"old0": 1, "old1": 2})
    assert _s3_values(base) == {"old0": 1, "old1": 2}

    with (tmp_path / "writer.log").open("w+") as log:
        writer = subprocess.Popen(
            [sys.executable, "-c", S3_WRITER, base, "20"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while "wrote 2" not in (tmp_path / "writer.log").read_text():
            assert writer.poll() is None and time.monotonic() < deadline, (tmp_path / "writer.log").read_text()
            time.sleep(0.1)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    written = [key for key in _s3_keys(bucket) if "/label=Apple/part-" in key and "/_current/" not in key]
    assert len(written) >= 4, "the killed writer's files are on S3 (3 or more) besides the published one"
    assert _s3_values(base) == {"old0": 1, "old1": 2}, "readers still see the published version, whole"
    assert len(publish.leftovers(base)) == 1

    _s3_write(base, {"new": 3})
    assert _s3_values(base) == {"new": 3}
    assert publish.leftovers(base) == []
    prefix = "outputs/image_embeddings/_versions/"
    versions = {key[len(prefix) :].split("/")[0] for key in _s3_keys(bucket) if key.startswith(prefix)}
    assert len(versions - {""}) == 1, "the killed writer's version and the replaced one are deleted"  # "": a marker
