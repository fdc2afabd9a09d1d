"""`/v1/feedback`: users confirm or correct an answer, and the photo is kept, with its label, for training.

Feedback is off unless the operator sets a token (FRUITS_FEEDBACK_TOKEN) and a feedback root (FRUITS_FEEDBACK_ROOT,
local or s3://): the app's backend sends the token (`Authorization: Bearer ...`) and says which of its users sent the
photo (`X-Fruits-Sender`; else the client's address). A photo comes as the body (as for /v1/predict) or as the id of
an answer the service gave shortly before (it keeps the last photos it answered, by content, within a byte budget).
Each sender may send a limited number of photos a minute. The photos are stored by spark_code.storage.feedback.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Path, Query, Request
from pydantic import BaseModel

from fruits_assets.app.models_watch import ModelWatcher
from spark_code.photos.images import ImageDecodeError
from spark_code.photos.layout import LayoutError
from spark_code.storage.feedback import FeedbackNotFound, FeedbackRecord, FeedbackStore

PER_MINUTE = 30
"""Photos one sender may send a minute."""
RECENT_BYTES = 64 * 1024 * 1024
"""Bytes of recently answered photos kept, so that feedback can name an answer instead of sending its photo again."""
SENDER_HEADER = "X-Fruits-Sender"
ID_PATTERN = "^[0-9a-f]{64}$"


class FeedbackOff(Exception):
    """Feedback is not configured: the message says what the operator sets."""


@dataclass(frozen=True)
class FeedbackSettings:
    """Where feedback photos go, the token that allows sending them, and how many a sender may send a minute."""

    root: str
    token: str
    per_minute: int = PER_MINUTE


class RecentPhotos:
    """The last photos answered, by id (their SHA-256), within a byte budget (the oldest go first)."""

    def __init__(self, budget: int = RECENT_BYTES) -> None:
        self.budget = budget
        self.held = 0
        self.photos: OrderedDict[str, bytes] = OrderedDict()

    def add(self, data: bytes) -> str:
        photo_id = hashlib.sha256(data).hexdigest()
        if photo_id in self.photos:
            self.photos.move_to_end(photo_id)
            return photo_id
        self.photos[photo_id] = data
        self.held += len(data)
        while self.held > self.budget and self.photos:
            self.held -= len(self.photos.popitem(last=False)[1])
        return photo_id

    def get(self, photo_id: str) -> bytes | None:
        return self.photos.get(photo_id)


def decode_status(error: ImageDecodeError) -> int:
    """400 for an empty photo, 415 for bytes that are no image format, 422 for an image that cannot be decoded
    (truncated, corrupt, a decompression bomb): the status of a photo refused by /v1/predict and /v1/feedback alike."""
    message = str(error)
    if message == "empty file":
        return 400
    return 415 if message.startswith("not an image") else 422


class SenderLimiter:
    """At most `per_minute` feedback requests from one sender in any 60 s (one whose photo is then refused, e.g. as no
    image, counts too: a client that retries a bad upload is slowed down as well). A sender silent for a minute is
    forgotten: the app's backend names each of its users, and a long-running service would otherwise keep every name
    it ever saw."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.sent: OrderedDict[str, deque[float]] = OrderedDict()  # the least recently counted sender first

    def wait_for(self, sender: str, now: float | None = None) -> float:
        """0 and the request counted when the sender may send one now, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        while self.sent and now - next(iter(self.sent.values()))[-1] >= 60:
            self.sent.popitem(last=False)
        times = self.sent.setdefault(sender, deque())
        while times and now - times[0] >= 60:
            times.popleft()
        if len(times) >= self.per_minute:
            return 60 - (now - times[0])
        times.append(now)
        self.sent.move_to_end(sender)
        return 0.0


@dataclass(frozen=True)
class FeedbackRecordBody(FeedbackRecord):
    """A stored photo's record (spark_code.storage.feedback), as the API answers it."""

    stored: bool
    """false: the photo is missing (a writer stopped between its record and its photo); remove it."""


class FeedbackList(BaseModel):
    feedback: list[FeedbackRecordBody]


