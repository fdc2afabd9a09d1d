"""A service app (with its own limits) served by uvicorn in a thread of the test process, on a free port of
127.0.0.1, and a way to hold its model thread busy: the real thread, blocked, as a hung model call would."""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections.abc import Callable, Iterator

import requests
import uvicorn
from fastapi import FastAPI

from tests.fruits_assets.app.served import free_port


class Serving:
    """uvicorn serving `app` (or a prepared server) in a thread; `url` once it answers /livez."""

    def __init__(self, app: FastAPI | None = None, server: uvicorn.Server | None = None) -> None:
        self.server = server or uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port()))
        self.app = self.server.config.app
        self.url = f"http://127.0.0.1:{self.server.config.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Serving:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{self.url}/livez", timeout=5).status_code in (200, 503):
                    return self
            time.sleep(0.1)
        raise AssertionError("the service did not start")

    def wait_ready(self, seconds: float = 120) -> Serving:
        deadline = time.monotonic() + seconds
        while requests.get(f"{self.url}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "no model served"
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def predict(self, data: bytes, **kwargs: object) -> requests.Response:
        return requests.post(f"{self.url}/v1/predict", data=data, timeout=60, **kwargs)


@contextlib.contextmanager
def model_thread_held(app: FastAPI) -> Iterator[threading.Event]:
    """The service's one model thread busy until the block ends (or the event is set): each model call waits
    behind it, as behind a model call that hangs."""
    release = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(120)

    batcher = getattr(app.state, "batcher", None)
    if batcher is None:  # an app that does not expose it (before it did): the one its predict endpoint uses
        route = next(r for r in app.routes if getattr(r, "path", "") == "/v1/predict")
        batcher = inspect.getclosurevars(route.endpoint).nonlocals["batcher"]
    batcher.executor.submit(hold)
    assert started.wait(10)
    try:
        yield release
    finally:
        release.set()


def wait_until(condition: Callable[[], object], seconds: float = 30) -> None:
    """Poll `condition` (a callable) until it holds, failing after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
