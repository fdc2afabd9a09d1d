"""`fruits run`'s console: the progress rows from real Dagster events and Spark task counts, the logs in a file (fds
1 and 2 included), and a real `fruits run` whose stdout is only the summary."""

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from dagster import (
    BackfillPolicy,
    BetaWarning,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DynamicPartitionsDefinition,
    Failure,
    asset,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from rich.console import Console

from fruits_assets.cli.console import (
    DAGSTER_HOME_DEFAULT,
    STAGES,
    Board,
    RunConsole,
    Stage,
    new_log_path,
    plain_line,
    render,
)
from fruits_assets.main_job import materialize_listened
from spark_code.progress import Progress
from tests.conftest import REPO, copy_sample

PROGRESS_LINE = Progress("image_embeddings: photos embedded", 4, lambda: 3, print).line(3, 2.0)


warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=BetaWarning)  # as fruits_assets does
CLASSES = DynamicPartitionsDefinition(name="fruit_class")
ONE_RUN = BackfillPolicy.single_run()


@asset(partitions_def=CLASSES, backfill_policy=ONE_RUN)
def raw_images(context) -> None:
    context.log.info("raw_images: 4 of 4 file(s) read")


@asset(partitions_def=CLASSES, backfill_policy=ONE_RUN, deps=[raw_images])
def image_embeddings(context) -> None:
    context.log.info(PROGRESS_LINE)


@asset(deps=[image_embeddings])
def pca_model() -> None:
    raise Failure(description="no PCA: the test says so")


@asset(partitions_def=CLASSES, backfill_policy=ONE_RUN, deps=[pca_model])
def reduced_features() -> None:
    pass


def test_the_rows_follow_the_runs_real_events_and_the_spark_counts():
    """A real (Spark-free) run of assets named like the main job's, heard as it happens by materialize_listened's
    listener: each step's state and latest line, the tasks counted meanwhile, and the plain line of each end."""
    ended: list[str] = []
    started: list[str] = []
    board = Board(on_start=started.append, on_end=lambda stage: ended.append(plain_line(stage)))
    seen: list[DagsterEventType | None] = []
    statuses: list[DagsterRunStatus] = []

    def listener(event):
        seen.append(event.dagster_event_type)
        if event.dagster_event_type == DagsterEventType.STEP_START and event.step_key == "raw_images":
            statuses.append(instance.get_run_by_id(event.run_id).status)  # heard while the run goes on
            board.count("raw_images", 0, 4, now=event.timestamp)  # the poller's counts while the step runs
            board.count("raw_images", 4, 4, now=event.timestamp + 2)
        board.handle(event)

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(CLASSES.name, ["Banana", "Kiwi", "Lemon"])
    assets = [raw_images, image_embeddings, pca_model, reduced_features]
    classes = {ASSET_PARTITION_RANGE_START_TAG: "Banana", ASSET_PARTITION_RANGE_END_TAG: "Kiwi"}
    result = materialize_listened(assets, instance, listener, tags=classes, raise_on_error=False)
    assert not result.success
    assert statuses == [DagsterRunStatus.STARTED]
    assert seen.index(DagsterEventType.RUN_START) < seen.index(DagsterEventType.STEP_START) < len(seen) - 1
    assert started == ["raw_images", "image_embeddings", "pca_model"]

    rows = {row["name"]: row for row in board.rows()}
    assert list(rows) == ["planning", "raw_images", "image_embeddings", "pca_model", "reduced_features"]
    assert [rows[name]["state"] for name in rows] == ["succeeded", "succeeded", "succeeded", "failed", "skipped"]
    assert rows["raw_images"]["tasks"] == "4/4 tasks" and rows["raw_images"]["note"] == "4 of 4 file(s) read"
    assert [rows[name]["classes"] for name in rows] == ["", "2 classes", "2 classes", "", "2 classes"]
    assert rows["image_embeddings"]["note"] == PROGRESS_LINE.removeprefix("image_embeddings: ")
    assert rows["image_embeddings"]["note"].startswith("photos embedded: 3 of 4 (75%)")
    assert rows["pca_model"]["note"] == "no PCA: the test says so"
    assert rows["reduced_features"]["elapsed"] == ""  # never started
    assert all(rows[name]["rate"] == rows[name]["left"] == "" for name in rows)  # nothing running any more
    assert re.fullmatch(r"fruits: raw_images succeeded in \d+\.\d s, 4 of 4 Spark tasks", ended[0])
    assert re.fullmatch(r"fruits: pca_model failed in \d+\.\d s: no PCA: the test says so", ended[2])
    assert ended[3].startswith("fruits: reduced_features skipped: ") and len(ended) == 4  # at the run's end


def test_rate_and_time_left_come_from_the_counts_while_a_stage_runs():
    board = Board(clock=lambda: 100.0)
    stage = board.stages.setdefault("image_embeddings", Stage("image_embeddings", state="running", started=100.0))
    board.count("image_embeddings", 0, 0, now=100.0)
    row = board.rows(now=100.5)[1]
    assert (row["tasks"], row["rate"], row["left"], row["elapsed"]) == ("", "", "", "0:00")  # no task submitted yet
    board.count("image_embeddings", 2, 10, now=101.0)
    board.count("image_embeddings", 6, 10, now=103.0)
    row = board.rows(now=103.0)[1]
    assert (row["tasks"], row["rate"], row["left"], row["elapsed"]) == (
        "6/10 tasks",
        "2.0 tasks/s",
        "~0:02 left",
        "0:03",
    )
    board.count("image_embeddings", 6, 30, now=104.0)  # a later Spark stage: the total is what Spark knows now
    row = board.rows(now=104.0)[1]
    assert (row["tasks"], row["rate"], row["left"]) == ("6/30 tasks", "1.5 tasks/s", "~0:16 left")
    stage.state = "succeeded"
    assert board.rows(now=104.0)[1]["left"] == ""

    table = Console(width=110, record=True, color_system=None)
    table.print(render(board, now=104.0))
    screen = table.export_text()
    assert re.search(r"✔ +image_embeddings +━+ +6/30 tasks +0:04", screen), screen
    assert "planning" in screen.splitlines()[0]