@dataclass
class Feedback:
    """What the feedback routes share with /v1/predict: the settings (None: off) and the photos answered lately."""

    settings: FeedbackSettings | None
    recent: RecentPhotos
    limiter: SenderLimiter | None

    @classmethod
    def configure(cls, root: str | None, token: str | None, per_minute: int = PER_MINUTE) -> Feedback:
        if per_minute < 1:
            raise ValueError(f"feedback per minute must be at least 1 (is {per_minute})")
        settings = FeedbackSettings(root, token, per_minute) if root and token else None
        return cls(settings, RecentPhotos(), SenderLimiter(per_minute) if settings else None)

    @property
    def on(self) -> bool:
        return self.settings is not None

    def remember(self, data: bytes) -> str:
        """An answered photo's id; kept a while when feedback is on, so that feedback can name it."""
        return self.recent.add(data) if self.on else hashlib.sha256(data).hexdigest()

    def open(self, request: Request) -> FeedbackStore:
        """The feedback area, for a request that carries the token; FeedbackOff when feedback is off,
        PermissionError without the token."""
        if self.settings is None:
            raise FeedbackOff(
                "feedback is off: the operator sets FRUITS_FEEDBACK_TOKEN and FRUITS_FEEDBACK_ROOT to turn it on"
            )
        given = request.headers.get("authorization", "")
        expected = f"Bearer {self.settings.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise PermissionError("feedback needs the operator's token: Authorization: Bearer <token>")
        return FeedbackStore(self.settings.root)


def add_feedback_routes(
    app: FastAPI,
    feedback: Feedback,
    watcher: ModelWatcher,
    read_photo: Callable[[Request], Awaitable[bytes]],
    errors: Callable[..., dict],
    photo_body: dict,
    error: Callable[..., Exception],
) -> None:
    """POST, GET and DELETE /v1/feedback on `app`, beside the service's other routes: `read_photo(request)` reads a
    request's photo within the service's limits, `errors(*statuses)` describes error answers in the OpenAPI
    description, `photo_body` the photo's request body, and `error(status, message[, headers])` is the exception the
    service answers as `{"error": message}`."""

    def _open(request: Request) -> FeedbackStore:
        try:
            return feedback.open(request)
        except FeedbackOff as exc:
            raise error(404, str(exc)) from exc
        except PermissionError as exc:
            raise error(401, str(exc), {"WWW-Authenticate": "Bearer"}) from exc

    @app.post(
        "/v1/feedback",
        status_code=201,
        response_model=FeedbackRecordBody,
        responses=errors(400, 401, 404, 413, 415, 422, 429, 503),
        openapi_extra={"requestBody": {**photo_body["requestBody"], "required": False}},
    )
    async def send_feedback(
        request: Request,
        label: str = Query(..., min_length=1, description="the right class, one the served model knows"),
        answer: str | None = Query(None, pattern=ID_PATTERN, description="an answer's id, instead of the photo"),
    ) -> dict[str, Any]:
        """A user confirms or corrects an answer: the photo (the body, or `answer`, the id of an answer given
        lately) is stored once by content with `label`, for the next training."""
        store = _open(request)
        served = watcher.current
        if served is None:
            raise error(503, watcher.problem, {"Retry-After": "2"})
        if label not in served.predictor.labels:
            raise error(422, f"unknown class {label!r}: the model knows {len(served.predictor.labels)} classes")
        sender = request.headers.get(SENDER_HEADER) or (request.client.host if request.client else "unknown")
        assert feedback.limiter is not None
        wait = feedback.limiter.wait_for(sender)
        if wait:
            limit = feedback.limiter.per_minute
            retry = {"Retry-After": str(max(1, round(wait)))}
            raise error(429, f"{sender} sent too many photos: at most {limit} a minute", retry)
        if answer is not None:
            data = feedback.recent.get(answer)
            if data is None:
                raise error(404, f"no recent answer {answer}: send the photo itself")
            source = "answer"
        else:
            data = await read_photo(request)
            source = "upload"
        try:
            record = await asyncio.to_thread(store.add, data, label, sender, source)
        except ImageDecodeError as exc:  # the same statuses as /v1/predict's
            raise error(decode_status(exc), str(exc)) from exc
        except LayoutError as exc:
            raise error(422, str(exc)) from exc
        return {**asdict(record), "stored": True}

    @app.get("/v1/feedback", response_model=FeedbackList, responses=errors(401, 404))
    async def list_feedback(request: Request) -> dict[str, Any]:
        """Every stored feedback photo: its id, label, sender, source and time."""
        store = _open(request)
        return {"feedback": await asyncio.to_thread(store.listed)}

    @app.delete("/v1/feedback/{photo_id}", response_model=FeedbackRecordBody, responses=errors(401, 404, 422))
    async def remove_feedback(request: Request, photo_id: str = Path(..., pattern=ID_PATTERN)) -> dict[str, Any]:
        """Remove a stored photo: the next run trains without it."""
        store = _open(request)
        try:
            record = await asyncio.to_thread(store.remove, photo_id)
        except FeedbackNotFound as exc:
            raise error(404, f"no feedback photo {photo_id}") from exc
        return {**asdict(record), "stored": False}
