"""`fruits bench overload`: `fruits serve` under more clients than it can answer, on 127.0.0.1 only, bounded in
clients and seconds: its memory over time, every answer's status (200 or 503, with Retry-After), requests lost
(sent and never answered), and whether it answers normally afterwards (the same answers as before the load).

The service runs as `fruits serve` in its own process; the clients are asyncio connections of this process (one
keep-alive connection each, one request at a time, a new connection when the server closed one), so that a few
hundred clients cost this process little CPU. One client in `large_every` sends a large photo (a real photo
enlarged to about 1-2 MB) so that the bytes in flight are bounded too, not only the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

from fruits_assets.bench.common import loadavg, wait_until_healthy

HOST = "127.0.0.1"
"""The only address this benchmark sends to."""
MAX_CLIENTS = 1000
MAX_SECONDS = 120.0
REQUEST_TIMEOUT_S = 90.0
"""Longer than the service's answer timeout (60 s): a request without an answer by then is lost."""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int) -> float | None:
    """The process's resident memory (VmRSS) in MB, None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def large_photo(data: bytes, side: int = 2000) -> bytes:
    """A real photo enlarged to a phone photo's size and bytes (about 1.5 MB): the bytes in flight count."""
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((side, side)))
    grain = np.random.default_rng(0).integers(0, 24, pixels.shape, dtype=np.uint8)  # a sensor's noise, as in a phone's
    buffer = io.BytesIO()
    Image.fromarray(pixels ^ grain).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


class Tally:
    """What the clients saw; touched from the event loop only."""

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.latencies: dict[int, list[float]] = {}
        self.without_retry_after = 0
        """503s that did not say when to retry."""
        self.lost: list[str] = []
        """Requests sent and never answered (a timeout, a connection closed before the answer)."""
        self.reconnects = 0

    def answered(self, status: int, seconds: float, headers: dict[str, str]) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.setdefault(status, []).append(seconds * 1000)
        if status == 503 and "retry-after" not in headers:
            self.without_retry_after += 1


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> tuple[int, dict[str, str], bool]:
    """One request on an open connection: (status, headers, whether the server keeps the connection)."""
    writer.write(head + body)
    with contextlib.suppress(ConnectionError):  # the server answered before reading the body and closed
        await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed before an answer")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, headers.get("connection", "").lower() != "close"


