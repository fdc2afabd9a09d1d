"""`fruits serve`: the HTTP API and page that name the fruit in a photo (FastAPI on uvicorn).

Concurrent requests are batched: each photo is decoded on a pool of threads, then waits in a queue, and one worker
thread runs the model on everything that arrived while the previous batch ran (plus a short, bounded wait), so the
event loop never blocks on decoding or the model, and 16 clients share model calls instead of queueing one photo at
a time. A batch is answered by one served model
(models_watch), so no request mixes a new PCA with an old classifier.

Under overload the service sheds load instead of growing: at most `max_queue` photos are admitted (decoding or
waiting for the model) and at most `max_inflight_bytes` of request bodies are held at once; a request past either
bound is answered 503 with `Retry-After` at once (before its body is read when its Content-Length tells). `/livez`
(liveness) fails only while the model thread is stuck; `/readyz` and `/healthz` (readiness) also while no model is
served.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.routing import Match

from fruits_assets.app.feedback_api import PER_MINUTE, Feedback, add_feedback_routes, decode_status
from fruits_assets.app.models_watch import ModelWatcher, ServedModel
from spark_code.models.fruit_facts import FruitFacts, facts_for
from spark_code.photos.images import ImageDecodeError

log = logging.getLogger("fruits.serve")

MAX_BYTES = 10 * 1024 * 1024
MAX_BATCH = 32
MAX_WAIT_S = 0.002
"""How long the first photo of a batch waits for others under load (never when the last call held one photo)."""
MAX_QUEUE = 64
"""Photos admitted at once (decoding or waiting for the model): about 1 s of model work here, and each waiting
photo holds its decoded array (0.3 MB at 160 px), so the queue cannot grow memory or latency without bound."""
MAX_INFLIGHT_BYTES = 64 * 1024 * 1024
"""Bytes of request bodies held at once, over all requests (each body is buffered whole before decoding)."""
ANSWER_TIMEOUT_S = 60.0
"""The longest a request waits for the model before it is answered 503; a model call running longer than this
marks the model thread stuck (liveness fails)."""
RETRY_AFTER_S = 1
"""What a 503 for a full queue or byte budget tells a client to wait (seconds)."""


def setting(value: float | None, env: str, default: float, kind: Callable[[str], float] = int) -> Any:
    """An argument if given, else the environment variable `env`, else the default: one rule for every limit."""
    if value is not None:
        return value
    raw = os.environ.get(env, "").strip()
    return kind(raw) if raw else default


class PhotoError(Exception):
    """A request whose photo cannot be answered: its status, a message for the client, and any headers (a 503's
    `Retry-After`)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def busy(message: str, retry_after_s: float) -> PhotoError:
    """503 for a full service: the client may retry after `retry_after_s` seconds (rounded up, at least 1)."""
    return PhotoError(503, message, {"Retry-After": str(max(1, math.ceil(retry_after_s)))})


class ByteBudget:
    """The request bytes held at once, over all requests: a body that would pass `limit` is refused (503) instead
    of buffered. Used from the event loop only, so no lock."""

    def __init__(self, limit: int, retry_after_s: float = RETRY_AFTER_S) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.held = 0

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise busy("too many photos in flight: retry later", self.retry_after_s)
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size


