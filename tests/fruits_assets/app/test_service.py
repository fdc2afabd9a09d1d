"""`fruits serve` against a real uvicorn server on a free port of 127.0.0.1, with the models of a real run."""

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import uvicorn
from PIL import Image

from fruits_assets.app.predictor import FruitPredictor
from fruits_assets.app.service import create_app
from fruits_assets.main_job import run_main_job
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


def test_concurrent_clients_are_batched_and_all_answered(service, small_root):
    photos = [p.read_bytes() for p in sorted((small_root / "Test").rglob("*.jpg"))]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda data: service.predict(data).status_code, photos * 4))
    assert statuses == [200] * len(photos) * 4
    metrics = requests.get(f"{service.url}/metrics", timeout=10).text
    batched = [line for line in metrics.splitlines() if line.startswith('fruits_batch_photos_bucket{le="1.0"}')]
    count = [line for line in metrics.splitlines() if line.startswith("fruits_batch_photos_count")]
    assert float(batched[0].split()[-1]) < float(count[0].split()[-1])  # some model calls held several photos


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


def test_a_new_model_is_served_within_seconds_and_a_failed_one_never(trained_run, small_root, tmp_path, spark, capsys):
    root = tmp_path / "out"
    shutil.copytree(trained_run[1], root)
    photos = [p.read_bytes() for p in sorted((small_root / "Test").rglob("*.jpg"))]
    answers: list[tuple[float, int, dict]] = []
    stop = threading.Event()

    with Served(root, poll_seconds=0.5) as served:
        first = served.predict(photos[0]).json()["model"]["version"]

        def client(offset: int) -> None:
            i = offset
            while not stop.is_set():
                response = served.predict(photos[i % len(photos)])
                answers.append((time.monotonic(), response.status_code, response.json()))
                i += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        settings = {"images_root": str(small_root), "min_accuracy": 0.0}
        summary = run_main_job(settings, ["Banana", "Kiwi"], str(root))
        published = time.monotonic()
        assert summary.success, summary.error
        deadline = published + 30
        while time.monotonic() < deadline and not any(a[2]["model"]["version"] != first for a in answers[-4:]):
            time.sleep(0.2)
        switched = next(t for t, _, a in answers if a["model"]["version"] != first)
        # A classifier published with an evaluation below its floor is never served.
        refused = run_main_job({**settings, "min_accuracy": 1.01}, None, str(root))
        assert refused.quality_gate_failed
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(60)

    assert {status for _, status, _ in answers} == {200}, "no request failed during the swaps"
    delay = switched - published
    assert delay < 10, f"switched {delay:.1f} s after publication"
    second = answers[-1][2]["model"]["version"]
    assert second not in {first, None}
    late = [a for t, _, a in answers if t > switched + 1]
    assert late and all(a["model"]["version"] == second for a in late), "the failed classifier was never served"
    assert all({g["label"] for g in a["top"]} <= {"Banana", "Kiwi"} for a in late)
    with capsys.disabled():
        print(f"\nhot swap: served {delay:.2f} s after the main job returned, {len(answers)} requests, none failed")
