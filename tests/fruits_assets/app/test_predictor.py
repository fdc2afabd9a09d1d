import copy
import http.client
import json
import shutil
import subprocess
import tempfile
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import boto3
import numpy as np
import pytest
from botocore.exceptions import BotoCoreError
from PIL import Image
from pyspark.ml.linalg import DenseMatrix, DenseVector, SparseMatrix, SparseVector, Vectors

from fruits_assets.app.predictor import FruitPredictor, _matrix, _read_rows, _vector
from spark_code.features.embeddings import build_embedder
from spark_code.models.classifier import FEATURES
from spark_code.models.ml_models import NOTES_FILE, load_model
from spark_code.photos.images import ImageDecodeError, preprocess
from spark_code.settings import ModelSettings
from spark_code.storage import publish
from spark_code.storage.class_tables import read_arrow
from tests.conftest import REAL_CLASSES, WEIGHTS
from tests.images_factory import BAD_IMAGES, encoded


@pytest.fixture(scope="module")
def predictor(trained_run):
    return FruitPredictor(str(trained_run[1]))


def _table(root, asset):
    return read_arrow(str(root / asset)).to_pandas()


def _test_photos(small_root) -> list[tuple[str, Path]]:
    """(true class, photo) of every Test photo of the trained run's images root."""
    return [(name, photo) for name in REAL_CLASSES for photo in sorted((small_root / "Test" / name).iterdir())]


def test_predict_time_features_are_exactly_the_training_time_features(trained_run, predictor):
    embeddings = _table(trained_run[1], "image_embeddings")
    for _, row in embeddings.sample(4, random_state=0).iterrows():
        with open(row["path"].removeprefix("file:"), "rb") as handle:
            assert np.array_equal(predictor.features(handle.read()), row["features"])


def test_predictions_match_the_pipelines_evaluation(trained_run, predictor):
    evaluation = _table(trained_run[1], "classifier_evaluation")
    assert len(evaluation) == 12
    for _, row in evaluation.iterrows():
        photo = row["path"].removeprefix("file:")
        prediction = predictor.predict(photo)
        assert prediction.error is None
        assert prediction.top[0][0] == row["predicted"]
        assert prediction.top[0][1] == pytest.approx(row["confidence"], abs=1e-5)
        with open(photo, "rb") as handle:
            probabilities = predictor.probabilities(handle.read())
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-12)
        ranked = sorted(zip(predictor.labels, probabilities, strict=True), key=lambda pair: -pair[1])
        assert prediction.top == [(label, float(p)) for label, p in ranked[:3]]


def test_test_photos_are_named_right_with_the_spark_models_probabilities(spark, trained_run, small_root, predictor):
    photos = _test_photos(small_root)
    assert len(photos) == 12 and predictor.labels == sorted(REAL_CLASSES)
    rows, ours = [], []
    for index, (label, photo) in enumerate(photos):
        prediction = predictor.predict(str(photo))
        assert prediction.error is None and prediction.top[0][0] == label, photo
        data = photo.read_bytes()
        rows.append((index, label, Vectors.dense(predictor.features(data).astype(np.float64))))
        ours.append(predictor.probabilities(data))
    # The saved Spark models themselves, on the same features: centering and PCA, then indexer and classifier.
    pca = load_model(spark, str(trained_run[1] / "pca_model")).model
    classifier = load_model(spark, str(trained_run[1] / "fruit_classifier")).model
    projected = pca.transform(spark.createDataFrame(rows, ["index", "label", "raw"])).withColumnRenamed("pca", FEATURES)
    scored = classifier.transform(projected).orderBy("index").collect()
    assert [row["index"] for row in scored] == list(range(len(photos)))
    for row, probabilities in zip(scored, ours, strict=True):
        assert predictor.labels[int(row["prediction"])] == row["label"]
        np.testing.assert_allclose(probabilities, row["probability"].toArray(), rtol=0, atol=1e-6)


def test_large_transparent_and_heic_photos_of_a_fruit_are_named_right(tmp_path, small_root, predictor):
    name = "Banana"
    original = sorted((small_root / "Test" / name).iterdir())[0]
    with Image.open(original) as img:
        pixels = img.convert("RGB")
    big = tmp_path / "big photo.jpg"
    big.write_bytes(encoded(pixels.resize((3000, 3000), Image.Resampling.BICUBIC), "JPEG", quality=95))
    opaque = tmp_path / "opaque alpha.png"
    opaque.write_bytes(encoded(pixels.convert("RGBA"), "PNG"))
    iphone = tmp_path / "IMG_0001.HEIC"  # an iPhone camera's size and default format
    iphone.write_bytes(encoded(pixels.resize((3024, 3024), Image.Resampling.BICUBIC), "HEIF", quality=90))
    for photo in (big, opaque, iphone):
        prediction = predictor.predict(str(photo))
        assert prediction.error is None and prediction.top[0][0] == name, photo
    # A fully opaque alpha channel changes nothing: the same pixels as the decoded JPEG, the same features.
    assert np.array_equal(predictor.features(opaque.read_bytes()), predictor.features(original.read_bytes()))


