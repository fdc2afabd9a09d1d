"""`fruits run`'s console: one progress display while the main job works, and its logs in a file.

While `fruits run` works, a person sees one row per stage (the main job's Dagster steps) and nothing else: Spark's JVM,
its Python workers and Dagster write to a log file whose path is printed first and in the summary (`--verbose`:
everything live and no display, as before). The rows come from two honest sources:
- the runs' Dagster events as they happen (`run_main_job`'s listener): whether a step waits, runs, retries,
  succeeded, failed or was skipped, since when, and its latest log line (the embeddings report there their photos
  done of total, rate and time left, every 10 s; the PCA its k; the classifier its penalty);
- Spark's status tracker, polled on a thread: the Spark tasks of the running step's jobs (each step groups its jobs
  under its name, fruits_assets.assets.common.group_jobs), done of those Spark has submitted so far, their rate, and
  the time those tasks have left at that rate. A step may submit more jobs later: the total is what Spark knows at
  that moment, never a guess.

The log: file descriptors 1 and 2 point to it for the whole run (a Spark session started afterwards inherits them,
and Python workers write through the JVM), and sys.stdout and sys.stderr too (Dagster's console logger writes to
sys.stderr). The display draws on the terminal the run started from, on stderr; stdout carries only the summary or
the JSON object, after the run. Without a terminal (a pipe, CI, tests) nothing is drawn: one plain line per stage on
stderr when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagster import EventLogEntry
    from rich.console import RenderableType

STAGES = (
    "raw_images",
    "image_embeddings",
    "pca_model",
    "reduced_features",
    "fruit_classifier",
    "classifier_evaluation",
    "field_evaluation",
)
"""The main job's steps (each an asset's op, named after it), in the order they run."""

PLANNING = "planning"
"""The row before the first run starts: reading the images root and the outputs to find what is missing or stale."""

WAITING = "waiting"
RUNNING = "running"
RETRYING = "retrying"
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"

DAGSTER_HOME_DEFAULT = ".dagster_home"
"""main_job.DAGSTER_HOME_DEFAULT, repeated: the log file is opened before Dagster is imported (the JVM must inherit
it), and importing main_job imports Dagster."""

RATE_WINDOW = 30.0
"""Seconds of Spark task counts the rate is measured over."""

POLL_SECONDS = 0.5
"""How often Spark's status tracker is read."""


def log_folder() -> Path:
    """Where `fruits run` writes its logs: `logs` in the Dagster instance's folder, beside the runs it records."""
    return Path(os.environ.get("DAGSTER_HOME") or DAGSTER_HOME_DEFAULT).resolve() / "logs"


def new_log_path(now: float | None = None) -> Path:
    """A new log file's path for this process: `fruits-run-<local time>-<pid>.log`."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return log_folder() / f"fruits-run-{stamp}-{os.getpid()}.log"


def duration_text(seconds: float) -> str:
    """A duration as m:ss, or h:mm:ss from an hour."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class Stage:
    """One row: a step's state, its times, its Spark tasks and its latest log line."""

    name: str
    state: str = WAITING
    started: float | None = None
    """The step's first start (a step in several runs, or retried: from its first start to its last end)."""
    ended: float | None = None
    done: int = 0
    total: int = 0
    """Spark tasks of the step's jobs: done, of those submitted so far."""
    note: str = ""
    classes: set[str] = field(default_factory=set)
    """The classes (partitions) the runs planned it for; none for the steps over every class at once."""
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=1000), repr=False)

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else now) - self.started

    def rate(self, now: float) -> float | None:
        """Spark tasks done per second over the last RATE_WINDOW seconds; None until a second of counts."""
        recent = [(t, done) for t, done in self.samples if t >= now - RATE_WINDOW]
        if len(recent) < 2 or recent[-1][0] - recent[0][0] < 1.0:
            return None
        return (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])

    def left(self, now: float) -> float | None:
        """Seconds the submitted tasks still need at the current rate; None when unknown or not running."""
        rate = self.rate(now)
        if self.state != RUNNING or not rate or self.done >= self.total:
            return None
        return (self.total - self.done) / rate