async def _client(port: int, body: bytes, deadline: float, tally: Tally) -> None:
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        started = loop.time()
        try:
            if connection is None:
                connection = await asyncio.wait_for(asyncio.open_connection(HOST, port), REQUEST_TIMEOUT_S)
            status, headers, keep = await asyncio.wait_for(_exchange(*connection, head, body), REQUEST_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            tally.lost.append(f"{type(exc).__name__}: {exc}")
            keep = False
        else:
            tally.answered(status, loop.time() - started, headers)
            if status == 503:  # as a client told when to retry does (at most 1 s here, to keep the load up)
                await asyncio.sleep(min(1.0, float(headers.get("retry-after", "1"))))
        if not keep and connection is not None:
            connection[1].close()
            connection = None
            tally.reconnects += 1
    if connection is not None:
        connection[1].close()


async def _load(port: int, bodies: list[bytes], clients: int, seconds: float) -> Tally:
    tally = Tally()
    deadline = asyncio.get_running_loop().time() + seconds
    await asyncio.gather(*(_client(port, bodies[i % len(bodies)], deadline, tally) for i in range(clients)))
    return tally


def _answers(url: str, photos: list[bytes]) -> list[tuple[int, Any]]:
    out = []
    for data in photos:
        response = requests.post(f"{url}/v1/predict", data=data, timeout=120)
        out.append((response.status_code, response.json().get("top")))
    return out


def bench_overload(
    output_root: str,
    photo_files: list[Path],
    clients: int = 300,
    seconds: float = 30.0,
    large_every: int = 10,
    serve_args: list[str] | None = None,
    service_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the load and return its figures; `serve_args` go to `fruits serve` (its limits), `service_dir` runs the
    service of another checkout (an older commit, for a before/after)."""
    if not 1 <= clients <= MAX_CLIENTS or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"at most {MAX_CLIENTS} clients and {MAX_SECONDS:.0f} s: this is a bounded load")
    photos = [path.read_bytes() for path in photo_files]
    bodies = list(photos)
    if large_every:
        large = large_photo(photos[0])
        bodies = [large if i % large_every == 0 else photos[i % len(photos)] for i in range(clients)]
    port = _free_port()
    url = f"http://{HOST}:{port}"
    command = [sys.executable, "-m", "fruits_assets.cli", "serve", "--output-root", output_root]
    command += ["--host", HOST, "--port", str(port), *(serve_args or [])]
    log_file = tempfile.NamedTemporaryFile(prefix="fruits-bench-overload-", suffix=".log", delete=False)  # noqa: SIM115 - the server's, read after it stopped
    cwd = service_dir or Path.cwd()
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    server = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True
    )
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    result: dict[str, Any] = {
        "loadavg_before": loadavg(),
        "clients": clients,
        "seconds": seconds,
        "photos": len(photos),
    }
    try:
        wait_until_healthy(url)
        before = _answers(url, photos[:20])
        rss_before = _rss_mb(server.pid)

        def sample() -> None:
            started = time.monotonic()
            while not stop.is_set():
                rss = _rss_mb(server.pid)
                if rss is not None:
                    samples.append((time.monotonic() - started, rss))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        tally = asyncio.run(_load(port, bodies, clients, seconds))
        wall = time.monotonic() - started
        stop.set()
        sampler.join(5)
        drained = time.monotonic()
        while requests.get(f"{url}/readyz", timeout=10).json().get("queued", 0) and time.monotonic() - drained < 60:
            time.sleep(0.2)
        after = _answers(url, photos[:20])
        rss_after = _rss_mb(server.pid)
        metrics = requests.get(f"{url}/metrics", timeout=10).text
    finally:
        stop.set()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        log_file.close()
    answered = sum(tally.statuses.values())
    rss = [value for _, value in samples]
    warm = [value for t, value in samples if t >= 5.0] or rss
    logged = Path(log_file.name).read_text(errors="replace").splitlines()
    return result | {
        "large_photo_bytes": len(bodies[0]) if large_every else None,
        "wall_s": round(wall, 1),
        "requests_answered": answered,
        "answered_per_s": round(answered / wall, 1),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "other_statuses": sum(v for k, v in tally.statuses.items() if k not in (200, 503)),
        "503_without_retry_after": tally.without_retry_after,
        "lost": len(tally.lost),
        "lost_examples": sorted(set(tally.lost))[:3],
        "reconnects": tally.reconnects,
        "latency_ms": {
            str(status): {"p50": round(statistics.median(v), 1), "p99": round(_percentile(v, 0.99), 1)}
            for status, v in sorted(tally.latencies.items())
        },
        "rss_mb": {
            "before": round(rss_before or 0, 1),
            "peak": round(max(rss), 1) if rss else None,
            "at_5s": round(warm[0], 1) if warm else None,
            "at_end": round(rss[-1], 1) if rss else None,
            "after": round(rss_after or 0, 1),
            "every_5s": [round(value, 1) for t, value in samples if abs(t - round(t / 5) * 5) < 0.26],
        },
        "after_load": {
            "requests": len(after),
            "all_200": all(status == 200 for status, _ in after),
            "same_answers_as_before": after == before,
        },
        "model_calls": _metric(metrics, "fruits_batch_photos_count"),
        "photos_through_the_model": _metric(metrics, "fruits_batch_photos_sum"),
        "log_lines": len(logged),
        "log_warnings": sum(" WARNING " in line or " ERROR " in line for line in logged),
        "loadavg_after": loadavg(),
    }


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[-1])
    return None