def test_bad_photos_are_answered_with_an_error(tmp_path, predictor):
    text = tmp_path / "text.jpg"
    text.write_bytes(BAD_IMAGES["text.jpg"])
    assert "not an image" in predictor.predict(str(text)).error
    assert "No such file" in predictor.predict(str(tmp_path / "missing.jpg")).error


def test_every_undecodable_photo_is_a_bad_photo(tmp_path, predictor):
    for name, data in BAD_IMAGES.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageDecodeError) as decoding:
            preprocess(data, predictor.settings.image_size)
        assert predictor.predict(str(tmp_path / name)).error == str(decoding.value), name


def test_a_value_error_of_the_model_is_raised_not_called_a_bad_photo(small_root, predictor):
    """A PCA one component narrower than the classifier's inputs: NumPy's ValueError is the model's fault."""
    narrow = copy.copy(predictor)
    narrow.components = predictor.components[:, :-1]
    photo = _test_photos(small_root)[0][1]
    with pytest.raises(ValueError, match="mismatch") as raised:
        narrow.predict(str(photo))
    assert not isinstance(raised.value, ImageDecodeError)
    assert predictor.predict(str(photo)).error is None  # the same photo, with the model it goes with


@pytest.mark.parametrize("form", ["file://{}", "file:{}"], ids=["file:///path", "file:/path"])
def test_weights_named_by_a_file_uri_are_read_from_that_file(tmp_path, trained_run, small_root, predictor, form):
    root = _copy_output(trained_run[1], tmp_path / "out")
    weights = form.format(WEIGHTS)
    notes_file = Path(publish.current(str(root / "fruit_classifier"))) / NOTES_FILE
    notes = json.loads(notes_file.read_text())
    notes["embedding"]["weights"] = weights
    notes_file.write_text(json.dumps(notes))
    by_uri = FruitPredictor(str(root))
    assert by_uri.settings == replace(predictor.settings, weights=weights)
    assert _local_weights(weights) == WEIGHTS
    for label, photo in _test_photos(small_root)[::4]:
        assert np.array_equal(by_uri.probabilities(photo.read_bytes()), predictor.probabilities(photo.read_bytes()))
        assert by_uri.predict(str(photo)).top[0][0] == label


def test_missing_models_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize the assets first"):
        FruitPredictor(str(tmp_path))


def _csc(dense: np.ndarray) -> tuple[list[int], list[int], list[float]]:
    """Column pointers, row indices and values of a matrix (CSC); of its transpose, that is its CSR form."""
    pointers, indices, values = [0], [], []
    for column in dense.T:
        (rows,) = np.nonzero(column)
        indices += rows.tolist()
        values += column[rows].tolist()
        pointers.append(len(indices))
    return pointers, indices, values


def test_sparse_and_dense_vectors_and_matrices_as_spark_saves_them(spark, tmp_path):
    # An empty row and an empty column: pointers that repeat.
    dense = np.array([[1.5, 0, 2, 0], [0, 0, -3, 0], [4, 5, 0, 0], [0, 0, 0, 0], [0, 6, 7.25, 0]])
    rows, cols = dense.shape
    matrices = {
        "sparse CSC": SparseMatrix(rows, cols, *_csc(dense)),
        "sparse CSR (transposed)": SparseMatrix(rows, cols, *_csc(dense.T), isTransposed=True),
        "dense": DenseMatrix(rows, cols, dense.T.ravel().tolist()),
        "dense transposed": DenseMatrix(rows, cols, dense.ravel().tolist(), isTransposed=True),
        "toSparse": DenseMatrix(rows, cols, dense.T.ravel().tolist()).toSparse(),
    }
    vector = np.array([0, 2.5, 0, -1, 0, 0, 3])
    vectors = {
        "sparse vector": SparseVector(len(vector), np.nonzero(vector)[0].tolist(), vector[vector != 0].tolist()),
        "dense vector": DenseVector(vector.tolist()),
        "empty sparse vector": SparseVector(len(vector), [], []),
    }
    for matrix in matrices.values():
        assert np.array_equal(matrix.toArray(), dense)  # Spark's own reading of the test's matrices
    data = [(name, matrix, None) for name, matrix in matrices.items()]
    data += [(name, None, v) for name, v in vectors.items()]
    path = str(tmp_path / "saved")
    spark.createDataFrame(data, ["name", "matrix", "vector"]).coalesce(1).write.parquet(path)
    saved = {row["name"]: row for row in _read_rows(path)}
    assert {saved[name]["matrix"]["type"] for name in matrices} == {0, 1}
    assert {saved[name]["vector"]["type"] for name in vectors} == {0, 1}
    assert saved["sparse CSR (transposed)"]["matrix"]["isTransposed"]
    for name in matrices:
        assert np.array_equal(_matrix(saved[name]["matrix"]), dense), name
    for name, v in vectors.items():
        assert np.array_equal(_vector(saved[name]["vector"]), v.toArray()), name
    assert np.array_equal(vectors["sparse vector"].toArray(), vector)
    assert not _vector(saved["empty sparse vector"]["vector"]).any()


