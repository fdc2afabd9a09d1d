"""The embedding store: keys by content and settings, reuse, changed/renamed/deleted files, duplicate appends, two
settings side by side (synthetic features: the model's own reuse is tested through the asset)."""

import dataclasses
import shutil

import pytest
from pyspark.sql import functions as F

from spark_code.features.embedding_store import (
    KEY,
    STORE_SCHEMA,
    append_to_store,
    not_stored,
    read_store,
    segments,
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
    append_to_store(_fake_embeddings(missing, first), base, fingerprint)

    # renamed, copied to another class, changed under the same name, new, deleted (c.jpg was never there)
    second = _files(
        spark,
        {"Kiwi/renamed.jpg": b"aa", "Banana/b.jpg": b"bbb", "Kiwi/b.jpg": b"bbbb", "Kiwi/new.jpg": b"c"},
    )
    stored = read_store(spark, base, fingerprint)
    missing = not_stored(second, stored)
    assert sorted(row["path"].rsplit("Training/", 1)[1] for row in missing.collect()) == ["Kiwi/b.jpg", "Kiwi/new.jpg"]
    new = _fake_embeddings(missing, second)
    append_to_store(new, base, fingerprint)
    rows = with_stored_embeddings(second, stored.unionByName(new)).collect()
    assert {row["path"].rsplit("Training/", 1)[1]: row["features"] for row in rows} == {
        "Kiwi/renamed.jpg": [2.0],
        "Banana/b.jpg": [3.0],
        "Kiwi/b.jpg": [4.0],
        "Kiwi/new.jpg": [1.0],
    }
    assert not_stored(second, read_store(spark, base, fingerprint)).count() == 0
    assert len(segments(base, fingerprint)) == 2


def test_a_key_appended_twice_is_read_once_and_other_settings_have_their_own_keys(spark, tmp_path):
    base = str(tmp_path / "store")
    files = _files(spark, {"Kiwi/a.jpg": b"aa", "Kiwi/b.jpg": b"bbb"})
    rows = _fake_embeddings(not_stored(files, spark.createDataFrame([], STORE_SCHEMA)), files)
    append_to_store(rows, base, "1" * 16)
    append_to_store(rows, base, "1" * 16)  # two runs racing, or a retried task
    assert read_store(spark, base, "1" * 16).count() == 2
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
        append_to_store(failing, base, "f" * 16)
    assert segments(base, "f" * 16) == []
    assert read_store(spark, base, "f" * 16).count() == 0
