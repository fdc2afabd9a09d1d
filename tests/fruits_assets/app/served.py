"""The app's service under test: uvicorn serving it in a thread of the test process, on a free port of 127.0.0.1."""

import socket
import threading
import time
from pathlib import Path

import requests
import uvicorn

from fruits_assets.app.service import create_app

MAX_BYTES = 2_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """uvicorn serving the app in a thread of this process."""

    def __init__(self, output_root: Path, poll_seconds: float = 0.5) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        app = create_app(str(output_root), max_bytes=MAX_BYTES, poll_seconds=poll_seconds)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1])))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError("the service did not become healthy")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def predict(self, data: bytes, **kwargs) -> requests.Response:
        return requests.post(f"{self.url}/v1/predict", data=data, timeout=60, **kwargs)