def _copy_output(source: Path, target: Path) -> Path:
    for name in ("pca_model", "fruit_classifier"):
        shutil.copytree(source / name, target / name)
    return target


def test_notes_without_flip_average_are_read_as_unmirrored_embeddings(tmp_path, trained_run, small_root, predictor):
    root = _copy_output(trained_run[1], tmp_path / "out")
    notes_file = Path(publish.current(str(root / "fruit_classifier"))) / NOTES_FILE
    notes = json.loads(notes_file.read_text())
    assert notes["embedding"].pop("flip_average") is True and predictor.settings.flip_average
    notes_file.write_text(json.dumps(notes))  # as models saved before mirror averaging existed
    old = FruitPredictor(str(root))
    assert old.settings == replace(predictor.settings, flip_average=False)
    data = _test_photos(small_root)[0][1].read_bytes()
    unmirrored = build_embedder(old.settings)(preprocess(data, old.settings.image_size)[None])[0]
    assert np.array_equal(old.features(data), unmirrored)
    assert not np.allclose(old.features(data), predictor.features(data), atol=1e-3)


BUCKET = "fruits-serving"


@pytest.fixture
def s3(aws, tmp_path, monkeypatch):
    """A bucket on the loopback S3 server, and a weights cache of this test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return client


def _cache(tmp_path) -> Path:
    return tmp_path / "tmp" / "fruits-weights"


def _upload_output(s3, source: Path, prefix: str, weights: str) -> str:
    """A trained output's models, `_current`/`_versions` layout and all, under s3://BUCKET/prefix, their notes
    naming `weights`."""
    for name in ("pca_model", "fruit_classifier"):
        for path in sorted((source / name).rglob("*")):
            if path.is_dir() or path.name.endswith(".crc"):
                continue
            body = path.read_bytes()
            if path.name == NOTES_FILE:
                notes = json.loads(body)
                if "embedding" in notes:
                    notes["embedding"]["weights"] = weights
                body = json.dumps(notes).encode()
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(source)}", Body=body)
    return f"s3://{BUCKET}/{prefix}"


def test_predicting_from_an_s3_output_root_gives_the_local_answer(s3, tmp_path, trained_run, small_root, predictor):
    weights = f"s3://{BUCKET}/models/{WEIGHTS.name}"
    s3.put_object(Bucket=BUCKET, Key=f"models/{WEIGHTS.name}", Body=WEIGHTS.read_bytes())
    remote = FruitPredictor(_upload_output(s3, trained_run[1], "runs/one", weights))
    assert remote.settings == replace(predictor.settings, weights=weights) and remote.labels == predictor.labels
    cached = list(_cache(tmp_path).iterdir())
    assert [p.read_bytes() for p in cached] == [WEIGHTS.read_bytes()] and cached[0].suffix == ".h5"
    for label, photo in _test_photos(small_root)[::4]:
        data = photo.read_bytes()
        assert np.array_equal(remote.probabilities(data), predictor.probabilities(data))
        answer = remote.predict(str(photo))
        assert answer == predictor.predict(str(photo)) and answer.top[0][0] == label


def _local_weights(weights: str) -> Path:
    """Where a predictor whose notes name `weights` takes its weights file from (nothing else is loaded)."""
    bare = FruitPredictor.__new__(FruitPredictor)
    bare.settings = ModelSettings(weights=weights, alpha=0.35)
    return Path(bare._local_settings().weights)


def test_weights_with_the_same_name_at_two_uris_get_two_cache_entries(s3):
    first, second = b"first weights " * 1000, b"second weights, longer " * 1000
    s3.put_object(Bucket=BUCKET, Key="one/weights.h5", Body=first)
    s3.put_object(Bucket=BUCKET, Key="two/weights.h5", Body=second)
    one = _local_weights(f"s3://{BUCKET}/one/weights.h5")
    two = _local_weights(f"s3://{BUCKET}/two/weights.h5")
    assert one != two and one.suffix == two.suffix == ".h5"
    assert one.read_bytes() == first and two.read_bytes() == second
    assert _local_weights(f"s3://{BUCKET}/one/weights.h5").read_bytes() == first


def test_weights_replaced_at_the_same_uri_are_downloaded_again(s3):
    uri = f"s3://{BUCKET}/models/weights.h5"
    s3.put_object(Bucket=BUCKET, Key="models/weights.h5", Body=b"A" * 5000)
    assert _local_weights(uri).read_bytes() == b"A" * 5000
    s3.put_object(Bucket=BUCKET, Key="models/weights.h5", Body=b"B" * 5000)  # same size, new ETag
    assert _local_weights(uri).read_bytes() == b"B" * 5000


def test_a_truncated_cache_file_is_not_used(s3):
    uri = f"s3://{BUCKET}/models/weights.h5"
    body = bytes(range(256)) * 100
    s3.put_object(Bucket=BUCKET, Key="models/weights.h5", Body=body)
    cached = _local_weights(uri)
    cached.write_bytes(body[:1000])  # what a download that died half-way wrote in place
    assert _local_weights(uri).read_bytes() == body
    cached.write_bytes(body[:-1] + b"\x00")  # the right size, wrong bytes
    assert _local_weights(uri).read_bytes() == body
    # A download killed before its rename: its partial file is never used, and is deleted once its process is gone.
    process = subprocess.Popen(["true"])
    process.wait()
    dead = cached.parent / f".{cached.name.split('-')[0]}.{process.pid}.x1y2.part"
    dead.write_bytes(body[:1000])
    cached.unlink()
    assert _local_weights(uri).read_bytes() == body
    assert sorted(cached.parent.iterdir()) == [cached]


class _FaultyProxy(ThreadingHTTPServer):
    """An S3 endpoint in front of the loopback server that breaks the body of GETs on one key: `cut` sends half of
    it and drops the connection (an interrupted download), `corrupt` flips its bytes (full length) and drops the
    object's additional checksum headers, as for an object uploaded without them, so only the ETag can tell."""

    daemon_threads = True

    def __init__(self, upstream: str, key: str, mode: str) -> None:
        self.upstream, self.key, self.mode = urlparse(upstream).netloc, key, mode
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        server: _FaultyProxy = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        connection = http.client.HTTPConnection(server.upstream)
        connection.request(self.command, self.path, body=body, headers=dict(self.headers))
        response = connection.getresponse()
        payload = response.read()
        connection.close()
        broken = self.command == "GET" and urlparse(self.path).path.endswith(server.key) and response.status < 300
        self.send_response(response.status)
        for name, value in response.getheaders():
            dropped = broken and server.mode == "corrupt" and name.lower().startswith("x-amz-checksum")
            if name.lower() not in ("content-length", "transfer-encoding", "connection") and not dropped:
                self.send_header(name, value)
        self.send_header(
            "Content-Length",
            str(len(payload)) if self.command != "HEAD" else response.headers.get("Content-Length", "0"),
        )
        if broken:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        if broken and server.mode == "cut":
            payload = payload[: len(payload) // 2]
        elif broken:
            payload = bytes(b ^ 0xFF for b in payload)
        self.wfile.write(payload)
        self.wfile.flush()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [("cut", (BotoCoreError, OSError), None), ("corrupt", OSError, "does not match the object")],
    ids=["cut", "corrupt"],
)
def test_an_interrupted_or_corrupted_download_is_never_used(s3, aws, tmp_path, monkeypatch, mode, error, message):
    uri = f"s3://{BUCKET}/models/weights.h5"
    body = bytes(range(256)) * 400
    s3.put_object(Bucket=BUCKET, Key="models/weights.h5", Body=body)
    proxy = _FaultyProxy(aws, "models/weights.h5", mode)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        with pytest.raises(error, match=message):
            _local_weights(uri)
    finally:
        proxy.shutdown()
        proxy.server_close()
    leftovers = [p for p in _cache(tmp_path).rglob("*")] if _cache(tmp_path).exists() else []
    assert leftovers == [], "a broken download left a file behind"
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    assert _local_weights(uri).read_bytes() == body