class Batcher:
    """Decodes photos on a pool of threads (one per core), then runs the model on batches of the decoded photos
    waiting, in one model thread.

    A photo's own decoding error fails its request alone; a failed model call fails the requests of its batch. The
    photos of a batch are answered by one served model, decoded at its input size (a photo decoded for a model that
    was replaced meanwhile is decoded again for the new one). At most `max_queue` photos are admitted at once
    (503 past it), and a photo whose request gave up is dropped from its batch instead of run.
    """

    def __init__(
        self,
        watcher: ModelWatcher,
        max_batch: int = MAX_BATCH,
        max_wait: float = MAX_WAIT_S,
        decoders: int = 0,
        max_queue: int = MAX_QUEUE,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
        retry_after_s: float = RETRY_AFTER_S,
    ) -> None:
        self.watcher = watcher
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.answer_timeout_s = answer_timeout_s
        self.retry_after_s = retry_after_s
        # Bounded as well: photos of requests that timed out stay in it until the model thread takes them.
        self.queue: asyncio.Queue[tuple[bytes, np.ndarray, asyncio.Future]] = asyncio.Queue(max_queue)
        self.decoder = ThreadPoolExecutor(decoders or os.cpu_count() or 1, thread_name_prefix="fruits-decode")
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="fruits-model")
        self.batch_sizes: Histogram | None = None
        self.admitted = 0
        """Photos admitted and not answered yet (decoding, queued or in the model call)."""
        self.call_started: float | None = None
        """When the running model call was handed to the model thread (time.monotonic), None between calls."""
        self._last_size = 0
        self._stuck_logged = False

    def full(self) -> bool:
        return self.admitted >= self.max_queue

    def check_room(self) -> None:
        """503 at once when the queue is full: checked before a body is read, so a full service reads none."""
        if self.full():
            raise busy(f"the service is busy ({self.admitted} photos queued): retry later", self.retry_after_s)

    def stuck_for(self) -> float:
        """Seconds the model thread has been on the current call past the answer timeout (0 when it is not stuck).
        Logs the change of state once, not at every probe."""
        started = self.call_started
        over = 0.0 if started is None else time.monotonic() - started - self.answer_timeout_s
        if over > 0 and not self._stuck_logged:
            log.error("the model thread has not answered for %.0f s: stuck", over + self.answer_timeout_s)
        self._stuck_logged = over > 0 or (self._stuck_logged and started is not None)
        return max(over, 0.0)

    async def predict(self, data: bytes) -> tuple[np.ndarray, ServedModel]:
        """The photo's probabilities and the model that gave them; ImageDecodeError for a photo that does not
        decode, PhotoError 503 when no model is served, the queue is full, or the model does not answer in time."""
        served = self.watcher.current
        if served is None:
            raise PhotoError(
                503, self.watcher.problem, {"Retry-After": str(max(1, math.ceil(self.watcher.poll_seconds)))}
            )
        self.check_room()
        self.admitted += 1
        try:
            loop = asyncio.get_running_loop()
            array = await loop.run_in_executor(self.decoder, served.predictor.prepare, data)
            future = loop.create_future()
            try:
                self.queue.put_nowait((data, array, future))
            except asyncio.QueueFull:  # abandoned photos still waiting for a stuck model thread
                raise busy("the service is busy: retry later", self.retry_after_s) from None
            try:
                return await asyncio.wait_for(future, self.answer_timeout_s)
            except asyncio.TimeoutError as exc:  # TimeoutError on Python 3.11+, its own class on 3.10
                raise PhotoError(503, "the model did not answer in time", {"Retry-After": "5"}) from exc
        finally:
            self.admitted -= 1

    def _take(self, batch: list[tuple[bytes, np.ndarray, asyncio.Future]], item: tuple) -> None:
        if not item[2].done():  # a request that timed out: nobody waits for its answer
            batch.append(item)

    async def _next_batch(self) -> list[tuple[bytes, np.ndarray, asyncio.Future]]:
        batch: list[tuple[bytes, np.ndarray, asyncio.Future]] = []
        while not batch:
            self._take(batch, await self.queue.get())
        # Wait for companions only under load (the last call held several photos): a lone request never waits.
        deadline = asyncio.get_running_loop().time() + (self.max_wait if self._last_size > 1 else 0.0)
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                self._take(batch, self.queue.get_nowait())
                continue
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                self._take(batch, await asyncio.wait_for(self.queue.get(), left))
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
                    raise PhotoError(503, self.watcher.problem, {"Retry-After": "1"})
                photos = [(data, array) for data, array, _ in batch]
                self.call_started = time.monotonic()
                try:
                    answers = await loop.run_in_executor(self.executor, self._answer, served, photos)
                finally:
                    if self._stuck_logged:
                        log.warning("the model thread answers again")
                    self.call_started, self._stuck_logged = None, False
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


