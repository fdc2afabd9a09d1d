"""Each blocking check, made to fail on real data: the step publishes nothing it refused, so what it refused stays
stale, and the next run computes it again and fails again the same way."""

import hashlib
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from fruits_assets.defs.checks import BLOCKED
from fruits_assets.defs.resources import FruitsSettings
from fruits_assets.defs.staleness import Staleness
from spark_code.features.embedding_store import STORE_SCHEMA, add_to_store, settings_fingerprint
from spark_code.settings import EMBEDDING_WIDTH
from spark_code.storage.class_tables import published_stamps, read_classes, write_classes
from tests.conftest import WEIGHTS, copy_sample
from tests.fruits_assets.conftest import materialize_for
from tests.images_factory import BAD_IMAGES, encoded, fruit_like, write_files

INGESTION = ["raw_images", "image_embeddings", "rejected_images"]


def _refused(result, check: str, step: str) -> None:
    """The step failed on that check alone, and said so."""
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert not result.success and checks[check] is False
    assert [name for name, passed in checks.items() if not passed] == [check]
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == [step]
    assert failures[0].step_failure_data.user_failure_data.description == f"{BLOCKED}: {check}"


def _state(root: Path, out: Path, classes: list[str], **settings: object) -> Staleness:
    config = FruitsSettings(images_root=str(root), model_weights=str(WEIGHTS), model_alpha=0.35, **settings)
    return Staleness(str(out), config, config.layout(), classes)


def _ingestion_refused_twice(root: Path, out: Path, name: str, check: str, **settings: object) -> None:
    for _ in range(2):  # the rerun, nothing changed, computes it again and fails again
        result = materialize_for(root, out, [name], INGESTION, **settings)
        _refused(result, check, "image_embeddings")
        assert name not in published_stamps(str(out / "image_embeddings"))
        assert name not in published_stamps(str(out / "rejected_images"))
        assert name in _state(root, out, [name], **settings).stale_ingestion()


@pytest.mark.slow
def test_rejected_share_over_the_limit_publishes_nothing(small_root, tmp_path):
    root = copy_sample(small_root, tmp_path / "images", ["Kiwi"], {"Training": 2})
    write_files(root / "Training" / "Kiwi", BAD_IMAGES)
    _ingestion_refused_twice(root, tmp_path / "out", "Kiwi", "rejected_share_within_limit")


@pytest.mark.slow
def test_a_file_rewritten_after_indexing_is_lost_and_publishes_nothing(small_root, tmp_path):
    root = copy_sample(small_root, tmp_path / "images", ["Kiwi"], {"Training": 3})
    out = tmp_path / "out"
    assert materialize_for(root, out, ["Kiwi"], ["raw_images"]).success
    photo = sorted((root / "Training" / "Kiwi").iterdir())[0]
    photo.write_bytes(encoded(fruit_like(seed=7), "JPEG"))  # indexed under its old content
    for _ in range(2):
        result = materialize_for(root, out, ["Kiwi"], INGESTION[1:])
        _refused(result, "every_indexed_file_is_embedded_or_rejected", "image_embeddings")
        assert "Kiwi" not in published_stamps(str(out / "image_embeddings"))


def test_a_corrupt_embedding_store_fails_the_width_check_and_publishes_nothing(small_root, tmp_path, spark):
    """Every photo's embedding is found in the store, but NaN there: nothing is embedded again, nothing published."""
    root = copy_sample(small_root, tmp_path / "images", ["Kiwi"], {"Training": 3})
    out = tmp_path / "out"
    config = FruitsSettings(images_root=str(root), model_weights=str(WEIGHTS), model_alpha=0.35)
    rows = [
        (hashlib.sha256(photo.read_bytes()).hexdigest(), [float("nan")] * EMBEDDING_WIDTH, None)
        for photo in (root / "Training" / "Kiwi").iterdir()
    ]
    add_to_store(
        spark.createDataFrame(rows, STORE_SCHEMA), str(out / "embedding_store"), settings_fingerprint(config.model)
    )
    _ingestion_refused_twice(root, out, "Kiwi", "embeddings_are_1280_wide_without_nan")


def test_nan_embeddings_fail_the_reduced_width_check_and_publish_nothing(small_root, tmp_path, spark):
    classes, corrupt = ["Banana", "Kiwi"], "Kiwi"
    root = copy_sample(small_root, tmp_path / "images", classes, {"Training": 4})
    out = tmp_path / "out"
    assert materialize_for(root, out, classes, INGESTION, every_class=True, pca_k=3).success
    assert materialize_for(root, out, classes, ["pca_model"], pca_k=3).success
    # another writer's embeddings of the class, with a NaN in one row (stamps kept: only the values are wrong)
    base = str(out / "image_embeddings")
    embeddings = read_classes(spark, base, [corrupt])
    first = embeddings.agg(F.min("path")).first()[0]
    nan = F.array_repeat(F.lit(float("nan")).cast("float"), EMBEDDING_WIDTH)
    corrupted = embeddings.withColumn("features", F.when(F.col("path") == first, nan).otherwise(F.col("features")))
    write_classes(corrupted, base, [corrupt], {corrupt: published_stamps(base)[corrupt]["stamp"]})
    for _ in range(2):
        result = materialize_for(root, out, [corrupt], ["reduced_features"], pca_k=3)
        _refused(result, "reduced_width_equals_k", "reduced_features")
        assert corrupt not in published_stamps(str(out / "reduced_features"))
        assert corrupt in _state(root, out, classes, pca_k=3).stale_reduced()
