"""Publishing by pointer: readers find a complete version whatever point a writer was killed at, and later writers
delete what dead writers left, on local disk (with Spark) and on S3 (a real S3 API on loopback, without Spark).

The states a killed writer leaves are made here with the writer's own steps, under the tag of a process that really
ran and ended; tests/fruits_assets/defs/test_interrupted_runs.py kills real runs, and the S3 test below kills a real
writer process.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.ml.feature import StandardScaler
from pyspark.ml.linalg import Vectors

from spark_code.models.ml_models import NOTES_FILE, VERSION, ModelArtifact, load_model, save_model
from spark_code.storage import publish, storage
from tests.conftest import REPO


def _dead_tag() -> str:
    process = subprocess.Popen(["true"])
    process.wait()
    return f"0dead.{process.pid}@{socket.gethostname()}"


def _rows(spark, data):
    return spark.createDataFrame(data, "path string, label string, split string, value int")


def _values(df) -> dict[str, int]:
    return {r["path"]: r["value"] for r in df.collect()}


def test_a_model_version_never_published_is_ignored_then_deleted(spark, tmp_path):
    data = spark.createDataFrame([(Vectors.dense([1.0, 2.0]),), (Vectors.dense([3.0, 6.0]),)], ["x"])
    model = StandardScaler(inputCol="x", outputCol="y", withMean=True).fit(data)
    path = str(tmp_path / "model")
    save_model(spark, ModelArtifact(model, {"version": 1}), path)
    first = publish.current(path)
    dead = f"{path}/{publish.VERSIONS}/{_dead_tag()}"
    model.write().save(dead)  # killed before its notes and its pointer
    loaded = load_model(spark, path)
    assert loaded.notes["version"] == 1 and loaded.model.mean.toArray().tolist() == [2.0, 4.0]
    assert loaded.notes[VERSION] == first.rsplit("/", 1)[1]  # the notes name the version folder they are in
    save_model(spark, ModelArtifact(model, {"version": 2}), path)
    assert load_model(spark, path).notes["version"] == 2
    assert not os.path.exists(dead) and publish.leftovers(path) == [first[len(path) + 1 :]]
    assert publish.recover(path, grace=0) == [first[len(path) + 1 :]]
    assert publish.leftovers(path) == [] and len(os.listdir(f"{path}/{publish.VERSIONS}")) == 1


def test_the_model_just_saved_is_loaded_without_reading_it_back_unless_another_was_published(spark, tmp_path):
    data = spark.createDataFrame([(Vectors.dense([1.0, 2.0]),), (Vectors.dense([3.0, 6.0]),)], ["x"])
    model = StandardScaler(inputCol="x", outputCol="y", withMean=True).fit(data)
    path = str(tmp_path / "model")
    save_model(spark, ModelArtifact(model, {"k": (1, 2)}), path)
    same = load_model(spark, path)
    assert same.model is model and same.notes["k"] == [1, 2], "the notes as a reader of the JSON file sees them"
    shutil.copytree(path, tmp_path / "copy")
    read_back = load_model(spark, str(tmp_path / "copy"))
    assert read_back.model is not model and read_back.model.mean.toArray().tolist() == [2.0, 4.0]
    assert read_back.notes == same.notes
    # Another process publishes another model there: that one is read.
    shifted = spark.createDataFrame([(Vectors.dense([3.0, 6.0]),), (Vectors.dense([3.0, 6.0]),)], ["x"])
    other = StandardScaler(inputCol="x", outputCol="y", withMean=True).fit(shifted)
    version = publish.new_version(path)
    other.write().save(version)
    storage.write_text(f"{version}/{NOTES_FILE}", json.dumps({VERSION: version.rsplit("/", 1)[1]}))
    publish.commit(path, version, [publish.WHOLE])
    assert load_model(spark, path).model.mean.toArray().tolist() == [3.0, 6.0]


def _age(folder: Path, seconds: float) -> None:
    """Make everything under a folder (itself included) look last written `seconds` ago."""
    past = time.time() - seconds
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (past, past))


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.delenv("FRUITS_REPLACED_GRACE_SECONDS", raising=False)
    monkeypatch.delenv("FRUITS_ABANDONED_AFTER_SECONDS", raising=False)
    assert publish.limits() == (publish.REPLACED_GRACE_SECONDS, publish.ABANDONED_AFTER_SECONDS)
    monkeypatch.setenv("FRUITS_REPLACED_GRACE_SECONDS", "0")
    monkeypatch.setenv("FRUITS_ABANDONED_AFTER_SECONDS", "90.5")
    assert publish.limits() == (0.0, 90.5)
    monkeypatch.setenv("FRUITS_ABANDONED_AFTER_SECONDS", "-1")
    with pytest.raises(ValueError, match="FRUITS_ABANDONED_AFTER_SECONDS"):
        publish.limits()


def test_owner_of_a_version(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "node-1.example.com")
    alive, dead = os.getpid(), int(_dead_tag().split(".")[1].split("@")[0])
    assert publish.owner_is_dead(f"0abc.{dead}@node-1.example.com")
    assert not publish.owner_is_dead(f"0abc.{alive}@node-1.example.com")
    assert not publish.owner_is_dead(f"0abc.{dead}@other-host")  # another machine's writer may still run
    assert not publish.owner_is_dead("0abc")


# On S3: the same protocol through the S3 API of a loopback server. Spark cannot reach S3 here (no Hadoop S3
# connector offline), so pyarrow writes the Parquet files Spark would write; everything else is the product's code.

S3_WRITER = """
import sys, time
import pyarrow as pa, pyarrow.parquet as pq
from spark_code.storage import publish, storage

