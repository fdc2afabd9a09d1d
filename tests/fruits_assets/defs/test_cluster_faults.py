"""The assets on a real distributed engine, a Spark standalone cluster (127.0.0.1, 2 workers x 1 core), with one
worker SIGKILLed while a class is featurized: the run succeeds, and its embeddings equal those of the local session's
run without the fault (no row lost or duplicated, no value changed).

The Spark drivers run in their own processes (tests/materialize_driver.py): this process holds the local session.
"""

import json
import os
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from fruits_assets.bench.standalone_cluster import free_ports
from spark_code.features.embedding_store import MODEL_PASS
from spark_code.features.embeddings import PHOTOS_PER_TASK_CONF, accepted, embed_images, ship_weights
from spark_code.photos.image_files import read_image_files
from spark_code.photos.layout import discover_layout
from spark_code.storage.class_tables import read_arrow
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
        # Four tasks of 20 photos, so the featurizing stage has tasks to lose and redo; each in a Python worker of its
        # own, which imports TensorFlow and loads the model: seconds, so the test kills a worker while its task runs.
        PHOTOS_PER_TASK_CONF: "20",
        "spark.python.worker.reuse": "false",
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


def _launched(task: dict) -> float:
    """A task's launch time in seconds since the epoch (the REST API writes `2026-12-07T13:40:56.123GMT`)."""
    return datetime.strptime(task["launchTime"].replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


KILL_MARGIN_S = 2.0
"""What a task's expected remaining time must exceed when its worker is chosen: the kill lands within a poll."""


def _worker_running_a_fresh_task(cluster, ui_port: int, seen: list[str]) -> int | None:
    """The index of the worker whose executor runs a task of the model's pass expected to run KILL_MARGIN_S longer
    (begun less than the shortest finished task's time minus the margin ago: every task imports TensorFlow and loads
    the model, so they take about as long), once the pass has finished a task (its cached rows live on an executor);
    else None. What each poll saw of the pass is appended to `seen`, for a failure's message."""
    app, stages = _rest(ui_port, "stages?status=active&details=true")
    now = time.time()
    for stage in stages:
        if MODEL_PASS not in (stage.get("description") or ""):
            continue
        tasks = (stage.get("tasks") or {}).values()
        shortest = min((task["duration"] / 1000 for task in tasks if task.get("status") == "SUCCESS"), default=0)
        running = {task["taskId"]: round(now - _launched(task), 1) for task in tasks if task.get("status") == "RUNNING"}
        seen.append(f"{stage.get('numCompleteTasks', 0)} done (shortest {shortest:.1f} s), running for {running}")
        if not shortest:
            continue
        for task in tasks:
            if task.get("status") == "RUNNING" and now - _launched(task) < shortest - KILL_MARGIN_S:
                return cluster.worker_of(app, task.get("executorId", ""))
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
    # Kill once the model's pass has finished some tasks and has just started another: the lost task is rerun and the
    # lost cached partitions recomputed on the surviving worker.
    busy, seen = None, []
    while busy is None:
        assert process.poll() is None, f"no worker killed; the model's pass seen: {seen[-20:]}"
        assert time.monotonic() < deadline, "the model's pass never ran"
        busy = _worker_running_a_fresh_task(cluster, ui_port, seen)
        if busy is None:
            time.sleep(0.1)
    cluster.kill_worker(busy)
    app = _rest(ui_port, "jobs")[0]
    try:
        failed = 0
        while process.poll() is None:
            # The task lost counts as a failed one of its job.
            failed = max(failed, sum(job["numFailedTasks"] for job in _rest(ui_port, "jobs")[1]))
            time.sleep(0.1)
        summary = _finish(process, log)
        assert cluster.alive_workers() == 1
    finally:
        cluster.start_worker(busy)
    assert failed >= 1, (
        f"the killed worker (worker {busy}) was running no task: {log.read_text(errors='replace')[-3000:]}"
    )
    executors = cluster.log_dir.glob(f"worker-*/{app}/*/stderr")
    assert len({path.parts[-4] for path in executors}) == 2, "both workers ran executors"
    assert summary["success"] and all(summary["checks"].values())
    assert summary["metadata"]["image_embeddings"]["row_count"] == IMAGES
    assert summary["metadata"]["rejected_images"]["row_count"] == 0
    embeddings = _embeddings(tmp_path / "out")
    assert len(embeddings) == len(reference) == IMAGES
    assert sorted(embeddings) == sorted(reference)
    assert all(embeddings[path] == features for path, features in reference.items())
