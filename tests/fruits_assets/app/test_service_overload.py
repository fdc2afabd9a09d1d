"""The service under overload, against a real uvicorn server and the models of a real run: the queue and the bytes
in flight are bounded (503 with Retry-After past them, nothing lost, normal answers afterwards), liveness and
readiness fail while the model thread is stuck, and a state is logged once, not at every poll."""

from __future__ import annotations

import logging
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from fruits_assets.app.models_watch import ModelWatcher
from fruits_assets.app.service import create_app
from fruits_assets.cli.main import _parser
from fruits_assets.cli.serve import build_server
from tests.fruits_assets.app.served import free_port
from tests.fruits_assets.app.serving import Serving, model_thread_held, wait_until
from tests.images_factory import encoded


@pytest.fixture(scope="module")
def photo(small_root) -> bytes:
    return next((small_root / "Test" / "Kiwi").iterdir()).read_bytes()


def _metric(url: str, name: str) -> float:
    lines = requests.get(f"{url}/metrics", timeout=10).text.splitlines()
    return float(next(line for line in lines if line.startswith(f"{name} ")).split()[-1])


def test_a_full_queue_is_answered_503_with_retry_after_at_once_and_none_is_lost(trained_run, photo):
    """With the model thread held, 2 photos fill the queue: the 6 others are refused at once (503, Retry-After),
    the 2 admitted are answered once the model thread is free, and the service answers normally afterwards."""
    app = create_app(str(trained_run[1]), max_queue=2, poll_seconds=0.5)
    with Serving(app) as served, ThreadPoolExecutor(8) as pool:
        served.wait_ready()
        expected = served.predict(photo).json()
        with model_thread_held(app):
            admitted = [pool.submit(served.predict, photo) for _ in range(2)]
            wait_until(lambda: _metric(served.url, "fruits_queued_photos") == 2)
            started = time.monotonic()
            refused = list(pool.map(lambda _: served.predict(photo), range(6)))
            assert time.monotonic() - started < 5, "a full service answers at once"
            assert [r.status_code for r in refused] == [503] * 6
            assert all(r.headers["Retry-After"] == "1" and "busy" in r.json()["error"] for r in refused)
            assert not any(f.done() for f in admitted)
        assert [f.result().json() for f in admitted] == [expected] * 2
        assert _metric(served.url, "fruits_queued_photos") == 0
        assert served.predict(photo).json() == expected


def test_the_bytes_in_flight_are_bounded(trained_run, small_root):
    """Bodies held at once stay under max_inflight_bytes: one past it is refused 503 by its Content-Length (never
    read), or while read when it has none; the budget is whole again once the requests are answered."""
    banana = np.asarray(Image.open(next((small_root / "Test" / "Banana").iterdir())).convert("RGB").resize((500, 500)))
    grain = np.random.default_rng(0).integers(
        0, 16, banana.shape, dtype=np.uint8
    )  # a camera's noise: no PNG shrinks it
    big = encoded(Image.fromarray(banana ^ grain), "PNG")
    assert 400_000 < len(big) < 600_000
    app = create_app(str(trained_run[1]), max_bytes=600_000, max_inflight_bytes=700_000, poll_seconds=0.5)
    with Serving(app) as served, ThreadPoolExecutor(4) as pool:
        served.wait_ready()
        with model_thread_held(app):
            first = pool.submit(served.predict, big)
            wait_until(lambda: _metric(served.url, "fruits_inflight_bytes") == len(big))
            second = served.predict(big)
            assert second.status_code == 503 and second.headers["Retry-After"] == "1"

            def chunks():  # no Content-Length: refused once what it sent passes the budget
                for start in range(0, len(big), 65_536):
                    yield big[start : start + 65_536]

            streamed = served.predict(chunks())
            assert streamed.status_code == 503 and "retry" in streamed.json()["error"]
            small = encoded(Image.open(next((small_root / "Test" / "Kiwi").iterdir())), "PNG")
            held_small = pool.submit(served.predict, small)  # still room for a small photo
            wait_until(lambda: _metric(served.url, "fruits_inflight_bytes") == len(big) + len(small))
        assert first.result().status_code == 200 and held_small.result().status_code == 200
        assert _metric(served.url, "fruits_inflight_bytes") == 0
        assert served.predict(big).status_code == 200