base, count = sys.argv[1], int(sys.argv[2])
version = publish.new_version(base)
fs, path = storage.filesystem(version)
for i in range(count):
    table = pa.table({"path": [f"new{i}"], "value": [100 + i]})
    pq.write_table(table, f"{path}/label=Apple/part-{i:05d}.parquet", filesystem=fs)
    print("wrote", i, flush=True)
    time.sleep(0.5)
publish.commit(base, version, ["label=Apple"])
print("published", flush=True)
"""


def _s3_write(base: str, values: dict[str, int]) -> None:
    version = publish.new_version(base)
    fs, path = storage.filesystem(version)
    table = pa.table({"path": list(values), "value": list(values.values())})
    pq.write_table(table, f"{path}/label=Apple/part-00000.parquet", filesystem=fs)
    publish.commit(base, version, ["label=Apple"])


def _s3_values(base: str) -> dict[str, int]:
    fs, path = storage.filesystem(publish.current(base, "label=Apple"))
    table = pq.read_table(path, filesystem=fs)
    return dict(zip(table.column("path").to_pylist(), table.column("value").to_pylist(), strict=True))


def _s3_keys(bucket: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.mark.usefixtures("aws")
def test_on_s3_a_writer_killed_mid_write_changes_nothing_and_the_next_writer_cleans_up(tmp_path):
    bucket = "fruits-publish-test"
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    base = f"s3://{bucket}/outputs/image_embeddings"
    _s3_write(base, {"old0": 1, "old1": 2})
    assert _s3_values(base) == {"old0": 1, "old1": 2}

    with (tmp_path / "writer.log").open("w+") as log:
        writer = subprocess.Popen(
            [sys.executable, "-c", S3_WRITER, base, "20"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while "wrote 2" not in (tmp_path / "writer.log").read_text():
            assert writer.poll() is None and time.monotonic() < deadline, (tmp_path / "writer.log").read_text()
            time.sleep(0.1)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    written = [key for key in _s3_keys(bucket) if "/label=Apple/part-" in key and "/_current/" not in key]
    assert len(written) >= 4, "the killed writer's files are on S3 (3 or more) besides the published one"
    assert _s3_values(base) == {"old0": 1, "old1": 2}, "readers still see the published version, whole"
    assert len(publish.leftovers(base)) == 1

    killed = publish.leftovers(base)[0]
    replaced = publish.version_of(publish.current(base, "label=Apple")[len(base) + 1 :])
    _s3_write(base, {"new": 3})
    assert _s3_values(base) == {"new": 3}
    assert publish.leftovers(base) == [replaced], "the killed writer's version is deleted at once (dead, this host)"
    assert publish.recover(base, now=time.time() + publish.limits()[0] + 60) == [replaced]
    assert publish.leftovers(base) == []
    prefix = "outputs/image_embeddings/_versions/"
    versions = {key[len(prefix) :].split("/")[0] for key in _s3_keys(bucket) if key.startswith(prefix)}
    assert len(versions - {""}) == 1, "the killed writer's version and the replaced one are deleted"  # "": a marker
    assert killed.split("/")[1] not in versions


@pytest.mark.usefixtures("aws")
def test_on_s3_a_version_of_another_host_is_deleted_once_abandoned_not_before(monkeypatch):
    monkeypatch.setenv("FRUITS_ABANDONED_AFTER_SECONDS", "3600")
    bucket = "fruits-publish-test"
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    base = f"s3://{bucket}/outputs/image_embeddings"
    _s3_write(base, {"old0": 1})
    # A writer of an EMR driver on another node, killed after its first upload: its pid means nothing here.
    tag = f"{uuid.uuid4().hex}.123@other-host"
    fs, path = storage.filesystem(f"{base}/{publish.VERSIONS}/{tag}")
    pq.write_table(pa.table({"path": ["half"], "value": [7]}), f"{path}/label=Apple/part-00000.parquet", filesystem=fs)
    written = time.time()
    assert publish.recover(base) == []
    assert publish.recover(base, now=written + 3500) == [], "a writer may still be writing it"
    assert publish.recover(base, now=written + 3700) == [f"{publish.VERSIONS}/{tag}"]
    assert not [key for key in _s3_keys(bucket) if tag in key]
    assert _s3_values(base) == {"old0": 1} and publish.leftovers(base) == []


@pytest.mark.usefixtures("aws")
def test_on_s3_a_replaced_version_is_kept_for_the_grace_period_then_deleted(monkeypatch):
    monkeypatch.setenv("FRUITS_REPLACED_GRACE_SECONDS", "600")
    bucket = "fruits-publish-test"
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    base = f"s3://{bucket}/outputs/image_embeddings"
    _s3_write(base, {"old": 1})
    first = publish.current(base, "label=Apple")
    _s3_write(base, {"new": 2})
    assert _s3_values(base) == {"new": 2}
    fs, path = storage.filesystem(first)
    old = pq.read_table(path, filesystem=fs)
    assert old.column("path").to_pylist() == ["old"], "a reader that followed the old pointer still reads it"
    replaced = publish.version_of(first[len(base) + 1 :])
    assert publish.leftovers(base) == [replaced]
    replaced_at = time.time()
    assert publish.recover(base) == [] and publish.recover(base, now=replaced_at + 500) == []
    assert publish.recover(base, now=replaced_at + 700) == [replaced]
    assert not [key for key in _s3_keys(bucket) if replaced in key]
    assert _s3_values(base) == {"new": 2} and publish.leftovers(base) == []


def test_a_part_replaced_this_very_moment_goes_at_once_with_no_grace(tmp_path, monkeypatch):
    """Markers keep the exact time: one rounded up to the millisecond lay in the future, and a grace period of 0
    kept the replaced part (a flaky test showed it)."""
    base = str(tmp_path / "asset")
    monkeypatch.setattr(publish.time, "time", lambda: 100.0006)  # "100.001" once rounded
    versions = []
    for _ in range(2):
        version = publish.new_version(base)
        storage.write_text(f"{version}/label=Apple/part.txt", "rows")
        publish.commit(base, version, ["label=Apple"])  # its own recover keeps the old part: an hour of grace
        versions.append(version[len(base) + 1 :])
    assert publish.leftovers(base) == [versions[0]]
    assert publish.recover(base, now=100.0006, grace=0, abandoned_after=3600) == [versions[0]]
