"""The main job with its photos and its outputs on S3 (moto's server on 127.0.0.1): Spark writes and reads the
outputs and the embedding store's Delta table through S3A, the driver lists and the executors read the photos through
pyarrow's S3 client, as a session started with those settings does (tests/conftest.py). A second run after one new
photo embeds only that one."""

import boto3

from fruits_assets.main_job import run_main_job
from tests.conftest import copy_sample

BUCKET = "fruits-data"


def _run() -> dict:
    settings = {"images_root": f"s3://{BUCKET}/images", "min_accuracy": 0.0, "flip_average": False}
    summary = run_main_job(settings, None, f"s3://{BUCKET}/outputs")
    assert summary.success, summary.error
    return summary


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_the_main_job_runs_on_s3_and_a_rerun_embeds_only_the_new_photo(spark, aws, shared_root, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    photos = copy_sample(shared_root, tmp_path / "images", ["Kiwi"], {"Training": 4})
    first, *others = sorted((photos / "Training" / "Kiwi").iterdir())
    for photo in others:
        s3.upload_file(str(photo), BUCKET, f"images/Training/Kiwi/{photo.name}")

    assert _run().images_embedded == 3
    table = _keys(s3, "outputs/embedding_store/")
    assert "outputs/embedding_store/_delta_log/00000000000000000000.json" in table  # created by the first write
    assert any(key.endswith(".parquet") and "/fingerprint=" in key for key in table)
    embeddings = _keys(s3, "outputs/image_embeddings/")
    assert "outputs/image_embeddings/_delta_log/00000000000000000000.json" in embeddings
    assert any(key.startswith("outputs/image_embeddings/label=Kiwi/") for key in embeddings)

    s3.upload_file(str(first), BUCKET, f"images/Training/Kiwi/{first.name}")
    assert _run().images_embedded == 1
    assert "outputs/embedding_store/_delta_log/00000000000000000001.json" in _keys(s3, "outputs/embedding_store/")
