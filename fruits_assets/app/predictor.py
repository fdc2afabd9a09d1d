"""Predicting the fruit in a photo without Spark: the saved PCA and classifier are read straight from their files.

The photo goes through the same `preprocess` and embedder as training images, so its features are exactly the
ones it would get in the pipeline; the PCA projection and softmax are a few NumPy products.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from spark_code.features.embeddings import Embedder, build_embedder
from spark_code.models.calibration import Calibration, FruitMembership, calibrated_answer
from spark_code.models.fruit_facts import fruit_of
from spark_code.models.ml_models import NOTES_FILE, VERSION, check_pair
from spark_code.photos.images import ImageDecodeError, preprocess
from spark_code.photos.layout import is_remote, join_uri, local_path
from spark_code.settings import RANDOM_WEIGHTS, ModelSettings
from spark_code.storage.class_tables import published_stamps
from spark_code.storage.publish import WHOLE, current, pid_alive
from spark_code.storage.storage import filesystem


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{uri} not found: materialize the assets first (fruits run)") from exc


def _read_rows(uri: str) -> list[dict[str, Any]]:
    fs, path = filesystem(uri)
    return pq.read_table(path, filesystem=fs).to_pylist()


def _vector(v: dict[str, Any]) -> np.ndarray:
    """Spark ML's vector struct (type 0 sparse, 1 dense) as a NumPy array."""
    if v["type"] == 1:
        return np.asarray(v["values"], dtype=np.float64)
    dense = np.zeros(v["size"])
    dense[np.asarray(v["indices"], dtype=int)] = v["values"]
    return dense


def _matrix(m: dict[str, Any]) -> np.ndarray:
    """Spark ML's matrix struct (column-major unless transposed; type 0 sparse CSC/CSR) as a NumPy array."""
    rows, cols = m["numRows"], m["numCols"]
    values = np.asarray(m["values"], dtype=np.float64)
    if m["type"] == 1:
        return values.reshape(rows, cols) if m["isTransposed"] else values.reshape(cols, rows).T
    outer, inner = (rows, cols) if m["isTransposed"] else (cols, rows)
    dense = np.zeros((outer, inner))
    pointers = m["colPtrs"]
    for i in range(outer):
        for j in range(pointers[i], pointers[i + 1]):
            dense[i, m["rowIndices"][j]] = values[j]
    return dense if m["isTransposed"] else dense.T


def _published(model_uri: str) -> str:
    found = current(model_uri)
    if found is None:
        raise FileNotFoundError(f"no saved model under {model_uri}: materialize the assets first (fruits run)")
    return found


def _stage_dirs(pipeline_uri: str) -> list[str]:
    fs, path = filesystem(join_uri(pipeline_uri, "stages"))
    names = sorted(info.base_name for info in fs.get_file_info(pafs.FileSelector(path)))
    return [join_uri(pipeline_uri, "stages", name) for name in names]


WEIGHTS_CACHE = "fruits-weights"
"""Folder of the temporary directory where weights files downloaded from S3 are kept."""


def _s3_client() -> Any:  # noqa: ANN401 - a boto3 client
    """boto3's S3 client with the region and endpoint `storage.filesystem` uses (AWS_ENDPOINT_URL(_S3) honoured)."""
    import boto3

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", region_name=region, endpoint_url=endpoint)


def _etag_md5(head: dict[str, Any]) -> str | None:
    """The object's MD5 when its ETag is one: a single-part upload, not encrypted with KMS or a customer key."""
    etag = head["ETag"].strip('"')
    plain = head.get("ServerSideEncryption") in (None, "AES256") and not head.get("SSECustomerAlgorithm")
    return etag if plain and re.fullmatch(r"[0-9a-f]{32}", etag) else None


def _is_whole(path: str, size: int, md5: str | None) -> bool:
    """True when a local file has the object's size and, when the object's MD5 is known, its MD5."""
    if os.path.getsize(path) != size:
        return False
    if md5 is None:
        return True
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == md5


