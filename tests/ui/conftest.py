"""Fixtures of the browser test: `dagster dev` on a few real classes, and Debian's Chromium driven by Playwright.

Nothing is downloaded: the browser is the system's /usr/bin/chromium (`.ci/run` installs it), never Playwright's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import WEIGHTS, copy_sample

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
UI_CLASSES = ["Apple Braeburn", "Banana", "Kiwi"]
UI_IMAGES_PER_SPLIT = {"Training": 3, "Test": 2}
SERVER_START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 5
"""`dagster dev` took its whole 20 s to stop on SIGTERM before; nothing of it is kept, so SIGKILL comes sooner."""
UI_TIMEOUT_MS = 30_000
INSTANCE_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
"""No telemetry from tests, and no "Join the Dagster community" dialog covering the pages."""

expect.set_options(timeout=UI_TIMEOUT_MS)


@dataclass(frozen=True)
class DagsterDev:
    """A running `dagster dev`: where to reach it and where it logs."""

    url: str
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(server: DagsterDev, process: subprocess.Popen) -> None:
    """Poll /server_info until the webserver answers; fail early, with its log, if `dagster dev` exits."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with code {process.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{server.url}/server_info", timeout=5) as response:
            if response.status == 200:
                return
        time.sleep(0.25)
    pytest.fail(f"dagster dev did not answer within {SERVER_START_TIMEOUT_S} s:\n{server.log_tail()}")


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop `dagster dev` and all it started (webserver, daemon, code server, runs, Spark's JVM): SIGTERM to its
    process group for a clean shutdown, then SIGKILL to whatever is left of the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def ui_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Screenshots and the server log: $FRUITS_UI_ARTIFACTS (e.g. a CI artifacts folder), else pytest's tmp dir."""
    configured = os.environ.get("FRUITS_UI_ARTIFACTS")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("ui-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def dagster_dev(
    shared_root: Path, tmp_path_factory: pytest.TempPathFactory, ui_artifacts: Path
) -> Iterator[DagsterDev]:
    """`dagster dev` from the repository, as a person starts it, on a temporary instance and a few real classes."""
    tmp = tmp_path_factory.mktemp("dagster-dev")
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    images = copy_sample(shared_root, tmp / "images", UI_CLASSES, UI_IMAGES_PER_SPLIT)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FRUITS_IMAGES_ROOT": str(images),
        "FRUITS_OUTPUT_ROOT": str(tmp / "output"),
        "FRUITS_MODEL_WEIGHTS": str(WEIGHTS),
        "FRUITS_MODEL_ALPHA": "0.35",
        # The test launches its run by hand; automatic runs would compete with it (automation: test_automation).
        "FRUITS_AUTOMATION": "off",
    }
    port = free_port()
    server = DagsterDev(url=f"http://127.0.0.1:{port}", log=ui_artifacts / "dagster-dev.log")
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1"]
    with server.log.open("w") as log:
        process = subprocess.Popen(
            [*command, "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_server(server, process)
            yield server
        finally:
            stop_process_group(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    context.set_default_timeout(UI_TIMEOUT_MS)
    context.set_default_navigation_timeout(2 * UI_TIMEOUT_MS)
    yield context.new_page()
    context.close()
