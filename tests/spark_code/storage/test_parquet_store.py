import time

import pytest

from spark_code.photos.layout import LayoutError
from spark_code.storage.parquet_store import (
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
from spark_code.storage.publish import leftovers, pointers, recover


def _rows(spark, data):
    return spark.createDataFrame(data, "path string, label string, split string, value int")


def test_rewriting_one_class_replaces_only_that_class(spark, tmp_path, monkeypatch):
    monkeypatch.setenv("FRUITS_REPLACED_GRACE_SECONDS", "0")  # replaced classes deleted at once (see test_publish)
    base = str(tmp_path / "asset")
    first = [("a1", "Apple", "Training", 1), ("a2", "Apple", "Test", 2), ("b1", "Banana 'x' é", "Training", 3)]
    assert write_classes(_rows(spark, first), base, ["Apple", "Banana 'x' é"]) == {"Apple": 2, "Banana 'x' é": 1}
    assert write_classes(_rows(spark, [("a3", "Apple", "Training", 9)]), base, ["Apple"]) == {"Apple": 1}
    rows = {r["path"]: r for r in read_classes(spark, base, ["Apple", "Banana 'x' é"]).collect()}
    assert sorted(rows) == ["a3", "b1"]
    assert rows["b1"]["label"] == "Banana 'x' é" and rows["b1"]["value"] == 3
    # The first version keeps only Banana (its Apple was deleted once replaced), the second holds Apple.
    assert leftovers(base) == []
    assert sorted(pointers(base)) == ["label=Apple", "label=Banana %27x%27 é"]  # Spark's escaping
    assert len(list(tmp_path.joinpath("asset", "_versions").iterdir())) == 2


def test_a_class_with_no_rows_is_replaced_by_an_empty_class(spark, tmp_path):
    base = str(tmp_path / "asset")
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple"])
    assert write_classes(_rows(spark, []), base, ["Apple"]) == {"Apple": 0}
    result = read_classes(spark, base, ["Apple"])
    assert result.count() == 0
    assert result.columns == ["path", "label", "split", "value"]


def test_reading_a_class_never_written_is_a_clear_error(spark, tmp_path):
    base = str(tmp_path / "asset")
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple"])
    with pytest.raises(MissingClassError, match="'Cherry'.*materialize them first"):
        read_classes(spark, base, ["Apple", "Cherry"])


def test_rows_of_other_classes_are_refused(spark, tmp_path):
    base = str(tmp_path / "asset")
    with pytest.raises(ValueError, match="do not belong"):
        write_classes(_rows(spark, [("c1", "Cherry", "Training", 1)]), base, ["Apple"])
    assert pointers(base) == {} and leftovers(base) == []


@pytest.mark.parametrize("name", ["..", "../outside", "a/b", ".hidden"])
def test_class_names_that_could_escape_the_folder_are_refused(spark, tmp_path, name):
    rows = _rows(spark, [("x", name, "Training", 1)])
    with pytest.raises(LayoutError, match="invalid class name"):
        write_classes(rows, str(tmp_path / "asset"), [name])
    with pytest.raises(LayoutError, match="invalid class name"):
        read_classes(spark, str(tmp_path / "asset"), [name])
    assert list(tmp_path.iterdir()) == []


def test_each_class_is_published_with_its_stamp_and_row_count(spark, tmp_path):
    base = str(tmp_path / "asset")
    rows = [("a1", "Apple", "Training", 1), ("b1", "Banana 'x' é", "Training", 3), ("b2", "Banana 'x' é", "Test", 4)]
    write_classes(_rows(spark, rows), base, ["Apple", "Banana 'x' é", "Fig"], {"Apple": "v1", "Banana 'x' é": "v2"})
    assert published_stamps(base) == {
        "Apple": {"rows": 1, "stamp": "v1"},
        "Banana 'x' é": {"rows": 2, "stamp": "v2"},
        "Fig": {"rows": 0, "stamp": None},
    }
    write_classes(_rows(spark, [("a3", "Apple", "Training", 9)]), base, ["Apple"], {"Apple": "v3"})
    stamps = published_stamps(base)
    assert stamps["Apple"] == {"rows": 1, "stamp": "v3"} and stamps["Banana 'x' é"]["stamp"] == "v2"
    assert read_classes(spark, base, ["Apple"]).count() == 1  # the stamps file is not read as data
    assert published_stamps(str(tmp_path / "never written")) == {}


def test_each_class_is_written_as_one_file_whatever_the_partitions_upstream(spark, tmp_path):
    base = tmp_path / "asset"
    rows = [(f"p{i}", ["Apple", "Banana", "Cherry"][i % 3], "Training", i) for i in range(300)]
    write_classes(_rows(spark, rows).repartition(50), str(base), ["Apple", "Banana", "Cherry"])
    files = sorted(p.parent.name for p in base.rglob("*.parquet"))
    assert files == ["label=Apple", "label=Banana", "label=Cherry"]


def test_a_withdrawn_class_is_gone_for_readers_and_its_files_after_the_grace_period(spark, tmp_path):
    base = str(tmp_path / "asset")
    rows = [("a1", "Apple", "Training", 1), ("b1", "Banana 'x' é", "Training", 3)]
    write_classes(_rows(spark, rows), base, ["Apple", "Banana 'x' é"])
    assert withdraw_classes_except(base, {"Apple", "Cherry"}) == ["Banana 'x' é"]
    assert withdraw_classes_except(base, {"Apple"}) == []
    assert set(published_stamps(base)) == {"Apple"}
    assert read_arrow(base).column("label").to_pylist() == ["Apple"]
    with pytest.raises(MissingClassError):
        read_classes(spark, base, ["Banana 'x' é"])
    assert leftovers(base) and recover(base, grace=3600) == []  # a reader that followed the pointer keeps it
    recover(base, now=time.time() + 3601, grace=3600)
    assert leftovers(base) == [] and read_arrow(base).column("label").to_pylist() == ["Apple"]


def test_a_read_carries_the_stamps_of_the_versions_it_read(spark, tmp_path):
    base = str(tmp_path / "asset")
    write_classes(_rows(spark, [("a1", "Apple", "Training", 1)]), base, ["Apple"], {"Apple": "first"})
    write_classes(_rows(spark, [("b1", "Banana", "Training", 1)]), base, ["Banana"], {"Banana": "second"})
    read = read_classes(spark, base, ["Apple", "Banana"])
    write_classes(_rows(spark, [("a2", "Apple", "Training", 2)]), base, ["Apple"], {"Apple": "third"})
    assert input_stamps(read) == {"Apple": "first", "Banana": "second"}  # what was read, not what is there now
    assert input_stamps(read_classes(spark, base, ["Apple"])) == {"Apple": "third"}
    write_table(_rows(spark, [("c1", "Cherry", "Test", 1)]), str(tmp_path / "table"), "whole")
    assert input_stamps(read_table(spark, str(tmp_path / "table"))) == {"all": "whole"}


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
