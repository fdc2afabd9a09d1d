from pyspark.sql import functions as F

from spark_code.image_files import index_images, read_image_files
from spark_code.layout import discover_layout
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
