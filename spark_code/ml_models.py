"""Saving and loading Spark ML models by path, whatever their class, with an atomic swap on save.

Each model is saved with `notes.json` beside it: what a reader needs besides the model itself (the embedding
settings the features came from, k, the class labels), readable without Spark by `spark_code.serving`.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Any

from pyspark.ml.util import DefaultParamsReader, MLWritable
from pyspark.sql import SparkSession

from spark_code import publish, storage

NOTES_FILE = "notes.json"


@dataclass(frozen=True)
class ModelArtifact:
    """A fitted Spark ML model and its JSON-serialisable notes."""

    model: Any
    notes: dict[str, Any] = field(default_factory=dict)


def save_model(spark: SparkSession, artifact: ModelArtifact, path: str) -> None:
    """Write next to `path`, then swap it in: readers see the old model or the new one, never a partial one."""
    if not isinstance(artifact.model, MLWritable):
        raise TypeError(f"{type(artifact.model).__name__} is not a savable Spark ML model")
    staging = f"{path.rstrip('/')}._staging"
    previous = f"{path.rstrip('/')}._previous"
    storage.delete(spark, staging)
    artifact.model.write().overwrite().save(staging)
    storage.write_text(spark, f"{staging}/{NOTES_FILE}", json.dumps(artifact.notes, indent=2, sort_keys=True))
    publish.restore(spark, path, previous)  # a save killed between its two moves left the previous model aside
    try:
        publish.publish(spark, staging, path, previous)
    finally:
        publish.restore(spark, path, previous)


def load_model(spark: SparkSession, path: str) -> ModelArtifact:
    """Load a saved model, its Python class read from the model's own metadata, with its notes."""
    found = publish.current(spark, path.rstrip("/"), [f"{path.rstrip('/')}._previous"])
    if found is None:
        raise FileNotFoundError(f"no saved model under {path}: materialize it first")
    path = found
    java_class = DefaultParamsReader.loadMetadata(path, spark.sparkContext)["class"]
    module_name, class_name = java_class.replace("org.apache.spark", "pyspark").rsplit(".", 1)
    model = getattr(importlib.import_module(module_name), class_name).load(path)
    notes_path = f"{path.rstrip('/')}/{NOTES_FILE}"
    notes = (
        json.loads(spark.read.text(notes_path, wholetext=True).first()[0]) if storage.exists(spark, notes_path) else {}
    )
    return ModelArtifact(model, notes)
