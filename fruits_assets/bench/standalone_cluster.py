"""A Spark standalone cluster (one master, N workers) on 127.0.0.1, started from pyspark's own `bin/spark-class`.

It is the real distributed engine available without a cloud: executors in separate JVMs, Python workers
in separate processes, tasks retried when a worker dies. Tests and `fruits bench scale` use it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
"""How long the master and workers together get to exit on SIGTERM before SIGKILL (20 s for each in turn before:
up to a minute for three JVMs)."""


class ClusterStartError(RuntimeError):
    """The master or a worker did not come up; the message holds the tail of its log."""


def free_ports(count: int) -> list[int]:
    """Distinct free ports: every socket stays bound until all are picked, so no port is handed out twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _spark_class() -> str:
    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


@dataclass
class StandaloneCluster:
    """Handles on the running daemons; each daemon leads its own process group (executors and Python workers too)."""

    master_url: str
    web_url: str
    log_dir: Path
    master: subprocess.Popen
    env: dict[str, str]
    cores_per_worker: int
    memory_per_worker: str
    workers: list[subprocess.Popen] = field(default_factory=list)

    def alive_workers(self) -> int:
        """ALIVE workers as the master reports them on its JSON endpoint."""
        with urllib.request.urlopen(f"{self.web_url}/json/", timeout=5) as response:
            state = json.load(response)
        return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")

    def start_worker(self, index: int) -> None:
        """Start worker `index` again after `kill_worker`, and wait until the master counts it."""
        expected = sum(1 for process in self.workers if process.poll() is None) + 1
        self._launch_worker(index)
        self._wait_for_workers(expected)

    def _wait_for_workers(self, count: int) -> None:
        log = self.log_dir / "worker-0.log"
        _wait_for(lambda: self.alive_workers() >= count, f"{count} Spark worker(s)", log, self.master)

    def _launch_worker(self, index: int) -> None:
        work_dir = self.log_dir / f"worker-{index}"
        work_dir.mkdir(exist_ok=True)
        log = self.log_dir / f"worker-{index}.log"
        arguments = [
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--cores",
            str(self.cores_per_worker),
            "--memory",
            self.memory_per_worker,
            "--work-dir",
            str(work_dir),
            "--webui-port",
            "0",
            self.master_url,
        ]
        process = _start(arguments, log, self.env)
        if index < len(self.workers):
            self.workers[index] = process
        else:
            self.workers.append(process)

    def worker_of(self, app_id: str, executor_id: str) -> int | None:
        """The index of the worker that launched an application's executor (its work folder holds the executor's),
        or None when no worker did."""
        for index in range(len(self.workers)):
            if (self.log_dir / f"worker-{index}" / app_id / executor_id).is_dir():
                return index
        return None

    def kill_worker(self, index: int) -> None:
        """SIGKILL a worker with its executor and Python workers, as when a node is lost."""
        process = self.workers[index]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM to every process group, then SIGKILL to those still there STOP_TIMEOUT_S later."""
        processes = [*self.workers, self.master]
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _start(arguments: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [_spark_class(), *arguments], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _wait_for(condition: Callable[[], bool], what: str, log: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if condition():
                return
        except (OSError, ValueError):
            # Not up yet: refused, or the web UI serves its HTML page before the /json/ handler is attached.
            pass
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise ClusterStartError(f"{what} did not start within {STARTUP_TIMEOUT_S:.0f} s; log {log}:\n{tail}")


@contextmanager
def standalone_cluster(
    workers: int, log_dir: Path, cores_per_worker: int = 1, memory_per_worker: str = "3g"
) -> Iterator[StandaloneCluster]:
    """Start a master and `workers` workers on 127.0.0.1; stop them all on exit, whatever happened."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
    port, web_port = free_ports(2)
    master_log = log_dir / "master.log"
    master = _start(
        [
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(web_port),
        ],
        master_log,
        env,
    )
    cluster = StandaloneCluster(
        f"spark://127.0.0.1:{port}",
        f"http://127.0.0.1:{web_port}",
        log_dir,
        master,
        env,
        cores_per_worker,
        memory_per_worker,
    )
    try:
        _wait_for(lambda: cluster.alive_workers() >= 0, "the Spark master", master_log, master)
        for index in range(workers):
            cluster._launch_worker(index)
        cluster._wait_for_workers(workers)
        yield cluster
    finally:
        cluster.stop()
