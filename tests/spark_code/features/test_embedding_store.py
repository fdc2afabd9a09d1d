"""The embedding store: keys by content and settings, reuse, changed/renamed/deleted files, duplicate appends, two
settings side by side (synthetic features: the model's own reuse is tested through the asset)."""

import dataclasses
import shutil
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from spark_code.features.embedding_store import (
    KEY,
    STORE_SCHEMA,
    add_to_store,
    not_stored,
    read_store,
    settings_fingerprint,
    with_content_keys,
    with_stored_embeddings,
)
from spark_code.settings import RANDOM_WEIGHTS, ModelSettings
from tests.conftest import WEIGHTS


def _files(spark, contents: dict[str, bytes]):
    rows = [(f"file:/images/Training/{path}", path.split("/")[0], "Training", data) for path, data in contents.items()]
    return with_content_keys(spark.createDataFrame(rows, "path string, label string, split string, content binary"))


def _fake_embeddings(missing, files):
    """Stand-in features of the files `missing` names, a function of the content only (its length), so reuse is
    visible."""
    read = missing.join(files.select("path", "content"), "path")
    return read.select(
        KEY, F.array(F.length("content").cast("float")).alias("features"), F.lit(None).cast("string").alias("error")
    )


def test_fingerprint_follows_what_makes_an_embedding_and_nothing_else(tmp_path):
    base = ModelSettings(weights=str(WEIGHTS), alpha=0.35)
    copy = tmp_path / "copy of the weights.h5"
    shutil.copy(WEIGHTS, copy)
    other = tmp_path / WEIGHTS.name
    data = WEIGHTS.read_bytes()
    other.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same file name, other content
    fingerprint = settings_fingerprint(base)
    assert settings_fingerprint(dataclasses.replace(base, weights=str(copy))) == fingerprint
    assert settings_fingerprint(dataclasses.replace(base, batch_size=7)) == fingerprint
    changed = [
        dataclasses.replace(base, weights=str(other)),
        dataclasses.replace(base, alpha=0.5),
        dataclasses.replace(base, image_size=base.image_size + 32),
        dataclasses.replace(base, flip_average=False),
        dataclasses.replace(base, weights="imagenet"),
    ]
    assert len({fingerprint, *map(settings_fingerprint, changed)}) == len(changed) + 1
    assert settings_fingerprint(dataclasses.replace(base, weights=RANDOM_WEIGHTS)) is None


def test_only_contents_the_store_lacks_are_embedded_and_each_file_gets_its_contents_row(spark, tmp_path):
    base, fingerprint = str(tmp_path / "store"), "f" * 16
    first = _files(spark, {"Kiwi/a.jpg": b"aa", "Kiwi/b.jpg": b"bbb", "Kiwi/b copy.jpg": b"bbb"})
    missing = not_stored(first, read_store(spark, base, fingerprint))
    assert missing.count() == 2  # the copy's content once
    add_to_store(_fake_embeddings(missing, first), base, fingerprint)

    # renamed, copied to another class, changed under the same name, new, deleted (c.jpg was never there)
    second = _files(
        spark,
        {"Kiwi/renamed.jpg": b"aa", "Banana/b.jpg": b"bbb", "Kiwi/b.jpg": b"bbbb", "Kiwi/new.jpg": b"c"},
    )
    stored = read_store(spark, base, fingerprint)
    missing = not_stored(second, stored)
    assert sorted(row["path"].rsplit("Training/", 1)[1] for row in missing.collect()) == ["Kiwi/b.jpg", "Kiwi/new.jpg"]
    new = _fake_embeddings(missing, second)
    add_to_store(new, base, fingerprint)
    rows = with_stored_embeddings(second, stored.unionByName(new)).collect()
    assert {row["path"].rsplit("Training/", 1)[1]: row["features"] for row in rows} == {
        "Kiwi/renamed.jpg": [2.0],
        "Banana/b.jpg": [3.0],
        "Kiwi/b.jpg": [4.0],
        "Kiwi/new.jpg": [1.0],
    }
    assert not_stored(second, read_store(spark, base, fingerprint)).count() == 0
    assert read_store(spark, base, fingerprint).count() == 4
    assert [row["operation"] for row in DeltaTable.forPath(spark, base).history().collect()] == ["MERGE", "WRITE"]


