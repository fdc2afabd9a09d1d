"""`/v1/feedback` against a real server with a real model: off without a token, the token required, bad input
refused with nothing stored, a photo sent or named by its answer's id stored once with its label and sender, listed
and removed, and a sender past the limit answered 429."""

import hashlib

import pytest
import requests

from fruits_assets.app.feedback_api import SenderLimiter
from fruits_assets.app.service import create_app
from spark_code.storage.feedback import FeedbackStore
from tests.fruits_assets.app.serving import Serving
from tests.images_factory import BAD_IMAGES

TOKEN = "operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def feedback_service(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("FRUITS_FEEDBACK_PER_MINUTE", "4")
    app = create_app(str(trained_run[1]), poll_seconds=0.5, feedback_root=str(tmp_path / "fb"), feedback_token=TOKEN)
    with Serving(app) as served:
        yield served.wait_ready(), FeedbackStore(str(tmp_path / "fb"))


def _send(url: str, data: bytes | None = None, headers: dict | None = None, **params: str) -> requests.Response:
    return requests.post(f"{url}/v1/feedback", data=data, params=params, headers=headers or {}, timeout=30)


def test_feedback_is_off_without_a_token(trained_run, small_root, monkeypatch):
    monkeypatch.delenv("FRUITS_FEEDBACK_TOKEN", raising=False)
    monkeypatch.delenv("FRUITS_FEEDBACK_ROOT", raising=False)
    with Serving(create_app(str(trained_run[1]), poll_seconds=0.5)) as served:
        photo = next((small_root / "Test" / "Kiwi").iterdir()).read_bytes()
        for response in (
            _send(served.url, photo, AUTH, label="Kiwi"),
            requests.get(f"{served.url}/v1/feedback", headers=AUTH, timeout=30),
        ):
            assert response.status_code == 404 and "FRUITS_FEEDBACK_TOKEN" in response.json()["error"]


def test_photos_sent_or_named_by_their_answer_are_stored_listed_and_removed(feedback_service, small_root):
    served, store = feedback_service
    kiwi = sorted((small_root / "Test" / "Kiwi").iterdir())[0].read_bytes()
    banana = sorted((small_root / "Test" / "Banana").iterdir())[0].read_bytes()
    url = served.url

    # Refused, and nothing stored: no token, a wrong one, a class the model does not know, bytes that are no photo.
    assert _send(url, kiwi, label="Kiwi").status_code == 401
    wrong = _send(url, kiwi, {"Authorization": "Bearer guess"}, label="Kiwi")
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    assert _send(url, kiwi, AUTH, label="Durian").status_code == 422
    assert _send(url, b"not a photo", AUTH | {"X-Fruits-Sender": "other"}, label="Kiwi").status_code == 415
    bomb = _send(url, BAD_IMAGES["bomb.png"], AUTH | {"X-Fruits-Sender": "other"}, label="Kiwi")
    assert bomb.status_code == 422 and "decompression bomb" in bomb.json()["error"]  # as /v1/predict answers it
    assert _send(url, None, AUTH, label="Kiwi", answer="0" * 64).status_code == 404
    assert store.records() == []

    # A photo itself, from a user of the app's backend.
    sent = _send(url, kiwi, AUTH | {"X-Fruits-Sender": "user-1"}, label="Kiwi")
    assert sent.status_code == 201, sent.text
    record = sent.json()
    assert record["id"] == hashlib.sha256(kiwi).hexdigest() and record["label"] == "Kiwi" and record["stored"]
    assert record["sender"] == "user-1" and record["source"] == "upload"

    # An answer's id: the photo the service answered, corrected to another class.
    answer = served.predict(banana).json()
    assert answer["id"] == hashlib.sha256(banana).hexdigest()
    named = _send(url, None, AUTH | {"X-Fruits-Sender": "user-2"}, label="Kiwi", answer=answer["id"])
    assert named.status_code == 201 and named.json()["source"] == "answer"
    stored = {r.id: r for r in store.records()}
    assert set(stored) == {record["id"], answer["id"]} and all(store.is_stored(r) for r in stored.values())

    listed = requests.get(f"{url}/v1/feedback", headers=AUTH, timeout=30).json()["feedback"]
    assert {(r["sender"], r["label"]) for r in listed} == {("user-1", "Kiwi"), ("user-2", "Kiwi")}
    assert requests.get(f"{url}/v1/feedback", timeout=30).status_code == 401
    removed = requests.delete(f"{url}/v1/feedback/{answer['id']}", headers=AUTH, timeout=30)
    assert removed.status_code == 200 and removed.json()["stored"] is False
    assert requests.delete(f"{url}/v1/feedback/{answer['id']}", headers=AUTH, timeout=30).status_code == 404
    assert [r.id for r in store.records()] == [record["id"]]


def test_a_sender_past_the_limit_is_answered_429(feedback_service, small_root):
    served, store = feedback_service
    photos = [p.read_bytes() for p in sorted((small_root / "Training" / "Kiwi").iterdir())[:5]]
    answers = [_send(served.url, photo, AUTH | {"X-Fruits-Sender": "flood"}, label="Kiwi") for photo in photos]
    assert [a.status_code for a in answers] == [201] * 4 + [429]
    assert int(answers[-1].headers["Retry-After"]) >= 1 and "at most 4 a minute" in answers[-1].json()["error"]
    assert _send(served.url, photos[4], AUTH | {"X-Fruits-Sender": "calm"}, label="Kiwi").status_code == 201
    assert len(store.records()) == 5


def test_the_limit_counts_each_senders_last_minute_and_forgets_silent_senders():
    limiter = SenderLimiter(2)
    assert limiter.wait_for("a", now=0) == 0 and limiter.wait_for("a", now=1) == 0
    assert limiter.wait_for("a", now=2) == pytest.approx(58)  # refused: not counted
    assert limiter.wait_for("b", now=30) == 0
    assert limiter.wait_for("a", now=60) == 0  # its first request is a minute old
    assert limiter.wait_for("a", now=60.5) == pytest.approx(0.5)
    # The app's backend names each of its users: those silent for a minute take no memory.
    for user in range(1000):
        assert limiter.wait_for(f"user-{user}", now=100 + user / 1000) == 0
    assert "b" not in limiter.sent and len(limiter.sent) == 1001  # b silent since 30 s, a since 60 s
    assert limiter.wait_for("late", now=161) == 0 and list(limiter.sent) == ["late"]
