"""`fruits serve` against a real uvicorn server on a free port of 127.0.0.1, with the models of a real run."""

import contextlib
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image
import pytest
import requests
import uvicorn
from PIL import Image

from fruits_assets.app.predictor import FruitPredictor
from fruits_assets.app.service import create_app
from fruits_assets.main_job import run_main_job
from spark_code.models.ml_models import published_notes
from spark_code.storage.class_tables import published_stamps
from tests.fruits_assets.app.served import MAX_BYTES, Served, free_port
from tests.images_factory import BAD_IMAGES, encoded, fruit_like


@pytest.fixture(scope="module")
def service(trained_run):
    with Served(trained_run[1]) as served:
        yield served


@pytest.fixture(scope="module")
def predictor(trained_run):
    return FruitPredictor(str(trained_run[1]))


def _expected(predictor: FruitPredictor, data: bytes) -> list[dict]:
    probabilities = predictor.probabilities(data)
    best = np.argsort(probabilities)[::-1][:3]
    return [{"label": predictor.labels[i], "probability": float(probabilities[i])} for i in best]


def test_test_photos_get_fruits_predicts_answer_with_facts_and_model(service, predictor, small_root):
    photos = sorted((small_root / "Test").rglob("*.jpg"))
    assert len(photos) == 12
    for photo in photos:
        data = photo.read_bytes()
        response = service.predict(data, headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["top"] == _expected(predictor, data)  # bit for bit: same decoding, embedder and models
        assert answer["label"] == photo.parent.name and answer["probability"] == answer["top"][0]["probability"]
        assert answer["facts"]["label"] == answer["label"] and answer["facts"]["description"]
        assert answer["model"]["version"] == predictor.notes["model_version"] and answer["model"]["published_at"]
        # no field evaluation of this model: no calibrated confidence, nothing said of the field
        assert answer["confidence"] is None and answer["confident"] is None and answer["model"]["field"] is None


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", "text/plain", None])
def test_the_bytes_decide_whatever_the_content_type(service, predictor, small_root, content_type):
    data = next((small_root / "Test" / "Kiwi").iterdir()).read_bytes()
    headers = {"Content-Type": content_type} if content_type else {}
    session = requests.Session()
    request = requests.Request("POST", f"{service.url}/v1/predict?top=2", data=data, headers=headers).prepare()
    if content_type is None:
        request.headers.pop("Content-Type", None)
    answer = session.send(request, timeout=60).json()
    assert answer["top"] == _expected(predictor, data)[:2]


def test_a_multipart_form_with_a_photo_field(service, predictor, small_root):
    data = next((small_root / "Test" / "Banana").iterdir()).read_bytes()
    response = requests.post(f"{service.url}/v1/predict", files={"photo": ("b.jpg", data, "image/jpeg")}, timeout=60)
    assert response.status_code == 200 and response.json()["top"] == _expected(predictor, data)
    response = requests.post(f"{service.url}/v1/predict", files={"picture": ("b.jpg", data)}, timeout=60)
    assert response.status_code == 400 and "photo" in response.json()["error"]


def test_photos_a_person_takes(service, predictor, small_root):
    kiwi = Image.open(next((small_root / "Test" / "Kiwi").iterdir())).convert("RGB")
    rgba = kiwi.convert("RGBA")
    rgba.putalpha(Image.new("L", kiwi.size, 200))
    photos = {
        "png with alpha": encoded(rgba, "PNG"),
        "large jpeg": encoded(kiwi.resize((3000, 3000)), "JPEG", quality=90),
        "grayscale": encoded(kiwi.convert("L"), "JPEG"),
    }
    for name, data in photos.items():
        response = service.predict(data)
        assert response.status_code == 200, (name, response.text)
        assert response.json()["top"] == _expected(predictor, data), name


@pytest.mark.parametrize(
    ("name", "status"),
    [("empty.jpg", 400), ("text.jpg", 415), ("page.png", 415), ("truncated.jpg", 422), ("bomb.png", 422)],
)
def test_bad_photos_get_a_json_error_and_the_service_answers_the_next(service, small_root, name, status):
    response = service.predict(BAD_IMAGES[name])
    assert response.status_code == status and set(response.json()) == {"error"}
    assert "Traceback" not in response.text
    good = service.predict(next((small_root / "Test" / "Kiwi").iterdir()).read_bytes())
    assert good.status_code == 200


def test_too_large_is_refused_without_reading_it_all(service):
    big = b"\xff" * (MAX_BYTES + 1)
    response = service.predict(big)
    assert response.status_code == 413 and "limit" in response.json()["error"]

    def chunks():  # no Content-Length: refused while reading
        for _ in range(100):
            yield b"\xff" * 100_000

    response = service.predict(chunks())
    assert response.status_code == 413
    assert service.predict(encoded(fruit_like(), "PNG")).status_code == 200


def test_an_endless_body_is_answered_413_soon_after_the_limit(service):
    """A client streaming chunks without end gets its 413 once the server has read past the limit, not after
    the server has read everything (it would never end), and the service answers the next photo."""
    host, port = service.url.removeprefix("http://").split(":")
    chunk = b"\xff" * 65_536
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        while sent < 50 * MAX_BYTES and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = sock.recv(65_536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 5 * MAX_BYTES, f"the server read {sent} bytes before refusing a body over {MAX_BYTES}"
    assert service.predict(encoded(fruit_like(), "PNG")).status_code == 200


def test_bad_query_and_unknown_paths_are_json_errors(service, small_root):
    data = next((small_root / "Test" / "Kiwi").iterdir()).read_bytes()
    assert service.predict(data, params={"top": 0}).status_code == 422
    response = requests.get(f"{service.url}/v1/nothing", timeout=10)
    assert response.status_code == 404 and "error" in response.json()


def test_fruits_health_metrics_openapi_and_page(service, predictor):
    fruits = requests.get(f"{service.url}/v1/fruits", timeout=10).json()
    assert [f["label"] for f in fruits["fruits"]] == predictor.labels
    assert all(f["facts"]["fruit"] for f in fruits["fruits"])
    health = requests.get(f"{service.url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["model"]["version"] == predictor.notes["model_version"]
    metrics = requests.get(f"{service.url}/metrics", timeout=10).text
    assert 'fruits_requests_total{endpoint="/v1/predict",status="200"}' in metrics
    assert "fruits_request_seconds_bucket" in metrics and "fruits_batch_photos_count" in metrics
    assert "/v1/predict" in requests.get(f"{service.url}/openapi.json", timeout=10).json()["paths"]
    page = requests.get(service.url, timeout=10).text
    assert 'type="file"' in page and 'capture="environment"' in page and "v1/predict" in page


def test_concurrent_clients_are_batched_and_answered_as_one_by_one(service, predictor, small_root):
    photos = [p.read_bytes() for p in sorted((small_root / "Test").rglob("*.jpg"))]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(service.predict, photos * 4))
    assert [r.status_code for r in responses] == [200] * len(photos) * 4
    expected = [_expected(predictor, data) for data in photos] * 4
    assert [r.json()["top"] for r in responses] == expected  # bit for bit, whatever batch each photo was in
    metrics = requests.get(f"{service.url}/metrics", timeout=10).text
    batched = [line for line in metrics.splitlines() if line.startswith('fruits_batch_photos_bucket{le="1.0"}')]
    count = [line for line in metrics.splitlines() if line.startswith("fruits_batch_photos_count")]
    assert float(batched[0].split()[-1]) < float(count[0].split()[-1])  # some model calls held several photos


def test_a_photo_failing_for_another_reason_than_its_bytes_fails_alone(service, small_root, monkeypatch):
    """A codec missing from Pillow is the machine's fault: that request gets a 500 without its trace, and the
    photos decoded beside it (in the same batches) are answered."""
    monkeypatch.delattr(PIL.Image.core, "jpeg_decoder")
    jpeg = next((small_root / "Test" / "Kiwi").iterdir()).read_bytes()
    png = encoded(fruit_like(), "PNG")
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(service.predict, [jpeg, png] * 8))
    assert [r.status_code for r in responses] == [500, 200] * 8
    assert all(r.json() == {"error": "internal error"} for r in responses[::2])


def test_no_model_yet_is_503_until_one_is_published(tmp_path):
    app = create_app(str(tmp_path / "nothing"), poll_seconds=0.2)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        for _ in range(100):
            try:
                response = requests.get(f"{url}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert response.status_code == 503 and "no classifier published" in response.json()["error"]
        assert requests.post(f"{url}/v1/predict", data=b"x", timeout=10).status_code == 503
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_new_model_is_served_within_seconds_and_a_failed_one_never(trained_copy, small_root, spark, capsys):
    """Clients send photos while the main job publishes a new PCA and classifier (another k), then a classifier
    whose evaluation fails: no request fails, each answer is exactly what its model gives (never a new PCA with an
    old classifier), the new model answers within seconds of its evaluation's publication, and the failed one never
    answers."""
    root = trained_copy
    photos = [p.read_bytes() for p in sorted((small_root / "Test").rglob("*.jpg"))]
    answers: list[tuple[float, int, int, dict]] = []  # (time, photo, status, answer)
    failures: list[str] = []
    evaluated: dict[str, float] = {}  # classifier version -> when its evaluation was published
    stop = threading.Event()
    old = FruitPredictor(str(root))

    def client(offset: int) -> None:
        i = offset
        while not stop.is_set():
            try:
                response = served.predict(photos[i % len(photos)])
                answers.append((time.monotonic(), i % len(photos), response.status_code, response.json()))
            except Exception as exc:  # noqa: BLE001 - a failed request, whatever its kind
                failures.append(repr(exc))
            i += 1
            stop.wait(0.02)  # steady traffic that leaves the main job some CPU

    def watch_publications() -> None:
        base = f"{root}/classifier_evaluation"
        while not stop.is_set():
            with contextlib.suppress(OSError, ValueError):  # read while being written: read again
                stamp = (published_stamps(base).get("all", {}).get("stamp") or "").partition(":")[0]
                evaluated.setdefault(stamp, time.monotonic())
            time.sleep(0.02)

    with Served(root, poll_seconds=0.5) as served:
        first = served.predict(photos[0]).json()["model"]["version"]
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        threads.append(threading.Thread(target=watch_publications))
        for thread in threads:
            thread.start()
        settings = {"images_root": str(small_root), "min_accuracy": 0.0}
        assert run_main_job({**settings, "pca_k": 5}, None, str(root)).success
        new = FruitPredictor(str(root))
        second = new.notes["model_version"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(a["model"]["version"] == second for *_, a in answers[-4:]):
            time.sleep(0.1)
        # A classifier published with an evaluation below its floor is never served.
        refused = run_main_job({**settings, "pca_k": 4, "min_accuracy": 1.01}, None, str(root))
        assert refused.quality_gate_failed
        third = published_notes(f"{root}/fruit_classifier")["model_version"]
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(60)

    assert failures == [] and {status for _, _, status, _ in answers} == {200}, "no request failed during the swaps"
    assert third not in {first, second}, "the failing classifier was published, and never served:"
    assert {a["model"]["version"] for *_, a in answers} == {first, second}
    by_version = {first: old, second: new}
    expected = {(v, i): _expected(by_version[v], photos[i]) for v in by_version for i in range(len(photos))}
    for _, photo, _, answer in answers:  # each answer is its own model's, bit for bit: never a mix of two
        assert answer["top"] == expected[(answer["model"]["version"], photo)]
    switched = min(t for t, *_, a in answers if a["model"]["version"] == second)
    delay = switched - evaluated[second]
    assert delay < 5, f"served {delay:.1f} s after its evaluation was published (poll every 0.5 s)"
    assert all(a["model"]["version"] == second for t, *_, a in answers if t > switched + 1)  # +1: answers in flight
    with capsys.disabled():
        print(
            f"\nhot swap: served {delay:.2f} s after the evaluation was published, {len(answers)} requests, none failed"
        )