def test_a_key_added_twice_is_stored_once_and_other_settings_have_their_own_keys(spark, tmp_path):
    base = str(tmp_path / "store")
    files = _files(spark, {"Kiwi/a.jpg": b"aa", "Kiwi/b.jpg": b"bbb"})
    rows = _fake_embeddings(not_stored(files, spark.createDataFrame([], STORE_SCHEMA)), files)
    add_to_store(rows, base, "1" * 16)
    add_to_store(rows, base, "1" * 16)  # a retried run
    assert spark.read.format("delta").load(base).count() == 2
    assert read_store(spark, base, "2" * 16).count() == 0
    assert not_stored(files, read_store(spark, base, "2" * 16)).count() == 2
    assert read_store(spark, base, None).count() == 0


def test_a_failed_write_publishes_nothing(spark, tmp_path):
    base = str(tmp_path / "store")
    files = _files(spark, {"Kiwi/a.jpg": b"aa"})
    failing = files.select(
        KEY,
        F.raise_error("disk full").cast("array<float>").alias("features"),
        F.lit(None).cast("string").alias("error"),
    )
    with pytest.raises(Exception, match="disk full"):
        add_to_store(failing, base, "f" * 16)
    assert read_store(spark, base, "f" * 16).count() == 0


def test_writers_racing_on_the_same_photos_store_each_key_once(spark, tmp_path):
    """Three merges of the same new keys at once (three runs embedding the same new photos): Delta lets one commit
    first, the others' commits conflict and are retried, and find the keys there."""
    base = str(tmp_path / "store")
    files = _files(spark, {f"Kiwi/{n}.jpg": b"x" * n for n in range(1, 40)})
    rows = _fake_embeddings(not_stored(files, read_store(spark, base, "f" * 16)), files).persist()
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: add_to_store(rows, base, "f" * 16), range(3)))
    stored = spark.read.format("delta").load(base)
    assert stored.count() == stored.select(KEY).distinct().count() == 39


def test_each_run_adds_files_that_delta_compacts(spark, tmp_path):
    """Each merge adds a file or two; Delta's auto compaction (here after 3 small files, 50 by default) rewrites them
    into one, and the compacting run vacuums what is past the table's retention."""
    base = str(tmp_path / "store")
    spark.conf.set("spark.databricks.delta.autoCompact.minNumFiles", "3")
    try:
        for n in range(1, 5):
            files = _files(spark, {f"Kiwi/{n}.jpg": b"x" * n})
            add_to_store(_fake_embeddings(not_stored(files, read_store(spark, base, "f" * 16)), files), base, "f" * 16)
    finally:
        spark.conf.unset("spark.databricks.delta.autoCompact.minNumFiles")
    operations = [row["operation"] for row in DeltaTable.forPath(spark, base).history().collect()]
    assert "OPTIMIZE" in operations and "VACUUM END" in operations
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{base}`").first()
    assert detail["numFiles"] < 4 and read_store(spark, base, "f" * 16).count() == 4


def test_the_store_on_s3_is_merged_and_read_by_spark_through_s3a(spark, aws, tmp_path):
    """Spark itself writes the table to S3 (moto's server) and reads it back: two runs, the second adding one key."""
    boto3.client("s3").create_bucket(Bucket="fruits", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    base = "s3://fruits/outputs/embedding_store"
    for contents in ({"Kiwi/a.jpg": b"aa", "Kiwi/b.jpg": b"bbb"}, {"Kiwi/a.jpg": b"aa", "Kiwi/c.jpg": b"c"}):
        files = _files(spark, contents)
        missing = not_stored(files, read_store(spark, base, "f" * 16))
        add_to_store(_fake_embeddings(missing, files).persist(), base, "f" * 16)
    rows = read_store(spark, base, "f" * 16).collect()
    assert sorted(row["features"][0] for row in rows) == [1.0, 2.0, 3.0]
    logs = boto3.client("s3").list_objects_v2(Bucket="fruits", Prefix="outputs/embedding_store/_delta_log/")
    commits = [item["Key"].rsplit("/", 1)[1] for item in logs["Contents"] if item["Key"].endswith(".json")]
    assert commits == [f"{n:020}.json" for n in range(3)]  # the table's creation and two merges
