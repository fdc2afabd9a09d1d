import hashlib
import os

import boto3
import pandas as pd
import pytest
from pyspark.sql import functions as F

from spark_code.photos.image_files import (
    CONTENT_KEY,
    INDEX_COLUMNS,
    READ_NOW,
    _contents,
    index_images,
    list_image_files,
    read_image_files,
    reindex,
    with_contents,
)
from spark_code.photos.layout import LayoutError, discover_layout, with_source
from tests.images_factory import BAD_IMAGES, GOOD_IMAGES, HEADER_INTACT, write_files


def test_reads_every_file_with_its_label_and_split(spark, small_root):
    files = read_image_files(spark, discover_layout(str(small_root)), ["Banana", "Kiwi"])
    counts = {(r["label"], r["split"]): r["count"] for r in files.groupBy("label", "split").count().collect()}
    assert counts == {("Banana", "Training"): 10, ("Banana", "Test"): 4, ("Kiwi", "Training"): 10, ("Kiwi", "Test"): 4}
    assert files.where(~F.col("path").startswith("file:")).count() == 0


def test_index_flags_each_file_whose_header_is_no_image_and_skips_hidden_ones(spark, tmp_path):
    folder = tmp_path / "Training" / "Odd 'class' é"
    write_files(folder, {**GOOD_IMAGES, **BAD_IMAGES, ".DS_Store": b"\x00\x01"})
    write_files(folder / "nested", {"deep.jpg": GOOD_IMAGES["rgb.jpg"]})
    layout = discover_layout(str(tmp_path))
    index = index_images(read_image_files(spark, layout, ["Odd 'class' é"]))
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in index.collect()}
    assert set(rows) == set(GOOD_IMAGES) | set(BAD_IMAGES) | {"deep.jpg"}
    assert {name for name, row in rows.items() if row["error"]} == set(BAD_IMAGES) - HEADER_INTACT
    assert {row["label"] for row in rows.values()} == {"Odd 'class' é"}
    assert rows["odd size.png"]["width"] == 37 and rows["odd size.png"]["height"] == 251
    assert rows["bomb.png"]["error"].startswith("decompression bomb")


def test_class_names_with_glob_characters_read_exactly_their_folder(spark, tmp_path):
    names = ["Apple [red]", "Apple?", "Apples", "Fig {1,2}", "Fig 1", "Star*"]
    for i, name in enumerate(names):
        write_files(tmp_path / "Training" / name, {f"{i}.jpg": GOOD_IMAGES["rgb.jpg"]})
    layout = discover_layout(str(tmp_path))
    for i, name in enumerate(names):
        rows = read_image_files(spark, layout, [name]).select("path", "label").collect()
        assert [(r["path"].rsplit("/", 1)[-1], r["label"]) for r in rows] == [(f"{i}.jpg", name)], name


def test_a_class_folder_named_in_either_unicode_form_is_one_class(spark, tmp_path):
    """`Café` as macOS writes it (decomposed, NFD) in Training, as most systems do (composed, NFC) in Test: one class,
    named in NFC, each photo read from its own folder."""
    composed, decomposed = "Caf\u00e9", "Cafe\u0301"
    write_files(tmp_path / "Training" / decomposed, {"1.jpg": GOOD_IMAGES["rgb.jpg"]})
    write_files(tmp_path / "Test" / composed, {"2.jpg": GOOD_IMAGES["rgb.jpg"]})
    write_files(tmp_path / "Test" / "Kiwi", {"3.jpg": GOOD_IMAGES["rgb.jpg"]})
    layout = discover_layout(str(tmp_path))
    assert layout.classes == [composed, "Kiwi"]
    rows = list_image_files(spark, layout, layout.classes).collect()
    assert {r["path"].rsplit("/", 1)[-1]: (r["split"], r["label"]) for r in rows} == {
        "1.jpg": ("Training", composed),
        "2.jpg": ("Test", composed),
        "3.jpg": ("Test", "Kiwi"),
    }
    write_files(tmp_path / "Test" / decomposed, {"4.jpg": GOOD_IMAGES["rgb.jpg"]})
    with pytest.raises(LayoutError, match="two class folders are named"):
        discover_layout(str(tmp_path))


def test_photos_of_nested_class_folders_get_their_class_at_any_depth(spark, tmp_path):
    photo = GOOD_IMAGES["rgb.jpg"]
    write_files(tmp_path / "train" / "Fruit" / "Apple" / "Granny-Smith", {"1.jpg": photo})
    write_files(tmp_path / "train" / "Fruit" / "Banana", {"2.jpg": photo})
    write_files(tmp_path / "train" / "Fruit" / "Banana" / "close-ups", {"3.jpg": photo})
    write_files(tmp_path / "val" / "Fruit" / "Apple" / "Golden", {"4.jpg": photo})
    for depth, expected in (
        (0, {"1.jpg": "Granny-Smith", "2.jpg": "Banana", "3.jpg": "Banana", "4.jpg": "Golden"}),
        (2, {"1.jpg": "Apple", "2.jpg": "Banana", "3.jpg": "Banana", "4.jpg": "Apple"}),
    ):
        layout = discover_layout(str(tmp_path), class_depth=depth)
        rows = list_image_files(spark, layout, layout.classes).collect()
        assert {r["path"].rsplit("/", 1)[-1]: r["label"] for r in rows} == expected, depth
        assert {r["path"].rsplit("/", 1)[-1]: r["split"] for r in rows} == {
            "1.jpg": "train",
            "2.jpg": "train",
            "3.jpg": "train",
            "4.jpg": "val",
        }


