"""A Spark worker of a standalone cluster (127.0.0.1, 2 workers x 1 core) SIGKILLed while a class is featurized:
the run succeeds, and its embeddings equal those of the local session's run without the fault (no row lost or
duplicated, no value changed).

The Spark drivers run in their own processes (tests/materialize_driver.py): this process holds the local session.
"""

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from fruits_assets.bench.standalone_cluster import free_ports
from spark_code.features.embeddings import PHOTOS_PER_TASK_CONF, accepted, embed_images, ship_weights
from spark_code.photos.image_files import read_image_files
from spark_code.photos.layout import discover_layout
from spark_code.storage.parquet_store import read_arrow
from tests.conftest import REPO, copy_sample, driver_command

CLASS = "Apple Braeburn"
IMAGES = 80
RUN_LIMIT_S = 540


@pytest.fixture(scope="module")
def images(shared_root, tmp_path_factory) -> Path:
    return copy_sample(shared_root, tmp_path_factory.mktemp("one_class"), [CLASS], {"Training": IMAGES})


def _start_driver(cluster, images: Path, output_root: Path, ui_port: int, log: Path) -> subprocess.Popen:
    conf = {
        "spark.executor.memory": "1g",
        "spark.sql.shuffle.partitions": "8",  # 4 per core, as local sessions get (docs/main-job.md)
        "spark.databricks.delta.snapshotPartitions": "2",  # one per core, as local sessions get
        # Small tasks: 20 photos each, so the featurizing stage has tasks to lose and redo, each long enough for the
        # test to kill its worker while it runs.
        PHOTOS_PER_TASK_CONF: "20",
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
    table = read_arrow(str(output_root / "image_embeddings")).to_pylist()
    paths = [row["path"] for row in table]
    assert len(paths) == len(set(paths)), "an image was embedded twice"
    return {row["path"]: row["features"] for row in table}


def _rest(ui_port: int, path: str) -> tuple[str, list[dict]]:
    """The driver's application id and a list from its REST API (`/applications/<id>/<path>`); empty until it
    answers."""
    try:
        base = f"http://127.0.0.1:{ui_port}/api/v1/applications"
        with urllib.request.urlopen(base, timeout=2) as response:
            app = json.load(response)[0]["id"]
        with urllib.request.urlopen(f"{base}/{app}/{path}", timeout=2) as response:
            return app, json.load(response)
    except (OSError, ValueError, IndexError, KeyError):
        return "", []


def _embedding_jobs(ui_port: int) -> list[dict]:
    """The driver's Spark jobs of the image_embeddings step."""
    return [job for job in _rest(ui_port, "jobs")[1] if job.get("jobGroup") == "image_embeddings"]


def _busy_worker(cluster, ui_port: int, jobs: list[dict]) -> int | None:
    """The index of the worker whose executor started a running task of these jobs last (the task with the most time
    left), or None. A stage's data names no job group: the jobs name their stages."""
    stage_ids = {stage for job in jobs for stage in job.get("stageIds", [])}
    app, stages = _rest(ui_port, "stages?status=active&details=true")
    running = [
        task
        for stage in stages
        if stage.get("stageId") in stage_ids
        for task in (stage.get("tasks") or {}).values()
        if task.get("status") == "RUNNING"
    ]
    for task in sorted(running, key=lambda task: task.get("launchTime", ""), reverse=True):
        index = cluster.worker_of(app, task.get("executorId", ""))
        if index is not None:
            return index
    return None


@pytest.fixture(scope="module")
def reference(spark, images, model_settings) -> dict[str, list[float]]:
    """The class featurized by the local session (`local[*]`), with nothing going wrong."""
    ship_weights(spark, model_settings)
    files = read_image_files(spark, discover_layout(str(images)), [CLASS])
    return {row["path"]: row["features"] for row in accepted(embed_images(files, model_settings)).collect()}


def test_a_worker_killed_while_featurizing_loses_and_duplicates_nothing(cluster, images, reference, tmp_path):
    assert cluster.alive_workers() == 2
    ui_port, log = free_ports(1)[0], tmp_path / "run.log"
    process = _start_driver(cluster, images, tmp_path / "out", ui_port, log)
    deadline = time.monotonic() + RUN_LIMIT_S
    # Kill once the featurizing job has finished some tasks (their cached rows live on the executors) and is running
    # others: the lost tasks are rerun and the lost cached partitions recomputed on the surviving worker.
    # The worker killed is the one whose executor started its running task last (either may sit between tasks).
    busy = None
    while busy is None:
        assert process.poll() is None, log.read_text(errors="replace")[-4000:]
        assert time.monotonic() < deadline, "the featurizing job never ran"
        jobs = [j for j in _embedding_jobs(ui_port) if j["numCompletedTasks"] >= 2 and j["numActiveTasks"] >= 1]
        if jobs:
            busy = _busy_worker(cluster, ui_port, jobs)
        if busy is None:
            time.sleep(0.1)
    cluster.kill_worker(busy)
    try:
        failed = 0
        while process.poll() is None:
            # Any job's: the task lost may belong to a job that runs beside the featurizing one.
            failed = max(failed, sum(job["numFailedTasks"] for job in _rest(ui_port, "jobs")[1]))
            time.sleep(0.1)
        summary = _finish(process, log)
        assert cluster.alive_workers() == 1
    finally:
        cluster.start_worker(busy)
    assert failed >= 1, "the killed worker was running no task"
    assert summary["success"] and all(summary["checks"].values())
    assert summary["metadata"]["image_embeddings"]["row_count"] == IMAGES
    assert summary["metadata"]["rejected_images"]["row_count"] == 0
    embeddings = _embeddings(tmp_path / "out")
    assert len(embeddings) == len(reference) == IMAGES
    assert sorted(embeddings) == sorted(reference)
    assert all(embeddings[path] == features for path, features in reference.items())