def test_liveness_and_readiness_fail_while_the_model_thread_is_stuck(trained_run, photo, caplog):
    """A model call past the answer timeout: the request gets 503, /livez, /readyz and /healthz 503 ("stuck"),
    logged once however often they are probed; once the thread answers, all are 200 again."""
    app = create_app(str(trained_run[1]), answer_timeout_s=1.0, poll_seconds=0.5)
    with Serving(app) as served:
        served.wait_ready()
        caplog.set_level(logging.INFO, logger="fruits.serve")
        with model_thread_held(app):
            hung = served.predict(photo)
            assert hung.status_code == 503 and "did not answer in time" in hung.json()["error"]
            time.sleep(0.2)
            for _ in range(5):
                for probe in ("livez", "readyz", "healthz"):
                    response = requests.get(f"{served.url}/{probe}", timeout=5)
                    assert response.status_code == 503, probe
                    assert response.json()["status"] == "stuck" and response.headers["Retry-After"]
        wait_until(lambda: requests.get(f"{served.url}/livez", timeout=5).status_code == 200)
        assert requests.get(f"{served.url}/healthz", timeout=5).json()["status"] == "ok"
        assert served.predict(photo).status_code == 200
    said = [r.getMessage() for r in caplog.records if r.name == "fruits.serve" and r.levelno >= logging.WARNING]
    assert len([m for m in said if "stuck" in m]) == 1 and len([m for m in said if "answers again" in m]) == 1


def test_liveness_is_200_before_a_model_while_readiness_is_503(tmp_path):
    app = create_app(str(tmp_path / "nothing"), poll_seconds=0.2)
    with Serving(app) as served:
        assert requests.get(f"{served.url}/livez", timeout=5).json() == {"status": "alive", "queued": 0}
        ready = requests.get(f"{served.url}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["status"] == "starting" and ready.headers["Retry-After"]


def test_a_classifier_waiting_for_its_evaluation_is_logged_once_not_at_every_poll(trained_copy, tmp_path, caplog):
    """Published without its evaluation yet: the watch says so once over many polls, serves it once the evaluation
    is published, and says so again only if the state comes back."""
    root = trained_copy
    evaluation = root / "classifier_evaluation"
    shutil.move(evaluation, tmp_path / "evaluation")
    watcher = ModelWatcher(str(root), poll_seconds=0.05)
    caplog.set_level(logging.INFO, logger="fruits.serve")
    for _ in range(5):
        assert watcher.refresh() is False
    shutil.move(tmp_path / "evaluation", evaluation)
    assert watcher.refresh() is True
    said = [r.getMessage() for r in caplog.records if r.name == "fruits.serve"]
    assert len([m for m in said if "no published evaluation yet" in m]) == 1, said
    assert any(m.startswith("serving classifier") for m in said)


def test_fruits_serve_holds_at_most_limit_concurrency_connections(trained_run):
    """`fruits serve --limit-concurrency 3`: with 3 connections open, a 4th is answered 503 by uvicorn; once they
    close, requests are answered again."""
    port = free_port()
    args = _parser().parse_args(
        ["serve", "--output-root", str(trained_run[1]), "--port", str(port), "--limit-concurrency", "3"]
    )
    with Serving(server=build_server(args)) as served:
        assert served.server.config.limit_concurrency == 3
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        time.sleep(0.3)
        try:
            assert requests.get(f"{served.url}/livez", timeout=10).status_code == 503
        finally:
            for sock in idle:
                sock.close()
        wait_until(lambda: requests.get(f"{served.url}/livez", timeout=10).status_code == 200)
