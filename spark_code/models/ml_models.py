"""Saving and loading Spark ML models by path, whatever their class, published by pointer (spark_code.storage.publish).

Each model is saved with `notes.json` beside it: what a reader needs besides the model itself (the embedding
settings the features came from, k, the class labels), readable without Spark (the app's predictor). The notes also
name the model's own version and when it was saved, and a classifier's notes name the PCA version it was
trained on: the two are published one after the other, so a reader must check that they belong together.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pyspark.ml.util import DefaultParamsReader, MLWritable
from pyspark.sql import SparkSession

from spark_code.errors import MissingOutputError, PermanentError
from spark_code.storage import publish, storage

NOTES_FILE = "notes.json"
VERSION = "model_version"
"""Notes key: the tag of the version folder the model was saved in, unique to one save."""
SAVED_AT = "saved_at"
PCA_VERSION = "pca_version"
"""Classifier notes key: the VERSION of the PCA whose features the classifier was trained on."""


class MismatchedModelsError(PermanentError):
    """A published classifier and PCA that do not belong together (a run stopped between the two)."""


def check_pair(pca_notes: dict[str, Any], classifier_notes: dict[str, Any]) -> None:
    """Refuse a classifier trained on the features of another PCA than the published one: its predictions would be
    silently wrong. Classifiers saved before they named their PCA are taken as they are."""
    trained_on = classifier_notes.get(PCA_VERSION)
    if trained_on is not None and trained_on != pca_notes.get(VERSION):
        raise MismatchedModelsError(
            f"the published classifier was trained on PCA version {trained_on}, but the published PCA is version "
            f"{pca_notes.get(VERSION)} (a run stopped between the two, or the classifier was skipped): materialize "
            "reduced_features and fruit_classifier again (fruits run)"
        )


_SAVED: dict[tuple[str, str], ModelArtifact] = {}
"""Models this process saved, by (Spark application, path), with their notes: loading the version just saved, in the
same application, returns it without reading it back (the main job saves the PCA, then its next step loads it)."""


@dataclass(frozen=True)
class ModelArtifact:
    """A fitted Spark ML model and its JSON-serialisable notes."""

    model: Any
    notes: dict[str, Any] = field(default_factory=dict)


def save_model(spark: SparkSession, artifact: ModelArtifact, path: str) -> None:
    """Write a new version under `path`, then publish it: readers see the old model or the new one, never a part."""
    if not isinstance(artifact.model, MLWritable):
        raise TypeError(f"{type(artifact.model).__name__} is not a savable Spark ML model")
    publish.recover(path)
    version = publish.new_version(path)
    notes = {
        **artifact.notes,
        VERSION: version.rsplit("/", 1)[1],
        SAVED_AT: datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        artifact.model.write().save(version)
        storage.write_text(f"{version}/{NOTES_FILE}", json.dumps(notes, indent=2, sort_keys=True))
    except BaseException:
        publish.discard(version)
        raise
    publish.commit(path, version, [publish.WHOLE])
    _SAVED[(spark.sparkContext.applicationId, path)] = ModelArtifact(artifact.model, json.loads(json.dumps(notes)))


def published_notes(path: str) -> dict[str, Any] | None:
    """The published model's notes, read without Spark; None when no model was published there."""
    found = publish.current(path)
    if found is None:
        return None
    text = storage.read_text(f"{found}/{NOTES_FILE}")
    return json.loads(text) if text else {}


def load_model(spark: SparkSession, path: str) -> ModelArtifact:
    """Load the published model, its Python class read from the model's own metadata, with its notes."""
    found = publish.current(path)
    if found is None:
        raise MissingOutputError(f"no saved model under {path}: materialize it first")
    saved = _SAVED.get((spark.sparkContext.applicationId, path))
    if saved is not None and saved.notes.get(VERSION) == found.rsplit("/", 1)[1]:
        return saved
    java_class = DefaultParamsReader.loadMetadata(found, spark.sparkContext)["class"]
    module_name, class_name = java_class.replace("org.apache.spark", "pyspark").rsplit(".", 1)
    model = getattr(importlib.import_module(module_name), class_name).load(found)
    notes = storage.read_text(f"{found}/{NOTES_FILE}")
    return ModelArtifact(model, json.loads(notes) if notes else {})
