"""`fruits serve`: the HTTP API and page that name the fruit in a photo (FastAPI on uvicorn).

Concurrent requests are batched: each photo is decoded on a pool of threads, then waits in a queue, and one worker
thread runs the model on everything that arrived while the previous batch ran (plus a short, bounded wait), so the
event loop never blocks on decoding or the model, and 16 clients share model calls instead of queueing one photo at
a time. A batch is answered by one served model
(models_watch), so no request mixes a new PCA with an old classifier.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from fruits_assets.app.fruit_facts import facts_for
from fruits_assets.app.models_watch import ModelWatcher, ServedModel
from spark_code.images import ImageDecodeError

log = logging.getLogger("fruits.serve")

MAX_BYTES = 10 * 1024 * 1024
MAX_BATCH = 32
MAX_WAIT_S = 0.002
"""How long the first photo of a batch waits for others under load (never when the last call held one photo)."""


class PhotoError(Exception):
    """A request whose photo cannot be answered: its status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_status(error: ImageDecodeError) -> int:
    """400 for an empty photo, 415 for bytes that are no image format, 422 for an image that cannot be decoded
    (truncated, corrupt, a decompression bomb)."""
    message = str(error)
    if message == "empty file":
        return 400
    return 415 if message.startswith("not an image") else 422


ANSWER_TIMEOUT_S = 60.0
"""The longest a request waits for the model before it is answered 503 (a model thread that stopped answering)."""


