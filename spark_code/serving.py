"""Predicting the fruit in a photo without Spark: the saved PCA and classifier are read straight from their files.

The photo goes through the same `preprocess` and embedder as training images, so its features are exactly the
ones it would get in the pipeline; the PCA projection and softmax are a few NumPy products.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from spark_code.embeddings import Embedder, build_embedder
from spark_code.images import preprocess
from spark_code.layout import is_remote, join_uri
from spark_code.ml_models import NOTES_FILE
from spark_code.publish import current
from spark_code.settings import ModelSettings
from spark_code.storage import filesystem


def _read_bytes(uri: str) -> bytes:
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


@dataclass(frozen=True)
class Prediction:
    """Top classes of one photo (best first), or why it could not be read."""

    photo: str
    top: list[tuple[str, float]]
    error: str | None = None


class FruitPredictor:
    """Everything needed to name the fruit in a photo, loaded once from an output root (local path or s3://)."""

    def __init__(self, output_root: str, top: int = 3) -> None:
        pca_uri, classifier_uri = (
            _published(join_uri(output_root, name)) for name in ("pca_model", "fruit_classifier")
        )
        notes = json.loads(_read_bytes(join_uri(classifier_uri, NOTES_FILE)))
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
        self._embedder: Embedder = build_embedder(self._local_settings())

    def _local_settings(self) -> ModelSettings:
        """Settings whose weights file is on this machine (an s3:// file is downloaded once)."""
        if not is_remote(self.settings.weights):
            return self.settings
        target = os.path.join(tempfile.gettempdir(), "fruits-weights", os.path.basename(self.settings.weights))
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as out:
                out.write(_read_bytes(self.settings.weights))
        return ModelSettings(**{**self.settings.__dict__, "weights": target})

    def features(self, data: bytes) -> np.ndarray:
        """MobileNetV2 features of one encoded photo, exactly as the pipeline computes them."""
        return self._embedder(preprocess(data, self.settings.image_size)[None])[0]

    def probabilities(self, data: bytes) -> np.ndarray:
        reduced = (self.features(data).astype(np.float64) - self.mean) @ self.components
        margins = self.coefficients @ reduced + self.intercepts
        exp = np.exp(margins - margins.max())
        return exp / exp.sum()

    def predict(self, photo: str) -> Prediction:
        """Top classes of a photo file; a missing or undecodable file is an answer with an error, not a crash."""
        try:
            with open(photo, "rb") as handle:
                data = handle.read()
            probabilities = self.probabilities(data)
        except (OSError, ValueError) as exc:
            return Prediction(photo, [], str(exc))
        best = np.argsort(probabilities)[::-1][: self.top]
        return Prediction(photo, [(self.labels[i], float(probabilities[i])) for i in best])
