import dataclasses
import math

import numpy as np
import pandas as pd
import PIL.Image
import pytest
from pyspark.sql import functions as F

from spark_code.features import embeddings
from spark_code.features.embedding_store import embedded_with_store, with_content_keys
from spark_code.features.embeddings import (
    PHOTOS_PER_TASK,
    PHOTOS_PER_TASK_CONF,
    accepted,
    build_embedder,
    embed_images,
    rejected,
    ship_weights,
    spread,
)
from spark_code.photos.augment import augmented
from spark_code.photos.image_files import CONTENT_KEY, _check_images, read_image_files
from spark_code.photos.images import MissingCodecError, preprocess
from spark_code.photos.layout import discover_layout
from spark_code.photos.views import VIEW, with_views
from spark_code.settings import EMBEDDING_WIDTH, ModelSettings
from tests.images_factory import BAD_IMAGES, GOOD_IMAGES, write_files


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory, small_root):
    root = tmp_path_factory.mktemp("mixed")
    write_files(root / "Training" / "Mixed", {**GOOD_IMAGES, **BAD_IMAGES})
    kiwi = sorted((small_root / "Training" / "Kiwi").iterdir())[:3]
    write_files(root / "Training" / "Mixed", {p.name: p.read_bytes() for p in kiwi})
    return root


@pytest.fixture(scope="module")
def embedded(spark, mixed_root, model_settings):
    ship_weights(spark, model_settings)
    files = read_image_files(spark, discover_layout(str(mixed_root)), ["Mixed"])
    return embed_images(files, model_settings).persist()


def test_good_images_get_1280_floats_and_bad_ones_a_reason(embedded):
    good = accepted(embedded).collect()
    bad = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in rejected(embedded).collect()}
    assert len(good) == len(GOOD_IMAGES) + 3
    assert all(len(r["features"]) == EMBEDDING_WIDTH for r in good)
    assert all(np.isfinite(r["features"]).all() and np.abs(r["features"]).sum() > 0 for r in good)
    assert set(bad) == set(BAD_IMAGES)
    assert bad["empty.jpg"] == "empty file"
    assert accepted(embedded).columns == ["path", "label", "split", "features"]
    assert rejected(embedded).columns == ["path", "label", "split", "reason"]


def test_embeddings_of_the_same_images_are_identical_across_runs(spark, mixed_root, model_settings):
    """Two independent computations (nothing cached between them) give bit-identical features."""
    runs = []
    for _ in range(2):
        files = read_image_files(spark, discover_layout(str(mixed_root)), ["Mixed"])
        runs.append({r["path"]: r["features"] for r in accepted(embed_images(files, model_settings)).collect()})
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) == len(GOOD_IMAGES) + 3
    assert all(runs[0][path] == runs[1][path] for path in runs[0])


def test_spark_features_equal_the_model_run_directly(embedded, mixed_root, model_settings):
    """One image embedded alone (as at predict time) gets exactly the features it got in a Spark batch."""
    path = sorted((mixed_root / "Training" / "Mixed").glob("*_100.jpg"))[0]
    direct = build_embedder(model_settings)(preprocess(path.read_bytes(), model_settings.image_size)[None])[0]
    row = accepted(embedded).where(F.col("path").endswith(path.name)).first()
    assert np.array_equal(np.asarray(row["features"], dtype=np.float32), direct)


def test_a_row_with_a_view_number_gets_that_augmented_views_features(spark, mixed_root, model_settings, tmp_path):
    """In a Spark batch, a view's features are the model's on `augmented` of the photo's bytes; through the embedding
    store, a second pass over the same photo and views embeds nothing (the views are keyed by content and number)."""
    path = sorted((mixed_root / "Training" / "Mixed").glob("*_100.jpg"))[0]
    files = read_image_files(spark, discover_layout(str(mixed_root)), ["Mixed"]).where(
        F.col("path").endswith(path.name)
    )
    viewed = files.select("*", F.explode(F.array(F.lit(0), F.lit(2))).alias(VIEW))
    rows = {r[VIEW]: r["features"] for r in embed_images(viewed, model_settings, keep=(VIEW,)).collect()}
    embedder = build_embedder(model_settings)
    data, size = path.read_bytes(), model_settings.image_size
    assert np.array_equal(np.asarray(rows[0], dtype=np.float32), embedder(preprocess(data, size)[None])[0])
    assert np.array_equal(np.asarray(rows[2], dtype=np.float32), embedder(augmented(data, 2, size)[None])[0])

    keyed = with_views(with_content_keys(files).select("path", "label", "split", CONTENT_KEY), "Training", 2)
    store, log = str(tmp_path / "store"), lambda _: None
    first, ran = embedded_with_store(keyed, model_settings, store, "test", log)
    assert ran == 3 and first.where(F.col("features").isNull()).count() == 0
    again, ran_again = embedded_with_store(keyed, model_settings, store, "test", log)
    assert ran_again == 0
    by_path = {r["path"]: r["features"] for r in again.collect()}
    assert by_path == {r["path"]: r["features"] for r in first.collect()}
    view = next(p for p in by_path if p.endswith("#view=2"))
    assert np.array_equal(np.asarray(by_path[view], dtype=np.float32), np.asarray(rows[2], dtype=np.float32))


