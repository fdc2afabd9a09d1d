"""The main job with its photos and its outputs on S3 (moto's server on 127.0.0.1), in its own process as a user
runs it: Spark writes and reads the outputs and the embedding store's Delta table through S3A, the driver lists and
the executors read the photos through pyarrow's S3 client. A second run after one new photo embeds only that one."""

import json
import os
import subprocess
import sys

import boto3
import pytest

from tests.conftest import REPO, copy_sample

BUCKET = "fruits-data"


def _fruits_run(home) -> dict:
    env = {**os.environ, "DAGSTER_HOME": str(home), "FRUITS_SPARK_MASTER": "local[2]"}
    where = ["--images-root", f"s3://{BUCKET}/images", "--output-root", f"s3://{BUCKET}/outputs"]
    command = [sys.executable, "-m", "fruits_assets.cli", "run", "--min-accuracy", "0", "--no-flip-average", "--json"]
    done = subprocess.run([*command, *where], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.mark.slow
def test_the_main_job_runs_on_s3_and_a_rerun_embeds_only_the_new_photo(aws, shared_root, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    photos = copy_sample(shared_root, tmp_path / "images", ["Kiwi"], {"Training": 4})
    first, *others = sorted((photos / "Training" / "Kiwi").iterdir())
    for photo in others:
        s3.upload_file(str(photo), BUCKET, f"images/Training/Kiwi/{photo.name}")

    summary = _fruits_run(tmp_path / "home")
    assert summary["success"] and summary["images_embedded"] == 3, summary
    table = _keys(s3, "outputs/embedding_store/")
    assert "outputs/embedding_store/_delta_log/00000000000000000001.json" in table  # created, then merged into
    assert any(key.endswith(".parquet") and "/fingerprint=" in key for key in table)
    assert any(key.startswith("outputs/image_embeddings/_current/label=Kiwi") for key in _keys(s3, "outputs/"))

    s3.upload_file(str(first), BUCKET, f"images/Training/Kiwi/{first.name}")
    again = _fruits_run(tmp_path / "home")
    assert again["success"] and again["images_embedded"] == 1, again
    assert "outputs/embedding_store/_delta_log/00000000000000000002.json" in _keys(s3, "outputs/embedding_store/")
