"""Class outputs as Delta tables: a class replaced in one commit, its stamp and row count in the table's log, read
by Spark and by `deltalake`; an interrupted writer leaves nothing visible, and VACUUM removes what it left."""

import json
import os
import threading

import boto3
import pytest
from deltalake import DeltaTable

from spark_code.photos.layout import LayoutError
from spark_code.storage import class_tables
from spark_code.storage.class_tables import (
    MissingClassError,
    input_stamps,
    published_stamps,
    read_arrow,
    read_classes,
    read_table,
    withdraw_classes_except,
    write_classes,
    write_table,
)


def _rows(spark, data):
    return spark.createDataFrame(data, "path string, label string, split string, value int")


def _values(df) -> dict[str, int]:
    return {r["path"]: r["value"] for r in df.collect()}


def test_rewriting_one_class_replaces_only_that_class_in_one_commit(spark, tmp_path):
    base = str(tmp_path / "asset")
    first = [("a1", "Apple", "Training", 1), ("a2", "Apple", "Test", 2), ("b1", "Banana 'x' é", "Training", 3)]
    assert write_classes(_rows(spark, first), base, ["Apple", "Banana 'x' é"]) == {"Apple": 2, "Banana 'x' é": 1}
    assert write_classes(_rows(spark, [("a3", "Apple", "Training", 9)]), base, ["Apple"]) == {"Apple": 1}
    rows = {r["path"]: r for r in read_classes(spark, base, ["Apple", "Banana 'x' é"]).collect()}
    assert sorted(rows) == ["a3", "b1"]
    assert rows["b1"]["label"] == "Banana 'x' é" and rows["b1"]["value"] == 3
    table = DeltaTable(base)
    assert table.version() == 1 and [c["operation"] for c in table.history()] == ["WRITE", "WRITE"]
    # Any Delta reader sees the published rows, and only them (the first Apple is still on disk until VACUUM).
    assert sorted(table.to_pyarrow_table().column("path").to_pylist()) == ["a3", "b1"]
    assert sorted(read_arrow(base).column("path").to_pylist()) == ["a3", "b1"]
    sql = spark.sql(f"SELECT path FROM delta.`{base}` WHERE label = 'Apple'").collect()
    assert [row["path"] for row in sql] == ["a3"]


def test_a_class_with_no_rows_is_replaced_by_an_empty_class(spark, tmp_path):
    base = str(tmp_path / "asset")
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple"], {"Apple": "v1"})
    assert write_classes(_rows(spark, []), base, ["Apple"], {"Apple": "v2"}) == {"Apple": 0}
    result = read_classes(spark, base, ["Apple"])
    assert result.count() == 0
    assert result.columns == ["path", "label", "split", "value"]
    assert published_stamps(base) == {"Apple": {"rows": 0, "stamp": "v2"}}
    write_classes(_rows(spark, [("a2", "Apple", "Training", 2)]), base, ["Apple"], {"Apple": "v3"})
    assert published_stamps(base) == {"Apple": {"rows": 1, "stamp": "v3"}}


def test_reading_a_class_never_written_is_a_clear_error(spark, tmp_path):
    base = str(tmp_path / "asset")
    with pytest.raises(MissingClassError, match="'Apple'.*materialize them first"):
        read_classes(spark, base, ["Apple"])
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple"])
    with pytest.raises(MissingClassError, match="'Cherry'.*materialize them first"):
        read_classes(spark, base, ["Apple", "Cherry"])


def test_no_class_reads_no_row_and_a_table_never_written_is_a_clear_error(spark, tmp_path):
    base = str(tmp_path / "asset")
    with pytest.raises(MissingClassError, match="no data under .*materialize it first"):
        read_classes(spark, base, [])
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple"])
    nothing = read_classes(spark, base, [])
    assert nothing.count() == 0 and nothing.columns[:2] == ["path", "label"]


def test_rows_of_other_classes_are_refused_and_nothing_is_committed(spark, tmp_path):
    base = str(tmp_path / "asset")
    with pytest.raises(ValueError, match="do not belong"):
        write_classes(_rows(spark, [("c1", "Cherry", "Training", 1)]), base, ["Apple"])
    assert published_stamps(base) == {} and not (tmp_path / "asset").exists()


@pytest.mark.parametrize("name", ["..", "../outside", "a/b", ".hidden"])
def test_class_names_that_could_escape_the_folder_are_refused(spark, tmp_path, name):
    rows = _rows(spark, [("x", name, "Training", 1)])
    with pytest.raises(LayoutError, match="invalid class name"):
        write_classes(rows, str(tmp_path / "asset"), [name])
    assert list(tmp_path.iterdir()) == []