def test_the_model_runs_once_even_when_only_accepted_rows_are_kept(spark, mixed_root, model_settings):
    """Filtering on `error` must not be pushed below the UDF, which would run the model a second time for it."""
    files = read_image_files(spark, discover_layout(str(mixed_root)), ["Mixed"])
    plan = accepted(embed_images(files, model_settings))._jdf.queryExecution().executedPlan().toString()
    assert plan.count("ArrowEvalPython") == 1


def test_real_weights_separate_two_fruits(spark, small_root, model_settings):
    """ImageNet features must tell a banana from a kiwi: nearest class mean is right for every test image."""
    files = read_image_files(spark, discover_layout(str(small_root)), ["Banana", "Kiwi"])
    rows = accepted(embed_images(files, model_settings)).collect()
    train = {
        label: np.mean([r["features"] for r in rows if r["label"] == label and r["split"] == "Training"], 0)
        for label in ("Banana", "Kiwi")
    }
    for r in (r for r in rows if r["split"] == "Test"):
        nearest = min(train, key=lambda label: np.linalg.norm(np.asarray(r["features"]) - train[label]))
        assert nearest == r["label"]


def test_missing_weights_file_fails_fast(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        ship_weights(spark, ModelSettings(weights=str(tmp_path / "absent.h5"), alpha=0.35))


@pytest.mark.slow
def test_a_photo_and_its_mirror_image_get_the_same_features(small_root, model_settings):
    """Mirror averaging: the features of a photo are those of its left-right mirror image, exactly; the plain model's
    features of the two differ."""
    kiwi = preprocess(sorted((small_root / "Test" / "Kiwi").iterdir())[0].read_bytes(), model_settings.image_size)
    mirror = kiwi[:, ::-1, :]
    averaged = build_embedder(model_settings)(np.stack([kiwi, mirror]))
    assert np.array_equal(averaged[0], averaged[1])
    plain = build_embedder(dataclasses.replace(model_settings, flip_average=False))(np.stack([kiwi, mirror]))
    assert not np.allclose(plain[0], plain[1], atol=1e-3)
    np.testing.assert_allclose(averaged[0], (plain[0] + plain[1]) / 2, atol=1e-5)


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("a bug in preprocessing")])
def test_only_a_photos_own_decoding_error_rejects_it(monkeypatch, model_settings, error):
    """Memory, a bug or anything but the photo's own bytes fails the batch (hence the task) instead of silently
    recording a good photo as rejected (before: every exception became a rejection)."""

    def failing(data: bytes, size: int) -> np.ndarray:
        raise error

    monkeypatch.setattr(embeddings, "preprocess", failing)
    with pytest.raises(type(error)):
        embeddings.embed_contents([GOOD_IMAGES["rgb.jpg"]], model_settings)


def test_a_missing_codec_fails_instead_of_rejecting_every_photo(monkeypatch, model_settings):
    """A Pillow built without its JPEG decoder would have rejected every JPEG as 'cannot decode image'."""
    monkeypatch.delattr(PIL.Image.core, "jpeg_decoder")
    with pytest.raises(MissingCodecError, match="decoder jpeg not available"):
        embeddings.embed_contents([GOOD_IMAGES["rgb.jpg"]], model_settings)
    # the index reads headers alone, which needs no decoder: it takes the photo, and the embedding fails on it
    assert _check_images.func(pd.Series([GOOD_IMAGES["rgb.jpg"]]))["error"].isna().all()
    features, errors = embeddings.embed_contents([GOOD_IMAGES["alpha.png"], BAD_IMAGES["text.jpg"]], model_settings)
    assert features[0] is not None and errors[0] is None
    assert features[1] is None and errors[1] == "not an image (unrecognised format)"


def test_photos_are_spread_over_a_multiple_of_the_cores_in_tasks_of_the_chosen_size(spark):
    cores = spark.sparkContext.defaultParallelism
    rows = spark.range(1000).coalesce(1)
    assert spread(rows, 1000).rdd.getNumPartitions() == max(1, math.ceil(1000 / PHOTOS_PER_TASK / cores)) * cores
    spark.conf.set(PHOTOS_PER_TASK_CONF, "10")
    try:
        assert spread(rows, 1000).rdd.getNumPartitions() == math.ceil(1000 / 10 / cores) * cores
        spark.conf.set(PHOTOS_PER_TASK_CONF, "0")
        with pytest.raises(ValueError, match=PHOTOS_PER_TASK_CONF):
            spread(rows, 1000)
    finally:
        spark.conf.unset(PHOTOS_PER_TASK_CONF)