def test_photos_of_a_source_of_its_own_get_its_split_and_their_folders_class(spark, tmp_path):
    write_files(tmp_path / "images" / "Training" / "Kiwi", {"1.jpg": GOOD_IMAGES["rgb.jpg"]})
    write_files(tmp_path / "images" / "Training" / "Fig", {"2.jpg": GOOD_IMAGES["rgb.jpg"]})
    write_files(tmp_path / "feedback" / "Kiwi", {"a.jpg": GOOD_IMAGES["rgb.jpg"], "b.png": GOOD_IMAGES["alpha.png"]})
    layout = with_source(discover_layout(str(tmp_path / "images")), "_feedback", str(tmp_path / "feedback"))
    rows = list_image_files(spark, layout, ["Kiwi", "Fig"]).collect()
    assert sorted((r["path"].rsplit("/", 1)[-1], r["label"], r["split"]) for r in rows) == [
        ("1.jpg", "Kiwi", "Training"),
        ("2.jpg", "Fig", "Training"),
        ("a.jpg", "Kiwi", "_feedback"),
        ("b.png", "Kiwi", "_feedback"),
    ]
    assert [r["split"] for r in list_image_files(spark, layout, ["Fig"]).collect()] == ["Training"]


def _by_name(index) -> dict:
    return {r["path"].rsplit("/", 1)[-1]: r for r in index.collect()}


def test_reindex_reads_only_files_whose_listing_entry_changed(spark, tmp_path):
    folder = tmp_path / "Training" / "Apple? [red] #1"
    write_files(folder, {"a.jpg": GOOD_IMAGES["rgb.jpg"], "b.png": GOOD_IMAGES["odd size.png"], "gone.jpg": b"x"})
    layout = discover_layout(str(tmp_path))
    first = reindex(list_image_files(spark, layout, ["Apple? [red] #1"]), None).cache()
    assert {name: row[READ_NOW] for name, row in _by_name(first).items()} == {"a.jpg": 1, "b.png": 1, "gone.jpg": 1}
    previous = first.drop(READ_NOW)
    assert set(previous.columns) == set(INDEX_COLUMNS)
    before = _by_name(previous)
    assert before["a.jpg"][CONTENT_KEY] == hashlib.sha256(GOOD_IMAGES["rgb.jpg"]).hexdigest()

    (folder / "gone.jpg").unlink()
    write_files(folder, {"new.jpg": GOOD_IMAGES["rgb.jpg"]})
    changed = folder / "b.png"
    stat = changed.stat()
    changed.write_bytes(GOOD_IMAGES["rgb.jpg"])  # other bytes under the same name
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000))
    second = _by_name(reindex(list_image_files(spark, layout, ["Apple? [red] #1"]), previous))
    assert {name: row[READ_NOW] for name, row in second.items()} == {"a.jpg": 0, "b.png": 1, "new.jpg": 1}
    assert second["a.jpg"].asDict() == {**before["a.jpg"].asDict(), READ_NOW: 0}
    assert second["b.png"][CONTENT_KEY] == second["new.jpg"][CONTENT_KEY] == before["a.jpg"][CONTENT_KEY]
    assert second["b.png"]["format"] == "JPEG"


def test_contents_are_read_by_path_whatever_the_characters_of_the_name(spark, tmp_path):
    names = {"Apple?": "q.jpg", "Fig #2": "h%20.jpg", "Odd 'class' é": "é.jpg"}
    for name, file in names.items():
        write_files(tmp_path / name, {file: name.encode()})
    layout = discover_layout(str(tmp_path))
    rows = with_contents(list_image_files(spark, layout, list(names))).collect()
    assert {r["label"]: bytes(r["content"]) for r in rows} == {name: name.encode() for name in names}


def test_executors_read_s3_objects_by_path(aws):
    """What a task does with a batch of s3:// paths (the function Spark runs, called here: the local session's Python
    workers were started before this test pointed AWS at the loopback server)."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="fruits-images", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    objects = {f"images/Training/Apple? #{i}/{i}.jpg": bytes([i]) * (i + 1) for i in range(40)}
    for key, body in objects.items():
        s3.put_object(Bucket="fruits-images", Key=key, Body=body)
    paths = pd.Series([f"s3://fruits-images/{key}" for key in objects])
    assert _contents.func(paths).tolist() == list(objects.values())


def test_reindex_reads_again_what_an_older_index_lacks(spark, tmp_path):
    folder = tmp_path / "Training" / "Kiwi"
    write_files(folder, {"a.jpg": GOOD_IMAGES["rgb.jpg"], "b.png": GOOD_IMAGES["odd size.png"]})
    listed = list_image_files(spark, discover_layout(str(tmp_path)), ["Kiwi"])
    current = reindex(listed, None).drop(READ_NOW).cache()
    expected = {name: {**row.asDict(), READ_NOW: 1} for name, row in _by_name(current).items()}
    # An index written before the `format` column: every file is read again, with every column.
    older = reindex(listed, current.drop("format"))
    assert older.columns == [*INDEX_COLUMNS, READ_NOW]
    assert {name: row.asDict() for name, row in _by_name(older).items()} == expected
    # One row without a content hash (an older class's rows unioned with newer ones): that file alone is read again.
    mixed = current.withColumn(CONTENT_KEY, F.when(F.col("path").endswith("b.png"), None).otherwise(F.col(CONTENT_KEY)))
    again = _by_name(reindex(listed, mixed))
    assert {name: row[READ_NOW] for name, row in again.items()} == {"a.jpg": 0, "b.png": 1}
    assert again["b.png"].asDict() == expected["b.png"]
