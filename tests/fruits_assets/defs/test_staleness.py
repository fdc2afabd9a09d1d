"""What is up to date, read from an output root on local disk and on S3 (moto's server): the same answers."""

from dataclasses import replace

import boto3

from fruits_assets.defs.resources import resolved_settings
from fruits_assets.defs.staleness import Staleness
from spark_code.features.embedding_store import KEY, STORE_FOLDER, read_store, settings_fingerprint
from spark_code.photos.layout import discover_layout
from spark_code.settings import ModelSettings
from spark_code.storage.class_tables import withdraw_classes_except
from tests.conftest import WEIGHTS

BUCKET = "fruits-outputs"


def _state(root: str, images) -> Staleness:
    # as `fruits run` resolved them for the trained run: the environment's FRUITS_* variables, then its options
    settings = resolved_settings({"images_root": str(images), "model_weights": str(WEIGHTS), "model_alpha": 0.35})
    layout = discover_layout(str(images))
    return Staleness(root, settings, layout, layout.classes)


def _summary(state: Staleness) -> dict:
    return {
        "ingestion": state.stale_ingestion(),
        "pca": state.pca_may_be_stale(),
        "reduced": state.stale_reduced(),
        "classifier": state.classifier_stale(),
        "evaluation": state.evaluation_stale(),
        "featurized": state.counts("image_embeddings"),
    }


def test_a_trained_output_root_is_up_to_date_on_disk_and_on_s3(trained_run, small_root, aws, spark):
    summary, output_root = trained_run
    local = _summary(_state(str(output_root), small_root))
    assert local == {
        "ingestion": [],
        "pca": False,
        "reduced": [],
        "classifier": False,
        "evaluation": False,
        "featurized": summary["images_featurized"],
    }
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for path in sorted(output_root.rglob("*")):
        if path.is_file() and "embedding_store" not in path.parts:
            s3.put_object(Bucket=BUCKET, Key=f"out/{path.relative_to(output_root)}", Body=path.read_bytes())
    remote = f"s3://{BUCKET}/out"
    assert _summary(_state(remote, small_root)) == local

    withdraw_classes_except(spark, f"{remote}/reduced_features", {"Apple Braeburn", "Banana"})  # an output deleted
    assert _state(remote, small_root).stale_reduced() == ["Kiwi"]
    hidden = small_root / "Training" / "Banana" / ".hidden"
    hidden.write_bytes(b"not a photo")  # hidden: changes nothing
    try:
        assert _state(remote, small_root).stale_ingestion() == []
    finally:
        hidden.unlink()  # the session's small_root stays as the trained run indexed it


def test_the_embedding_store_on_s3_has_the_same_keys_and_weights_on_s3_the_same_fingerprint(trained_run, spark, aws):
    """The store's table copied to S3 and read there by Spark (through S3A) holds what the local one holds, and
    weights uploaded to S3 key the same embeddings as the local file: the key is their content."""
    _, output_root = trained_run
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for path in sorted((output_root / STORE_FOLDER).rglob("*")):
        if path.is_file():
            s3.put_object(Bucket=BUCKET, Key=f"out/{path.relative_to(output_root)}", Body=path.read_bytes())
    s3.put_object(Bucket=BUCKET, Key="models/weights.h5", Body=WEIGHTS.read_bytes())
    local = ModelSettings(weights=str(WEIGHTS), alpha=0.35)
    fingerprint = settings_fingerprint(local)
    assert settings_fingerprint(replace(local, weights=f"s3://{BUCKET}/models/weights.h5")) == fingerprint
    assert settings_fingerprint(replace(local, image_size=local.image_size + 32)) != fingerprint

    def rows(base: str) -> dict[str, list[float]]:
        return {row[KEY]: row["features"] for row in read_store(spark, base, fingerprint).collect()}

    local_rows = rows(str(output_root / STORE_FOLDER))
    assert len(local_rows) > 0 and rows(f"s3://{BUCKET}/out/{STORE_FOLDER}") == local_rows