def test_each_class_is_published_with_its_stamp_and_row_count(spark, tmp_path):
    base = str(tmp_path / "asset")
    rows = [("a1", "Apple", "Training", 1), ("b1", "Banana 'x' é", "Training", 3), ("b2", "Banana 'x' é", "Test", 4)]
    stamps = {"Apple": "v1:x=y/%", "Banana 'x' é": "v2"}
    write_classes(_rows(spark, rows), base, ["Apple", "Banana 'x' é", "Fig"], stamps)
    assert published_stamps(base) == {
        "Apple": {"rows": 1, "stamp": "v1:x=y/%"},
        "Banana 'x' é": {"rows": 2, "stamp": "v2"},
        "Fig": {"rows": 0, "stamp": None},
    }
    write_classes(_rows(spark, [("a3", "Apple", "Training", 9)]), base, ["Apple"], {"Apple": "v3"})
    stamps = published_stamps(base)
    assert stamps["Apple"] == {"rows": 1, "stamp": "v3"} and stamps["Banana 'x' é"]["stamp"] == "v2"
    assert "Fig" in stamps, "an empty class stays published through later commits of other classes"
    assert published_stamps(str(tmp_path / "never written")) == {}


def test_each_class_is_written_as_one_file_whatever_the_partitions_upstream(spark, tmp_path):
    base = tmp_path / "asset"
    rows = [(f"p{i}", ["Apple", "Banana", "Cherry"][i % 3], "Training", i) for i in range(300)]
    write_classes(_rows(spark, rows).repartition(50), str(base), ["Apple", "Banana", "Cherry"])
    files = sorted(p.parent.parent.name for p in base.rglob("*.parquet"))
    assert files == ["label=Apple", "label=Banana", "label=Cherry"]


def test_a_withdrawn_class_is_gone_for_readers(spark, tmp_path):
    base = str(tmp_path / "asset")
    rows = [("a1", "Apple", "Training", 1), ("b1", "Banana 'x' é", "Training", 3)]
    write_classes(_rows(spark, rows), base, ["Apple", "Banana 'x' é", "Fig"])
    assert withdraw_classes_except(spark, base, {"Apple", "Cherry"}) == ["Banana 'x' é", "Fig"]
    assert withdraw_classes_except(spark, base, {"Apple"}) == []
    assert set(published_stamps(base)) == {"Apple"}
    assert read_arrow(base).column("label").to_pylist() == ["Apple"]
    with pytest.raises(MissingClassError):
        read_classes(spark, base, ["Banana 'x' é"])


def test_a_read_carries_the_stamps_of_the_version_it_read(spark, tmp_path):
    base = str(tmp_path / "asset")
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple"], {"Apple": "first"})
    write_classes(_rows(spark, [("b1", "Banana", "Training", 1)]), base, ["Banana"], {"Banana": "second"})
    read = read_classes(spark, base, ["Apple", "Banana"])  # Spark reads the files when an action runs
    write_classes(_rows(spark, [("a2", "Apple", "Training", 2)]), base, ["Apple"], {"Apple": "third"})
    assert input_stamps(read) == {"Apple": "first", "Banana": "second"}  # what was read, not what is there now
    assert _values(read) == {"a1": 1, "b1": 1}, "the version read, whole, after a later commit"
    assert input_stamps(read_classes(spark, base, ["Apple"])) == {"Apple": "third"}
    table = str(tmp_path / "table")
    write_table(_rows(spark, [("c1", "Cherry", "Test", 1)]), table, "whole", {"threshold": 0.5})
    assert input_stamps(read_table(spark, table)) == {"all": "whole"}
    assert published_stamps(table) == {"all": {"rows": 1, "stamp": "whole", "notes": {"threshold": 0.5}}}
    assert write_table(_rows(spark, []), table, "empty") == 0 and read_table(spark, table).count() == 0


def test_classes_written_with_fewer_columns_are_read_beside_newer_ones(spark, tmp_path):
    """An index class written by older code (no content hash) and one written since: one read, nulls for the old."""
    base = str(tmp_path / "asset")
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple"])
    newer = spark.createDataFrame(
        [("b1", "Banana", "Training", 2, "h")],
        "path string, label string, split string, value int, content_hash string",
    )
    write_classes(newer, base, ["Banana"])
    rows = {row["path"]: row["content_hash"] for row in read_classes(spark, base, ["Apple", "Banana"]).collect()}
    assert rows == {"a1": None, "b1": "h"}


