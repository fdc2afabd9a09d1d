"""A Spark worker of a standalone cluster (127.0.0.1, 2 workers x 1 core) SIGKILLed while a class is featurized:
the run succeeds, and its embeddings equal those of a run without the fault (no row lost or duplicated).

The Spark drivers run in their own processes (tests/materialize_driver.py): this process holds the local session.
"""

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from spark_code.standalone_cluster import standalone_cluster
from tests.conftest import REPO, copy_sample, driver_command

CLASS = "Apple Braeburn"
IMAGES = 160
RUN_LIMIT_S = 540


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with standalone_cluster(2, tmp_path_factory.mktemp("cluster"), cores_per_worker=1, memory_per_worker="2g") as c:
        yield c


@pytest.fixture(scope="module")
def images(shared_root, tmp_path_factory) -> Path:
    return copy_sample(shared_root, tmp_path_factory.mktemp("one_class"), [CLASS], {"Training": IMAGES})


def _start_driver(cluster, images: Path, output_root: Path, ui_port: int, log: Path) -> subprocess.Popen:
    conf = {
        "spark.executor.memory": "1g",
        # Small splits: about 15 images per task, so the featurizing stage has many tasks to lose and redo.
        "spark.sql.files.maxPartitionBytes": "1000000",
        "spark.ui.enabled": "true",
        "spark.ui.port": str(ui_port),
        "spark.port.maxRetries": "0",
    }
    env = {
        **os.environ,
        "FRUITS_SPARK_MASTER": cluster.master_url,
        "FRUITS_SPARK_CONF": json.dumps(conf),
        "FRUITS_SPARK_DRIVER_MEMORY": "1g",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            driver_command(images, output_root, [CLASS]), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _finish(process: subprocess.Popen, log: Path) -> dict:
    process.wait(timeout=RUN_LIMIT_S)
    text = log.read_text(errors="replace")
    assert process.returncode == 0, text[-4000:]
    return json.loads(text.strip().splitlines()[-1])


def _embeddings(output_root: Path) -> dict[str, list[float]]:
    table = ds.dataset(str(output_root / "image_embeddings"), partitioning="hive").to_table().to_pylist()
    paths = [row["path"] for row in table]
    assert len(paths) == len(set(paths)), "an image was embedded twice"
    return {row["path"]: row["features"] for row in table}


def _embedding_jobs(ui_port: int) -> list[dict]:
    """The driver's Spark jobs of the image_embeddings step, from its REST API (empty until it answers)."""
    try:
        base = f"http://127.0.0.1:{ui_port}/api/v1/applications"
        with urllib.request.urlopen(base, timeout=2) as response:
            app = json.load(response)[0]["id"]
        with urllib.request.urlopen(f"{base}/{app}/jobs", timeout=2) as response:
            return [job for job in json.load(response) if job.get("jobGroup") == "image_embeddings"]
    except (OSError, ValueError, IndexError, KeyError):
        return []


@pytest.fixture(scope="module")
def reference(cluster, images, tmp_path_factory) -> dict[str, list[float]]:
    """The class featurized on the cluster with nothing going wrong."""
    folder = tmp_path_factory.mktemp("reference")
    summary = _finish(
        _start_driver(cluster, images, folder / "out", _free_port(), folder / "run.log"), folder / "run.log"
    )
    assert summary["success"] and all(summary["checks"].values())
    return _embeddings(folder / "out")


def test_a_worker_killed_while_featurizing_loses_and_duplicates_nothing(cluster, images, reference, tmp_path):
    assert cluster.alive_workers() == 2
    ui_port, log = _free_port(), tmp_path / "run.log"
    process = _start_driver(cluster, images, tmp_path / "out", ui_port, log)
    deadline = time.monotonic() + RUN_LIMIT_S
    # Kill once the featurizing job has finished some tasks (their cached rows live on the executors) and is running
    # others: the lost tasks are rerun and the lost cached partitions recomputed on the surviving worker.
    while not any(j["numCompletedTasks"] >= 4 and j["numActiveTasks"] >= 1 for j in _embedding_jobs(ui_port)):
        assert process.poll() is None, log.read_text(errors="replace")[-4000:]
        assert time.monotonic() < deadline, "the featurizing job never ran"
        time.sleep(0.1)
    cluster.kill_worker(0)
    failed = 0
    while process.poll() is None:
        failed = max([failed, *(j["numFailedTasks"] for j in _embedding_jobs(ui_port))])
        time.sleep(0.1)
    summary = _finish(process, log)
    assert cluster.alive_workers() == 1
    assert failed >= 1, "the killed worker was running no task of the featurizing job"
    assert summary["success"] and all(summary["checks"].values())
    assert summary["metadata"]["image_embeddings"]["row_count"] == IMAGES
    assert summary["metadata"]["rejected_images"]["row_count"] == 0
    embeddings = _embeddings(tmp_path / "out")
    assert len(embeddings) == len(reference) == IMAGES
    assert sorted(embeddings) == sorted(reference)
    assert all(embeddings[path] == features for path, features in reference.items())
