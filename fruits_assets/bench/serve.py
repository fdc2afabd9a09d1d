"""`fruits bench serve`: photos per second of `fruits serve` under N concurrent clients, against the bare model's
bound measured in the same run, with latencies and failures. Load goes to 127.0.0.1 only.

The service runs as `fruits serve` in its own process (as in production); the clients are threads of this process
sending each photo's bytes. Bound: bare model images/s (same weights, alpha and size, batched) divided by the model
passes one photo needs (2 with mirror averaging). Then one client alone: the lone request's latency, next to
`fruits predict`'s warm latency on the same photos.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from fruits_assets.bench.common import loadavg, wait_until_healthy
from fruits_assets.bench.featurize import bare_model
from fruits_assets.bench.predict import bench_predict
from spark_code.models.ml_models import published_notes
from spark_code.settings import ModelSettings


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _load(url: str, photos: list[bytes], clients: int, count: int) -> dict[str, Any]:
    """`count` requests from `clients` threads; photos/s, latencies, failures."""
    latencies: list[float] = []
    failures: list[int] = []  # appends are atomic across threads
    local = threading.local()  # one keep-alive connection per client, as an app holds it

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    def one(index: int) -> None:
        started = time.perf_counter()
        try:
            ok = session().post(f"{url}/v1/predict", data=photos[index % len(photos)], timeout=120).status_code == 200
        except requests.RequestException:
            ok = False
        latencies.append((time.perf_counter() - started) * 1000)
        if not ok:
            failures.append(index)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(count)))
    seconds = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": count,
        "seconds": round(seconds, 2),
        "photos_per_s": round(count / seconds, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "failures": len(failures),
    }


def bench_serve(output_root: str, photo_files: list[Path], clients: int, count: int) -> dict[str, Any]:
    notes = published_notes(f"{output_root.rstrip('/')}/fruit_classifier") or {}
    settings = ModelSettings(**{"flip_average": False, **notes.get("embedding", {})})
    passes = 2 if settings.flip_average else 1
    result: dict[str, Any] = {"loadavg_before": loadavg(), "photos": len(photo_files)}
    # The bare model's images/s: one pass per image (mirror averaging off), as many images per call as the pipeline.
    sample = photo_files * max(1, 320 // len(photo_files))
    bare_rate = len(sample) / bare_model(sample, replace(settings, flip_average=False))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "fruits_assets.cli", "serve", "--output-root", output_root, "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_healthy(url)
        photos = [path.read_bytes() for path in photo_files]
        _load(url, photos, clients, min(count, 4 * clients))  # warm-up
        loaded = _load(url, photos, clients, count)
        alone = _load(url, photos, 1, min(count, 100))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    predict = bench_predict(output_root, photo_files[:100])
    bound = bare_rate / passes
    return result | {
        "bare_model_images_per_s": round(bare_rate, 1),
        "model_passes_per_photo": passes,
        "bound_photos_per_s": round(bound, 1),
        "under_load": loaded,
        "ratio_to_bound": round(loaded["photos_per_s"] / bound, 3),
        "one_client": alone,
        "fruits_predict_warm": predict,
        "loadavg_after": loadavg(),
    }