class Batcher:
    """Decodes photos on a pool of threads (one per core), then runs the model on batches of the decoded photos
    waiting, in one model thread.

    A photo's own decoding error fails its request alone; a failed model call fails the requests of its batch. The
    photos of a batch are answered by one served model, decoded at its input size (a photo decoded for a model that
    was replaced meanwhile is decoded again for the new one).
    """

    def __init__(
        self, watcher: ModelWatcher, max_batch: int = MAX_BATCH, max_wait: float = MAX_WAIT_S, decoders: int = 0
    ) -> None:
        self.watcher = watcher
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue: asyncio.Queue[tuple[bytes, np.ndarray, asyncio.Future]] = asyncio.Queue()
        self.decoder = ThreadPoolExecutor(decoders or os.cpu_count() or 1, thread_name_prefix="fruits-decode")
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="fruits-model")
        self.batch_sizes: Histogram | None = None
        self._last_size = 0

    async def predict(self, data: bytes) -> tuple[np.ndarray, ServedModel]:
        """The photo's probabilities and the model that gave them; ImageDecodeError for a photo that does not
        decode, PhotoError 503 when no model is served or the model does not answer in time."""
        served = self.watcher.current
        if served is None:
            raise PhotoError(503, self.watcher.problem)
        loop = asyncio.get_running_loop()
        array = await loop.run_in_executor(self.decoder, served.predictor.prepare, data)
        future = loop.create_future()
        await self.queue.put((data, array, future))
        try:
            return await asyncio.wait_for(future, ANSWER_TIMEOUT_S)
        except asyncio.TimeoutError as exc:  # TimeoutError on Python 3.11+, its own class on 3.10
            raise PhotoError(503, "the model did not answer in time") from exc

    async def _next_batch(self) -> list[tuple[bytes, np.ndarray, asyncio.Future]]:
        batch = [await self.queue.get()]
        # Wait for companions only under load (the last call held several photos): a lone request never waits.
        deadline = asyncio.get_running_loop().time() + (self.max_wait if self._last_size > 1 else 0.0)
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    @staticmethod
    def _answer(served: ServedModel, photos: list[tuple[bytes, np.ndarray]]) -> list[np.ndarray]:
        size = served.predictor.settings.image_size
        arrays = [array if array.shape[0] == size else served.predictor.prepare(data) for data, array in photos]
        return served.predictor.probabilities_of(arrays)

    async def run(self) -> None:
        """Answer batches until cancelled; no error stops it (each is handed to the requests of its batch)."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            self._last_size = len(batch)
            served = self.watcher.current  # one model for the whole batch
            if self.batch_sizes is not None:
                self.batch_sizes.observe(len(batch))
            try:
                if served is None:
                    raise PhotoError(503, self.watcher.problem)
                photos = [(data, array) for data, array, _ in batch]
                answers = await loop.run_in_executor(self.executor, self._answer, served, photos)
            except Exception as exc:  # noqa: BLE001 - handed to each waiting request, which answers with it
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result((answer, served))

    def shutdown(self) -> None:
        self.decoder.shutdown(wait=False, cancel_futures=True)
        self.executor.shutdown(wait=False, cancel_futures=True)


async def _limited_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds max_bytes (by its Content-Length, or while read)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PhotoError(413, f"photo larger than the limit of {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PhotoError(413, f"photo larger than the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def photo_bytes(request: Request, max_bytes: int) -> bytes:
    """The photo: the raw body whatever its content type, or the `photo` file field of a multipart form."""
    body = await _limited_body(request, max_bytes)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):

        async def stream() -> AsyncIterator[bytes]:
            yield body

        try:
            form = await MultiPartParser(Headers(scope=request.scope), stream(), max_files=1, max_fields=10).parse()
        except MultiPartException as exc:
            raise PhotoError(400, f"unreadable multipart form: {exc}") from exc
        photo = form.get("photo")
        if not isinstance(photo, UploadFile):
            raise PhotoError(400, "a multipart request needs a file field named 'photo'")
        body = await photo.read()
    if not body:
        raise PhotoError(400, "empty body: send the photo's bytes, or a multipart form with a 'photo' file")
    return body


def _answer(probabilities: np.ndarray, served: ServedModel, top: int) -> dict[str, Any]:
    labels = served.predictor.labels
    best = np.argsort(probabilities)[::-1][:top]
    ranked = [{"label": labels[i], "probability": float(probabilities[i])} for i in best]
    return {
        "label": ranked[0]["label"],
        "probability": ranked[0]["probability"],
        "top": ranked,
        "facts": asdict(facts_for(ranked[0]["label"])),
        "model": served.info,
    }


def create_app(
    output_root: str, max_bytes: int = MAX_BYTES, poll_seconds: float = 2.0, max_wait: float = MAX_WAIT_S
) -> FastAPI:
    """The service over the models published under `output_root` (local path or s3://)."""
    watcher = ModelWatcher(output_root, poll_seconds)
    batcher = Batcher(watcher, max_wait=max_wait)
    registry = CollectorRegistry()
    requests = Counter("fruits_requests", "Requests answered", ["endpoint", "status"], registry=registry)
    latency = Histogram("fruits_request_seconds", "Request latency", ["endpoint"], registry=registry)
    batcher.batch_sizes = Histogram(
        "fruits_batch_photos", "Photos per model call", buckets=(1, 2, 4, 8, 16, 32), registry=registry
    )
    page = resources.files("fruits_assets.app").joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher.start()
        app.state.batcher_task = asyncio.create_task(batcher.run())
        yield
        watcher.stop()
        app.state.batcher_task.cancel()
        batcher.shutdown()

    app = FastAPI(
        title="Fruits!",
        description="Names the fruit in a photo with the platform's published classifier.",
        lifespan=lifespan,
    )
    app.state.watcher = watcher

    @app.middleware("http")
    async def log_and_count(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - logged here, answered without its trace
            log.exception("unexpected error on %s", request.url.path)
            response = JSONResponse({"error": "internal error"}, status_code=500)
        seconds = time.perf_counter() - started
        endpoint = request.scope.get("route").path if request.scope.get("route") else "unknown"
        requests.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(seconds)
        model = getattr(request.state, "model_version", None)  # the model that answered, when one did
        log.info(
            "%s %s %d %.1f ms model=%s", request.method, request.url.path, response.status_code, seconds * 1e3, model
        )
        return response

    @app.exception_handler(PhotoError)
    async def photo_error(request: Request, exc: PhotoError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": problems}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """200 once a model is loaded and has answered, 503 before (with the reason)."""
        served = watcher.current
        if served is None:
            return JSONResponse({"status": "starting", "error": watcher.problem}, status_code=503)
        if app.state.batcher_task.done():  # cannot happen by design (run() survives every error); never hidden
            return JSONResponse({"status": "failed", "error": "the model thread stopped"}, status_code=503)
        return JSONResponse({"status": "ok", "model": served.info})

    @app.post("/v1/predict")
    async def predict(request: Request, top: int = Query(3, ge=1, le=1000)) -> dict[str, Any]:
        """The fruit in the photo (the raw body, any content type, or a multipart `photo` file)."""
        data = await photo_bytes(request, max_bytes)
        try:
            answer, served = await batcher.predict(data)
        except ImageDecodeError as exc:
            raise PhotoError(decode_status(exc), str(exc)) from exc
        request.state.model_version = served.info["version"]
        return _answer(answer, served, top)

    @app.get("/v1/fruits")
    async def fruits() -> dict[str, Any]:
        """The classes the served model knows, with their facts."""
        served = watcher.current
        if served is None:
            raise PhotoError(503, watcher.problem)
        return {
            "model": served.info,
            "fruits": [{"label": label, "facts": asdict(facts_for(label))} for label in served.predictor.labels],
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    return app