def _remove_dead_downloads(folder: str, key: str) -> None:
    """Delete the partial downloads of `key` left by processes that died (`.<key>.<pid>.<random>.part`)."""
    for name in os.listdir(folder):
        download = re.fullmatch(rf"\.{key}\.(\d+)\..+\.part", name)
        if download and not pid_alive(int(download[1])):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))


def cached_weights(uri: str) -> str:
    """A local copy of the weights file at an s3:// URI, downloaded once per version of the object.

    The copy is kept in `<temp dir>/fruits-weights/` under a name made of a hash of the URI, the object's ETag and
    size, then the file's own name (Keras picks the format by its extension): two objects with the same file name,
    or a replaced object, get files of their own. A download goes to a temporary file beside it, is checked
    against the object's size (and MD5 when the ETag is one), then renamed into place, so a download that died or
    went wrong is never used; a cached file is checked again before each use.
    """
    from botocore.exceptions import ClientError

    bucket, _, key = uri.split("://", 1)[1].partition("/")
    s3 = _s3_client()
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise FileNotFoundError(f"MobileNetV2 weights file not found: {uri}") from exc
        raise
    size, md5 = int(head["ContentLength"]), _etag_md5(head)
    version = hashlib.sha256(f"{uri}\n{head['ETag']}\n{size}".encode()).hexdigest()[:24]
    folder = os.path.join(tempfile.gettempdir(), WEIGHTS_CACHE)
    target = os.path.join(folder, f"{version}-{os.path.basename(key)}")
    if os.path.isfile(target) and _is_whole(target, size, md5):
        return target
    os.makedirs(folder, exist_ok=True)
    _remove_dead_downloads(folder, version)
    handle, partial = tempfile.mkstemp(prefix=f".{version}.{os.getpid()}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            # IfMatch: the bytes of the version whose ETag names the file, even if the object is replaced meanwhile.
            body = s3.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])["Body"]
            for chunk in body.iter_chunks(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if not _is_whole(partial, size, md5):
            raise OSError(f"the download of {uri} does not match the object ({size} bytes, ETag {head['ETag']})")
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise
    return target


def _embedder_for(settings: ModelSettings) -> Embedder:
    """The embedder of these settings, built once per process and version of the weights file: a new classifier
    over the same embedding (the usual case) is served without building TensorFlow's model again."""
    weights = settings.weights
    version = os.stat(weights) if weights not in ("imagenet", RANDOM_WEIGHTS) else None
    return _built_embedder(settings, None if version is None else (version.st_size, version.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _built_embedder(settings: ModelSettings, weights_version: tuple[int, int] | None) -> Embedder:
    return build_embedder(settings)


@dataclass(frozen=True)
class Prediction:
    """Top classes of one photo (best first), or why it could not be read."""

    photo: str
    top: list[tuple[str, float]]
    error: str | None = None
    confidence: float | None = None
    """The calibrated probability of the answer's fruit; None without a calibration (no field evaluation yet)."""
    confident: bool | None = None
    """Whether the app is sure (the confidence reaches the threshold chosen for its precision); None uncalibrated."""


class Confidence:
    """A classifier's published calibration (its field evaluation's notes), applied to its probabilities."""

    def __init__(self, calibration: Calibration, labels: list[str]) -> None:
        self.calibration = calibration
        self.membership = FruitMembership(labels, fruit_of)

    def of(self, probabilities: np.ndarray) -> tuple[float, bool]:
        """The calibrated confidence in the answer's fruit, and whether the app is sure of it."""
        _, confidence, sure = calibrated_answer(probabilities, self.membership, self.calibration)
        return confidence, sure


def published_confidence(output_root: str, classifier_version: str | None, labels: list[str]) -> Confidence | None:
    """The calibration published with the field evaluation of this classifier, or None (none, or of another one)."""
    notes = published_stamps(join_uri(output_root, "field_evaluation")).get(WHOLE, {}).get("notes") or {}
    if notes.get("classifier_version") != classifier_version or "calibration" not in notes:
        return None
    return Confidence(Calibration(**notes["calibration"]), labels)


class FruitPredictor:
    """Everything needed to name the fruit in a photo, loaded once from an output root (local path or s3://)."""

    def __init__(self, output_root: str, top: int = 3) -> None:
        pca_uri, classifier_uri = (
            _published(join_uri(output_root, name)) for name in ("pca_model", "fruit_classifier")
        )
        notes = json.loads(read_bytes(join_uri(classifier_uri, NOTES_FILE)))
        check_pair(json.loads(read_bytes(join_uri(pca_uri, NOTES_FILE))), notes)
        self.notes: dict[str, Any] = notes
        """The classifier's notes: its version, when it was saved, the PCA version it goes with."""
        # Models saved before mirror averaging existed were trained on unmirrored embeddings.
        self.settings = ModelSettings(**{"flip_average": False, **notes["embedding"]})
        centering_dir, pca_dir = _stage_dirs(pca_uri)
        self.mean = _vector(_read_rows(join_uri(centering_dir, "data"))[0]["mean"])
        self.components = _matrix(_read_rows(join_uri(pca_dir, "data"))[0]["pc"])
        indexer_dir, classifier_dir = _stage_dirs(classifier_uri)
        self.labels: list[str] = _read_rows(join_uri(indexer_dir, "data"))[0]["labelsArray"][0]
        model = _read_rows(join_uri(classifier_dir, "data"))[0]
        self.coefficients = _matrix(model["coefficientMatrix"])
        self.intercepts = _vector(model["interceptVector"])
        self.top = top
        self.confidence = published_confidence(output_root, notes.get(VERSION), self.labels)
        self._embedder: Embedder = _embedder_for(self._local_settings())

    def _local_settings(self) -> ModelSettings:
        """Settings whose weights are a plain path on this machine: an s3:// file is downloaded once, a file: URI
        becomes its path (os.stat and Keras take paths, not URIs)."""
        weights = self.settings.weights
        local = cached_weights(weights) if is_remote(weights) else local_path(weights)
        return self.settings if local == weights else ModelSettings(**{**self.settings.__dict__, "weights": local})

    def features(self, data: bytes) -> np.ndarray:
        """MobileNetV2 features of one encoded photo, exactly as the pipeline computes them."""
        return self._embedder(preprocess(data, self.settings.image_size)[None])[0]

    def probabilities(self, data: bytes) -> np.ndarray:
        return self._softmax(self.features(data))

    def _softmax(self, features: np.ndarray) -> np.ndarray:
        reduced = (features.astype(np.float64) - self.mean) @ self.components
        margins = self.coefficients @ reduced + self.intercepts
        exp = np.exp(margins - margins.max())
        return exp / exp.sum()

    def prepare(self, data: bytes) -> np.ndarray:
        """A photo decoded as this model's embedder takes it (ImageDecodeError for one that does not decode): the
        part of a prediction that can run on any thread, beside other photos' decoding."""
        return preprocess(data, self.settings.image_size)

    def probabilities_of(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The probabilities of photos made by `prepare`, embedded in one model call: the same features as one by
        one, since the embedder pads every batch."""
        return [self._softmax(row) for row in self._embedder(np.stack(arrays))]

    def predict(self, photo: str) -> Prediction:
        """Top classes of a photo file; a file that cannot be read or decoded is an answer with an error. Only those
        two: any other error (a model that does not fit its PCA, a bug) is raised, never blamed on the photo."""
        try:
            with open(photo, "rb") as handle:
                array = self.prepare(handle.read())
        except (OSError, ImageDecodeError) as exc:
            return Prediction(photo, [], str(exc))
        probabilities = self._softmax(self._embedder(array[None])[0])
        best = np.argsort(probabilities)[::-1][: self.top]
        confidence, sure = self.confidence.of(probabilities) if self.confidence else (None, None)
        top = [(self.labels[i], float(probabilities[i])) for i in best]
        return Prediction(photo, top, confidence=confidence, confident=sure)