def _failure(event: EventLogEntry) -> str:
    """Why a step failed, in one line: a Failure's description, else the innermost error's last line."""
    data = event.get_dagster_event().step_failure_data
    if data.user_failure_data and data.user_failure_data.description:
        return data.user_failure_data.description.splitlines()[0]
    error = data.error
    while error is not None and error.cause is not None:
        error = error.cause
    lines = [line.strip() for line in (error.message if error else "").splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


class Board:
    """The rows, from the runs' events (`handle`, any thread) and Spark task counts (`count`).

    `on_start(step)` is called when a step starts, `on_end(stage)` when it ends (both outside the lock)."""

    def __init__(
        self,
        on_start: Callable[[str], None] | None = None,
        on_end: Callable[[Stage], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self.planning = Stage(PLANNING, state=RUNNING, started=clock(), note="what is missing or stale")
        self.stages: dict[str, Stage] = {}
        self._planned: dict[str, set[str]] = {}
        """Steps each run planned, by run id, until the run ends."""
        self.on_start, self.on_end, self.clock = on_start, on_end, clock

    def _stage(self, name: str) -> Stage:
        if name not in self.stages:
            self.stages[name] = Stage(name)
            self.stages = {step: self.stages[step] for step in STAGES if step in self.stages}
        return self.stages[name]

    def _end_planning(self, when: float) -> None:
        if self.planning.state == RUNNING:
            self.planning.state, self.planning.ended = SUCCEEDED, max(when, self.planning.started or when)

    def handle(self, event: EventLogEntry) -> None:
        """Take one event of a run: its start or end, a step's plan, start, retry or end, or a step's log line."""
        from dagster import DagsterEventType as Kind

        kind, step = event.dagster_event_type, event.step_key
        started, ended = None, []
        with self._lock:
            if kind == Kind.RUN_START:
                self._end_planning(event.timestamp)
            elif kind in (Kind.RUN_SUCCESS, Kind.RUN_FAILURE, Kind.RUN_CANCELED):
                ended = self._never_started(event)
            elif step in STAGES:
                started, ended = self._step_event(self._stage(step), event)
        if started and self.on_start:
            self.on_start(started)
        for stage in ended if self.on_end else ():
            self.on_end(stage)

    def _never_started(self, event: EventLogEntry) -> list[Stage]:
        """At a run's end, its planned steps that never started (a step upstream failed): skipped."""
        skipped = [self.stages[name] for name in self._planned.pop(event.run_id, ())]
        skipped = [stage for stage in skipped if stage.state == WAITING]
        for stage in skipped:
            stage.state, stage.ended, stage.note = SKIPPED, event.timestamp, stage.note or "not run"
        return skipped

    def _step_event(self, stage: Stage, event: EventLogEntry) -> tuple[str | None, list[Stage]]:
        """Apply a step's event to its row: (its name when it starts for the first time, [it] when it ends)."""
        from dagster import DagsterEventType as Kind

        kind = event.dagster_event_type
        if kind == Kind.ASSET_MATERIALIZATION_PLANNED:
            self._planned.setdefault(event.run_id, set()).add(stage.name)
            planned = event.get_dagster_event().asset_materialization_planned_data
            if planned.partition is not None:
                stage.classes.add(planned.partition)
            elif planned.partitions_subset is not None:
                stage.classes.update(planned.partitions_subset.get_partition_keys())
        elif kind in (Kind.STEP_START, Kind.STEP_RESTARTED):
            self._end_planning(event.timestamp)
            first = stage.started is None
            stage.state, stage.ended = RUNNING, None
            stage.started = event.timestamp if first else stage.started
            return (stage.name if first else None), []
        elif kind == Kind.STEP_UP_FOR_RETRY:
            stage.state, stage.note = RETRYING, "failed, to be retried"
        elif kind in (Kind.STEP_SUCCESS, Kind.STEP_FAILURE, Kind.STEP_SKIPPED):
            stage.ended = event.timestamp
            if kind == Kind.STEP_SUCCESS:
                stage.state = SUCCEEDED
            elif kind == Kind.STEP_FAILURE:
                stage.state, stage.note = FAILED, _failure(event)
            else:
                stage.state, stage.note = SKIPPED, "nothing upstream to compute it from this time"
            return None, [stage]
        elif kind is None and event.level >= logging.INFO and event.user_message.strip():
            stage.note = event.user_message.strip().splitlines()[0].removeprefix(f"{stage.name}: ")
        return None, []

    def count(self, step: str, done: int, total: int, now: float | None = None) -> None:
        """Spark tasks of the step so far: `done` of `total` submitted."""
        now = self.clock() if now is None else now
        with self._lock:
            stage = self._stage(step)
            stage.done, stage.total = done, total
            stage.samples.append((now, done))

    def finish(self, error: str | None = None, ran: bool = True) -> None:
        """The job is over: a planning row still open ends failed (`error`), or with nothing to run."""
        with self._lock:
            if self.planning.state == RUNNING:
                self._end_planning(self.clock())
                if error:
                    self.planning.state, self.planning.note = FAILED, error
                elif not ran:
                    self.planning.note = "nothing to run: every output is up to date"

    def running(self) -> list[str]:
        with self._lock:
            return [name for name, stage in self.stages.items() if stage.state in (RUNNING, RETRYING)]

    def rows(self, now: float | None = None) -> list[dict[str, Any]]:
        """Each row's fields as a person reads them: name, classes, state, Spark tasks, rate, elapsed, time left,
        note."""
        now = self.clock() if now is None else now
        with self._lock:
            stages = [self.planning, *self.stages.values()]
            return [
                {
                    "name": stage.name,
                    "classes": f"{len(stage.classes):,} class{'es' if len(stage.classes) > 1 else ''}"
                    if stage.classes
                    else "",
                    "state": stage.state,
                    "done": stage.done,
                    "total": stage.total,
                    "tasks": f"{stage.done:,}/{stage.total:,} tasks" if stage.total else "",
                    "rate": f"{rate:.1f} tasks/s"
                    if stage.state in (RUNNING, RETRYING) and stage.total and (rate := stage.rate(now)) is not None
                    else "",
                    "elapsed": duration_text(elapsed) if (elapsed := stage.elapsed(now)) is not None else "",
                    "left": f"~{duration_text(left)} left" if (left := stage.left(now)) is not None else "",
                    "note": stage.note or ("waiting" if stage.state == WAITING else ""),
                }
                for stage in stages
            ]


def plain_line(stage: Stage) -> str:
    """The line a stage's end prints where no display is drawn (a pipe, CI, tests)."""
    elapsed = stage.elapsed(stage.ended or 0.0)
    took = f" in {elapsed:.1f} s" if elapsed is not None else ""
    tasks = f", {stage.done:,} of {stage.total:,} Spark tasks" if stage.total else ""
    note = f": {stage.note}" if stage.note and stage.state in (FAILED, SKIPPED) else ""
    return f"fruits: {stage.name} {stage.state}{took}{tasks}{note}"


class SparkTasks:
    """Spark tasks of a job group (a step's name), done of those submitted, from Spark's status tracker.

    Stages counted are those that ran (a task done or running): a stage skipped because its shuffle output exists
    never runs, and each stage is counted once however many jobs share it. Jobs of the group already there when
    the step started (an earlier run in this process, on the same session) are not this step's."""

    ENDED = ("SUCCEEDED", "FAILED")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._earlier: dict[str, set[int]] = {}
        self._job_stages: dict[int, list[int]] = {}
        """Stages of the jobs that ended."""
        self._stage_counts: dict[int, tuple[int, int]] = {}
        """Final (done, total) of the stages of jobs that ended."""

    @staticmethod
    def _tracker() -> Any:
        """The running session's status tracker, or None while there is none (never starts one)."""
        from pyspark import SparkContext

        context = SparkContext._active_spark_context
        if context is None or getattr(context, "_jsc", None) is None:
            return None
        return context.statusTracker()

    def begin(self, group: str) -> None:
        """A step of this name starts: the group's jobs run so far are not its."""
        try:
            tracker = self._tracker()
            earlier = set(tracker.getJobIdsForGroup(group)) if tracker else set()
        except Exception:  # noqa: BLE001 - a session starting or stopping: no jobs to leave out
            earlier = set()
        with self._lock:
            self._earlier.setdefault(group, earlier)

    def count(self, group: str) -> tuple[int, int] | None:
        """(tasks done, tasks submitted) of the group's jobs since it began; None without a session."""
        tracker = self._tracker()
        if tracker is None:
            return None
        with self._lock:
            stages: set[int] = set()
            ended: set[int] = set()
            for job in tracker.getJobIdsForGroup(group):
                if job in self._earlier.get(group, ()):
                    continue
                if job not in self._job_stages:
                    info = tracker.getJobInfo(job)
                    if info is None:
                        continue
                    if info.status in self.ENDED:
                        self._job_stages[job] = list(info.stageIds)
                    else:
                        stages.update(info.stageIds)
                        continue
                stages.update(self._job_stages[job])
                ended.update(self._job_stages[job])
            done = total = 0
            for stage_id in sorted(stages):
                if stage_id in self._stage_counts:
                    stage_done, stage_total = self._stage_counts[stage_id]
                else:
                    info = tracker.getStageInfo(stage_id)
                    ran = info is not None and (info.numCompletedTasks or info.numActiveTasks)
                    stage_done, stage_total = (
                        (min(info.numCompletedTasks, info.numTasks), info.numTasks) if ran else (0, 0)
                    )
                    if stage_id in ended and info is not None:
                        self._stage_counts[stage_id] = (stage_done, stage_total)
                done, total = done + stage_done, total + stage_total
            return done, total


class RedirectedOutput:
    """File descriptors 1 and 2, sys.stdout and sys.stderr, into a log file for the block; `stdout` and `stderr`
    write where they wrote before (the terminal), for the display."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stdout: IO[str] = sys.stdout
        self.stderr: IO[str] = sys.stderr
        self._opened: list[IO[str]] = []

    def _before(self, stream: IO[str], fd: int) -> IO[str]:
        """Where `stream` writes once fd `fd` points to the log: a copy of the fd it wrote to, or itself when it
        never wrote to that fd (pytest's capture, a StringIO)."""
        try:
            writes_to_fd = stream.fileno() == fd
        except (AttributeError, OSError, ValueError):
            writes_to_fd = False
        if not writes_to_fd:
            return stream
        copy = os.fdopen(
            os.dup(self._saved[fd]), "w", buffering=1, encoding=getattr(stream, "encoding", None), errors="replace"
        )
        self._opened.append(copy)
        return copy

    def __enter__(self) -> RedirectedOutput:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        self._streams = (sys.stdout, sys.stderr)
        for stream in self._streams:
            stream.flush()
        self._saved = {fd: os.dup(fd) for fd in (1, 2)}
        self.stdout, self.stderr = self._before(sys.stdout, 1), self._before(sys.stderr, 2)
        for fd in (1, 2):
            os.dup2(self.log.fileno(), fd)
        sys.stdout = sys.stderr = self.log
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in (sys.stdout, sys.stderr, *self._opened):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        sys.stdout, sys.stderr = self._streams
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        for stream in self._opened:
            stream.close()
        self.log.close()


BAR_WIDTH = 20
ICONS = {WAITING: "·", SUCCEEDED: "✔", FAILED: "✖", SKIPPED: "–", RETRYING: "↻"}
STYLES = {WAITING: "dim", SUCCEEDED: "green", FAILED: "bold red", SKIPPED: "dim", RETRYING: "yellow"}


def render(board: Board, now: float | None = None, spinner: Any = None) -> RenderableType:
    """The rows as a table: state, stage, its classes, bar, Spark tasks, rate, elapsed, time left, latest log line.
    `spinner`: the one rich Spinner of the running rows (it turns with the time since its first frame)."""
    from rich.progress_bar import ProgressBar
    from rich.spinner import Spinner
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    spinner = spinner or Spinner("dots", style="cyan")
    table = Table.grid(padding=(0, 1), expand=True)
    # state, stage, classes, bar, tasks, rate, elapsed, left: widths that hold still while the counts grow
    for justify, width in zip("llrlrrrr", (1, 21, 0, BAR_WIDTH, 13, 12, 4, 11), strict=True):
        table.add_column(justify={"l": "left", "r": "right"}[justify], no_wrap=True, min_width=width)
    table.add_column(ratio=1, no_wrap=True, overflow="ellipsis", style="dim")
    for row in board.rows(now):
        state, done, total = row["state"], row["done"], row["total"]
        active = state in (RUNNING, RETRYING)
        icon = spinner.render(now) if state == RUNNING else Text(ICONS[state], style=STYLES[state])
        if active and not total:
            bar: Any = ProgressBar(total=None, width=BAR_WIDTH, animation_time=now)  # no Spark task yet: pulses
        elif state == SUCCEEDED and row["name"] != PLANNING:
            bar = ProgressBar(total=1, completed=1, width=BAR_WIDTH)
        elif total:
            bar = ProgressBar(total=total, completed=done, width=BAR_WIDTH)
        else:
            bar = Text("")
        name = Text(row["name"], style="bold" if active else STYLES.get(state, ""))
        classes = Text(row["classes"], style="dim")
        table.add_row(icon, name, classes, bar, row["tasks"], row["rate"], row["elapsed"], row["left"], row["note"])
    return table


class RunConsole:
    """The console of one `fruits run`, around the run: the logs into a file and the progress display (or plain
    lines) on the terminal; `--verbose` (`verbose=True`): neither, everything live as it comes.

    `listener` goes to run_main_job; `log_path` is the log file (None when verbose)."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.log_path: Path | None = None if verbose else new_log_path()
        self.tasks = SparkTasks()
        self.board = Board(on_start=self.tasks.begin, on_end=self._ended)
        self.listener: Callable[[EventLogEntry], None] | None = None if verbose else self._listen
        self._live: Any = None
        self._plain = False
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="fruits-progress", daemon=True)
        self._output: RedirectedOutput | None = None

    def _listen(self, event: EventLogEntry) -> None:
        try:
            self.board.handle(event)
        except Exception:  # noqa: BLE001 - the display never fails a run
            logging.getLogger(__name__).debug("progress display: event not shown", exc_info=True)

    def _update(self, step: str) -> None:
        try:
            counted = self.tasks.count(step)
        except Exception:  # noqa: BLE001 - a session starting or stopping: counted at the next poll
            return
        if counted is not None:
            self.board.count(step, *counted)

    def _ended(self, stage: Stage) -> None:
        self._update(stage.name)  # the step's last tasks, done after the last poll
        if self._plain and self._output is not None:
            print(plain_line(stage), file=self._output.stderr, flush=True)

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            for step in self.board.running():
                self._update(step)

    def finish(self, error: str | None = None, ran: bool = True) -> None:
        """The run is over (`error`: why it stopped before running; `ran`: whether anything ran)."""
        self.board.finish(error, ran)

    def __enter__(self) -> RunConsole:
        if self.verbose or self.log_path is None:
            return self
        self._output = RedirectedOutput(self.log_path).__enter__()
        terminal = self._output.stdout.isatty() and self._output.stderr.isatty()
        if terminal:
            from rich.console import Console
            from rich.live import Live
            from rich.spinner import Spinner
            from rich.text import Text

            # rich follows the terminal's width through fd 0 when it is the terminal (fds 1 and 2 are the log's now)
            width = None if os.isatty(0) else os.get_terminal_size(self._output.stderr.fileno()).columns
            console = Console(file=self._output.stderr, width=width)
            console.print(Text(f"Spark's and Dagster's logs: {self.log_path} (--verbose shows them here)", style="dim"))
            spinner = Spinner("dots", style="cyan")
            self._live = Live(
                get_renderable=lambda: render(self.board, spinner=spinner),
                console=console,
                refresh_per_second=4,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        else:
            self._plain = True
        self._poller.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._output is None:
            return
        self._stop.set()
        self._poller.join()
        if self._live is not None:
            self.board.finish(type(error).__name__ if error else None)
            self._live.stop()
        self._output.__exit__(kind, error, trace)
        if kind is not None and not issubclass(kind, SystemExit):
            print(f"fruits: the run's logs are in {self.log_path}", file=sys.stderr)