async def _limited_body(request: Request, max_bytes: int, budget: ByteBudget) -> tuple[bytes, int]:
    """The request body and the bytes it took from `budget` (to give back once answered): refused with 413 as soon
    as it exceeds max_bytes, with 503 as soon as the budget cannot hold it (by its Content-Length, or while read)."""
    declared = request.headers.get("content-length")
    too_large = PhotoError(413, f"photo larger than the limit of {max_bytes} bytes")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    taken = int(declared) if declared and declared.isdigit() else 0
    budget.take(taken)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise too_large
            if size > taken:  # no (or a wrong) Content-Length: taken chunk by chunk
                budget.take(size - taken)
                taken = size
            chunks.append(chunk)
    except BaseException:
        budget.give_back(taken)
        raise
    return b"".join(chunks), taken


async def photo_bytes(request: Request, max_bytes: int, budget: ByteBudget) -> tuple[bytes, int]:
    """The photo: the raw body whatever its content type, or the `photo` file field of a multipart form; with the
    bytes taken from the budget (given back on an error here)."""
    body, taken = await _limited_body(request, max_bytes, budget)
    try:
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
    except BaseException:
        budget.give_back(taken)
        raise
    return body, taken


def _answer(probabilities: np.ndarray, served: ServedModel, top: int) -> dict[str, Any]:
    labels = served.predictor.labels
    best = np.argsort(probabilities)[::-1][:top]
    ranked = [{"label": labels[i], "probability": float(probabilities[i])} for i in best]
    confidence, confident = served.confidence.of(probabilities) if served.confidence else (None, None)
    return {
        "label": ranked[0]["label"],
        "probability": ranked[0]["probability"],
        "confidence": confidence,
        "confident": confident,
        "top": ranked,
        "facts": asdict(facts_for(ranked[0]["label"])),
        "model": served.info,
    }


# What the OpenAPI description says: every status an endpoint answers, with its JSON shape, so that a client
# generated from it knows the body to send and the errors to expect (schemathesis checks it in the tests).


class ErrorBody(BaseModel):
    """Every error's body: one message, never a trace or an internal path."""

    error: str


class FieldFigures(BaseModel):
    """The model on photos of the app's world (its field evaluation): any variety of the right fruit counts."""

    photos: int
    fruit_accuracy: float
    accuracy: float


class ModelInfo(BaseModel):
    version: str | None
    published_at: str | None
    pca_version: str | None
    field: FieldFigures | None = None


class Guess(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    id: str
    """The photo's SHA-256: what feedback on this answer names (`POST /v1/feedback?answer=<id>`)."""
    label: str
    probability: float
    confidence: float | None
    """The calibrated probability of the answer's fruit (any variety); null until the model has a field evaluation."""
    confident: bool | None
    """false: the app is not sure (show the best guesses); null: not calibrated."""
    top: list[Guess]
    facts: FruitFacts
    model: ModelInfo


class Fruit(BaseModel):
    label: str
    facts: FruitFacts


class Fruits(BaseModel):
    model: ModelInfo
    fruits: list[Fruit]


class Health(BaseModel):
    status: str
    """ok, alive, starting (no model yet), stuck (the model thread does not answer) or failed."""
    error: str | None = None
    model: ModelInfo | None = None
    queued: int
    """Photos admitted and not answered yet."""


RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
ERRORS: dict[int, str] = {
    400: "an empty body, or a multipart form without a `photo` file",
    401: "feedback without the operator's token (`Authorization: Bearer <token>`)",
    404: "feedback is off (no token or feedback root set), or no such feedback photo or recent answer",
    429: "a sender sending more feedback photos a minute than the service takes",
    413: "a body over the service's `max_bytes`",
    415: "bytes that are no image format",
    422: "a bad query parameter, or an image that cannot be decoded (truncated, corrupt, a decompression bomb)",
    500: "a photo failing for another reason than its bytes (the detail is in the log)",
    503: "no model served yet, the queue or the bytes in flight full, or the model not answering in time",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "model": ErrorBody,
            "description": ERRORS[status],
            **({"headers": RETRY_AFTER} if status == 503 else {}),
        }
        for status in statuses
    }