def test_files_no_commit_names_are_invisible_and_vacuum_removes_them(spark, tmp_path, monkeypatch):
    """A writer killed before its commit leaves Parquet files in the table's folders: no reader sees them, and the
    VACUUM that every VACUUM_EVERY-th commit runs deletes them once older than the table's retention."""
    base = str(tmp_path / "asset")
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple"], {"Apple": "v1"})
    stray = next((tmp_path / "asset").rglob("*.parquet"))
    orphan = stray.with_name("part-99999-killed-writer.snappy.parquet")
    orphan.write_bytes(stray.read_bytes())
    assert _values(read_classes(spark, base, ["Apple"])) == {"a1": 1}
    assert read_arrow(base).num_rows == 1 and published_stamps(base)["Apple"]["rows"] == 1
    spark.sql(
        f"ALTER TABLE delta.`{base}` SET TBLPROPERTIES ('delta.deletedFileRetentionDuration' = 'interval 0 hours')"
    )
    old = os.path.getmtime(orphan) - 3600
    os.utime(orphan, (old, old))
    monkeypatch.setattr(class_tables, "VACUUM_EVERY", 3)
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        write_classes(_rows(spark, [("b1", "Banana", "Training", 2)]), base, ["Banana"])  # version 2: no VACUUM
        assert orphan.exists()
        write_classes(_rows(spark, [("a2", "Apple", "Training", 3)]), base, ["Apple"])  # version 3: VACUUM
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    assert not orphan.exists() and not stray.exists(), "the killed writer's file and the replaced one are gone"
    assert _values(read_classes(spark, base, ["Apple", "Banana"])) == {"a2": 3, "b1": 2}


def test_writers_of_different_classes_racing_on_one_table_both_commit(spark, tmp_path):
    base = str(tmp_path / "asset")
    write_classes(_rows(spark, [("a0", "Apple", "Training", 0)]), base, ["Apple"], {"Apple": "v0"})
    errors = []

    def write(name: str, rows: int) -> None:
        try:
            data = [(f"{name}{i}", name, "Training", i) for i in range(rows)]
            write_classes(_rows(spark, data), base, [name], {name: f"{name}-stamp"})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(name, 3)) for name in ("Banana", "Cherry", "Apple")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stamps = published_stamps(base)
    assert {name: entry["stamp"] for name, entry in stamps.items()} == {
        "Apple": "Apple-stamp",
        "Banana": "Banana-stamp",
        "Cherry": "Cherry-stamp",
    }
    assert {name: entry["rows"] for name, entry in stamps.items()} == {"Apple": 3, "Banana": 3, "Cherry": 3}


@pytest.mark.usefixtures("aws")
def test_on_s3_spark_writes_through_s3a_and_deltalake_reads_without_spark(spark):
    bucket = "fruits-class-tables"
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    base = f"s3://{bucket}/outputs/image_embeddings"
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple", "Fig"], {"Apple": "v1", "Fig": "e"})
    write_classes(_rows(spark, [("a2", "Apple", "Training", 2)]), base, ["Apple"], {"Apple": "v2"})
    assert published_stamps(base) == {"Apple": {"rows": 1, "stamp": "v2"}, "Fig": {"rows": 0, "stamp": "e"}}
    assert read_arrow(base).column("path").to_pylist() == ["a2"]
    assert _values(read_classes(spark, base, ["Apple", "Fig"])) == {"a2": 2}
    log = boto3.client("s3").get_object(
        Bucket=bucket, Key="outputs/image_embeddings/_delta_log/00000000000000000001.json"
    )
    commit = [json.loads(line) for line in log["Body"].read().decode().splitlines()]
    assert any("commitInfo" in action and "userMetadata" in action["commitInfo"] for action in commit)


def test_an_empty_class_written_again_commits_its_new_stamp(spark, tmp_path):
    """Delta makes no commit of a write that adds and removes no file: the stamp of a class empty before and after
    must still change, and a withdrawn empty class must go."""
    base = str(tmp_path / "asset")
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple", "Fig"], {"Apple": "a", "Fig": "f1"})
    write_classes(_rows(spark, []), base, ["Fig"], {"Fig": "f2"})
    assert published_stamps(base)["Fig"] == {"rows": 0, "stamp": "f2"}
    table = str(tmp_path / "table")
    write_table(_rows(spark, []), table, "t1")
    write_table(_rows(spark, []), table, "t2")
    assert published_stamps(table)["all"]["stamp"] == "t2"
    assert withdraw_classes_except(spark, base, {"Apple"}) == ["Fig"]
    assert published_stamps(base) == {"Apple": {"rows": 1, "stamp": "a"}}