WRITER = r"""
import os, subprocess, sys
from pathlib import Path
from fruits_assets.cli.console import RedirectedOutput

with RedirectedOutput(Path(sys.argv[1])) as output:
    os.write(2, b"C level, fd 2\n")
    os.write(1, b"C level, fd 1\n")
    print("python stdout")
    print("python stderr", file=sys.stderr)
    subprocess.run(["sh", "-c", "echo child process stderr >&2; echo child process stdout"], check=True)
    print("the display", file=output.stderr)
print("the summary")
os.write(2, b"fruits: error: after the run\n")
"""


def test_every_write_of_the_run_goes_to_the_log_file_and_the_terminal_gets_the_rest(tmp_path):
    log = tmp_path / "logs" / "run.log"
    completed = subprocess.run(
        [sys.executable, "-c", WRITER, str(log)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "the summary\n"
    assert completed.stderr == "the display\nfruits: error: after the run\n"
    written = log.read_text().splitlines()
    assert sorted(written) == sorted(
        [
            "C level, fd 2",
            "C level, fd 1",
            "python stdout",
            "python stderr",
            "child process stderr",
            "child process stdout",
        ]
    )


def test_the_log_goes_beside_the_runs_in_the_dagster_home(monkeypatch, tmp_path):
    from fruits_assets import main_job

    assert DAGSTER_HOME_DEFAULT == main_job.DAGSTER_HOME_DEFAULT
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert re.fullmatch(r"fruits-run-\d{8}-\d{6}-\d+\.log", new_log_path().name)
    assert new_log_path().parent == tmp_path / "logs"
    assert RunConsole(verbose=True).log_path is None and RunConsole(verbose=True).listener is None


SPARK_BAR = re.compile(r"\[Stage \d+")
DAGSTER_LINE = re.compile(r" - dagster - (INFO|DEBUG|WARNING|ERROR) - ")
SPARK_LOG = re.compile(r"Spark's default log4j profile|\d\d/\d\d/\d\d \d\d:\d\d:\d\d (WARN|INFO|ERROR) ")
"""What Spark's JVM writes: log4j's first line, or a log4j line (`26/12/02 00:57:07 WARN Utils: ...`)."""


@pytest.fixture
def tiny_root(shared_root: Path, tmp_path: Path) -> Path:
    """One class, three photos: every stage runs (the classifier's: skipped below two classes), in a few seconds."""
    return copy_sample(shared_root, tmp_path / "images", ["Kiwi"], {"Training": 3})


def fruits_run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(home), "FRUITS_SPARK_MASTER": "local[2]"}
    command = [sys.executable, "-m", "fruits_assets.cli", "run", "--min-accuracy", "0", "--no-flip-average", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_fruits_run_prints_only_the_summary_and_logs_spark_and_dagster_to_a_file(tiny_root, tmp_path):
    """A real `fruits run` without a terminal: stdout is the summary (with the log file's row) and nothing else,
    stderr one line per stage; the log holds Spark's and Dagster's lines. --verbose: them live, and no log file."""
    where = ["--images-root", str(tiny_root), "--output-root", str(tmp_path / "out")]
    quiet = fruits_run(*where, home=tmp_path / "home")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    lines, err = quiet.stdout.splitlines(), quiet.stderr.splitlines()
    assert lines[0].startswith("fruits run succeeded in ")
    assert all(line.startswith("  ") for line in lines[1:]), quiet.stdout  # the summary's rows, nothing else
    assert not SPARK_BAR.search(quiet.stdout + quiet.stderr) and not DAGSTER_LINE.search(quiet.stdout + quiet.stderr)
    logged = [line.split(None, 1) for line in lines if line.lstrip().startswith("log:")]
    assert len(logged) == 1
    log = Path(logged[0][1])
    assert log.parent == tmp_path / "home" / "logs" and log.is_file()
    ends = [
        re.fullmatch(r"fruits: (\w+) (succeeded|skipped)( in \d+\.\d s)?(, [\d,]+ of [\d,]+ Spark tasks)?(: .+)?", e)
        for e in err
    ]
    # a line per stage's end only (no field root: no field_evaluation, the last stage)
    assert all(ends) and [end[1] for end in ends[:6]] == list(STAGES[:-1]), quiet.stderr
    assert [end[2] for end in ends[:6]] == ["succeeded"] * 5 + ["skipped"]  # nothing to evaluate, one class
    text = log.read_text()
    assert DAGSTER_LINE.search(text) and "raw_images: started" in text and "reduced_features: computed" in text
    assert SPARK_LOG.search(text), text[:3000]  # Spark's JVM
    assert "photo(s) embedded" in text

    # --verbose, on the same photos: only the classifier that one class skipped is tried again (no photo is read),
    # and Spark's and Dagster's lines come live
    verbose = fruits_run(*where, "--verbose", "--json", home=tmp_path / "home")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    summary = json.loads(verbose.stdout)
    assert summary["log_file"] is None and list(summary["stage_seconds"]) == ["fruit_classifier"]
    assert DAGSTER_LINE.search(verbose.stderr) and "fruit_classifier: started" in verbose.stderr
    assert SPARK_LOG.search(verbose.stderr)
    assert [path.name for path in (tmp_path / "home" / "logs").glob("fruits-run-*")] == [log.name]