BINARY = {"schema": {"type": "string", "format": "binary"}}
PHOTO_BODY = {
    "requestBody": {
        "required": True,
        "description": "The photo: its bytes as the body (any content type: the bytes decide; JPEG, HEIC, PNG, "
        "WebP, AVIF, ...), or a multipart form with a file field `photo`.",
        "content": {
            "application/octet-stream": BINARY,
            "image/jpeg": BINARY,
            "image/png": BINARY,
            "image/heic": BINARY,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["photo"],
                    "properties": {"photo": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


def create_app(
    output_root: str,
    max_bytes: int = MAX_BYTES,
    poll_seconds: float = 2.0,
    max_wait: float = MAX_WAIT_S,
    max_queue: int | None = None,
    max_inflight_bytes: int | None = None,
    answer_timeout_s: float | None = None,
    retry_after_s: float | None = None,
    feedback_root: str | None = None,
    feedback_token: str | None = None,
) -> FastAPI:
    """The service over the models published under `output_root` (local path or s3://).

    The limits not given come from FRUITS_SERVE_MAX_QUEUE, FRUITS_SERVE_MAX_INFLIGHT_BYTES,
    FRUITS_SERVE_ANSWER_TIMEOUT_S and FRUITS_SERVE_RETRY_AFTER_S, else the defaults above (the bytes in flight at
    least max_bytes); feedback (fruits_assets.app.feedback_api) from FRUITS_FEEDBACK_ROOT, FRUITS_FEEDBACK_TOKEN and
    FRUITS_FEEDBACK_PER_MINUTE.
    """
    feedback = Feedback.configure(
        feedback_root or os.environ.get("FRUITS_FEEDBACK_ROOT"),
        feedback_token or os.environ.get("FRUITS_FEEDBACK_TOKEN"),
        setting(None, "FRUITS_FEEDBACK_PER_MINUTE", PER_MINUTE),
    )
    max_queue = setting(max_queue, "FRUITS_SERVE_MAX_QUEUE", MAX_QUEUE)
    inflight_default = max(MAX_INFLIGHT_BYTES, max_bytes)  # a larger --max-bytes alone must still be answerable
    max_inflight_bytes = setting(max_inflight_bytes, "FRUITS_SERVE_MAX_INFLIGHT_BYTES", inflight_default)
    answer_timeout_s = setting(answer_timeout_s, "FRUITS_SERVE_ANSWER_TIMEOUT_S", ANSWER_TIMEOUT_S, float)
    retry_after_s = setting(retry_after_s, "FRUITS_SERVE_RETRY_AFTER_S", RETRY_AFTER_S, float)
    if max_queue < 1 or max_inflight_bytes < max_bytes:
        raise ValueError(
            f"max_queue must be at least 1 (is {max_queue}), max_inflight_bytes at least max_bytes "
            f"({max_inflight_bytes} < {max_bytes}): otherwise a photo the service accepts could never be answered"
        )
    watcher = ModelWatcher(output_root, poll_seconds)
    batcher = Batcher(
        watcher, max_wait=max_wait, max_queue=max_queue, answer_timeout_s=answer_timeout_s, retry_after_s=retry_after_s
    )
    budget = ByteBudget(max_inflight_bytes, retry_after_s)
    registry = CollectorRegistry()
    requests = Counter("fruits_requests", "Requests answered", ["endpoint", "status"], registry=registry)
    latency = Histogram("fruits_request_seconds", "Request latency", ["endpoint"], registry=registry)
    batcher.batch_sizes = Histogram(
        "fruits_batch_photos", "Photos per model call", buckets=(1, 2, 4, 8, 16, 32), registry=registry
    )
    Gauge("fruits_queued_photos", "Photos admitted, not answered yet", registry=registry).set_function(
        lambda: batcher.admitted
    )
    Gauge("fruits_inflight_bytes", "Request body bytes held", registry=registry).set_function(lambda: budget.held)
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
        description="Names the fruit in a photo with the platform's published classifier. Every error is JSON "
        '`{"error": "..."}`; a 503 carries `Retry-After`.',
        lifespan=lifespan,
    )
    app.state.watcher = watcher
    app.state.batcher = batcher
    app.state.budget = budget

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
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Its headers too: a 405's `Allow` says which methods the path takes, over every route of that path (Starlette
        # names only the first route's: /v1/feedback's POST, not its GET).
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allowed = {
                method
                for route in app.routes
                if getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE
                for method in route.methods
            }
            headers["Allow"] = ", ".join(sorted(allowed))
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": problems}, status_code=422)

    def _health(ready: bool) -> JSONResponse:
        queued = batcher.admitted
        task = getattr(app.state, "batcher_task", None)
        if task is not None and task.done():  # cannot happen by design (run() survives every error); never hidden
            return _unwell("failed", "the model thread stopped", queued)
        stuck = batcher.stuck_for()
        if stuck > 0:
            waited = stuck + batcher.answer_timeout_s
            return _unwell("stuck", f"the model has not answered for {waited:.0f} s", queued)
        served = watcher.current
        if not ready:
            return JSONResponse({"status": "alive", "queued": queued})
        if served is None:
            return _unwell("starting", watcher.problem, queued, retry_after=max(1, math.ceil(poll_seconds)))
        return JSONResponse({"status": "ok", "model": served.info, "queued": queued})

    def _unwell(status: str, error: str, queued: int, retry_after: float = 5) -> JSONResponse:
        body = {"status": status, "error": error, "queued": queued}
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(math.ceil(retry_after))})

    health_responses: dict[int | str, dict[str, Any]] = {
        503: {"model": Health, "description": "not ready (or not alive), with the reason", "headers": RETRY_AFTER}
    }

    @app.get("/livez", response_model=Health, responses=health_responses)
    async def livez() -> JSONResponse:
        """Liveness: 200 while the service answers and its model thread is not stuck (a model call running past
        the answer timeout), even before a model is loaded; 503 when restarting it is the remedy."""
        return _health(ready=False)

    @app.get("/readyz", response_model=Health, responses=health_responses)
    async def readyz() -> JSONResponse:
        """Readiness: 200 once a model is loaded and has answered, while the model thread answers; 503 otherwise,
        with the reason."""
        return _health(ready=True)

    @app.get("/healthz", response_model=Health, responses=health_responses)
    async def healthz() -> JSONResponse:
        """Readiness, as /readyz (kept for the clients that know this name)."""
        return _health(ready=True)

    @app.post(
        "/v1/predict",
        response_model=None,
        responses={200: {"model": Prediction}, **_errors(400, 413, 415, 422, 500, 503)},
        openapi_extra=PHOTO_BODY,
    )
    async def predict(request: Request, top: int = Query(3, ge=1, le=1000)) -> dict[str, Any]:
        """The fruit in the photo (the raw body, any content type, or a multipart `photo` file)."""
        batcher.check_room()  # before reading the body: a full service reads none
        data, taken = await photo_bytes(request, max_bytes, budget)
        try:
            answer, served = await batcher.predict(data)
        except ImageDecodeError as exc:
            raise PhotoError(decode_status(exc), str(exc)) from exc
        finally:
            budget.give_back(taken)
        request.state.model_version = served.info["version"]
        return {"id": feedback.remember(data), **_answer(answer, served, top)}

    @app.get("/v1/fruits", response_model=None, responses={200: {"model": Fruits}, **_errors(503)})
    async def fruits() -> dict[str, Any]:
        """The classes the served model knows, with their facts."""
        served = watcher.current
        if served is None:
            raise PhotoError(503, watcher.problem, {"Retry-After": str(max(1, math.ceil(poll_seconds)))})
        return {
            "model": served.info,
            "fruits": [{"label": label, "facts": asdict(facts_for(label))} for label in served.predictor.labels],
        }

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
    )
    async def metrics() -> Response:
        """Request counts, latencies, photos per model call, photos queued and bytes in flight."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def read_photo(request: Request) -> bytes:
        data, taken = await photo_bytes(request, max_bytes, budget)
        budget.give_back(taken)
        return data

    add_feedback_routes(app, feedback, watcher, read_photo, _errors, PHOTO_BODY, PhotoError)
    app.state.feedback = feedback

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    return app
