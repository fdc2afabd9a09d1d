"""Saving and loading Spark ML models by path, whatever their class, published by pointer (spark_code.publish).

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
from spark_code.errors import MissingOutputError

NOTES_FILE = "notes.json"


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
    try:
        artifact.model.write().save(version)
        storage.write_text(f"{version}/{NOTES_FILE}", json.dumps(artifact.notes, indent=2, sort_keys=True))
    except BaseException:
        publish.discard(version)
        raise
    publish.commit(path, version, [publish.WHOLE])


def load_model(spark: SparkSession, path: str) -> ModelArtifact:
    """Load the published model, its Python class read from the model's own metadata, with its notes."""
    found = publish.current(path)
    if found is None:
        raise MissingOutputError(f"no saved model under {path}: materialize it first")
    java_class = DefaultParamsReader.loadMetadata(found, spark.sparkContext)["class"]
    module_name, class_name = java_class.replace("org.apache.spark", "pyspark").rsplit(".", 1)
    model = getattr(importlib.import_module(module_name), class_name).load(found)
    notes = storage.read_text(f"{found}/{NOTES_FILE}")
    return ModelArtifact(model, json.loads(notes) if notes else {})
