"""Saving and loading Spark ML models by path, whatever their class, with an atomic swap on save."""

from __future__ import annotations

import importlib

from pyspark.ml.util import DefaultParamsReader, MLWritable
from pyspark.sql import SparkSession

from spark_code import storage


def save_model(spark: SparkSession, model: MLWritable, path: str) -> None:
    """Write next to `path`, then swap it in: readers see the old model or the new one, never a partial one."""
    staging = f"{path.rstrip('/')}._staging"
    previous = f"{path.rstrip('/')}._previous"
    model.write().overwrite().save(staging)
    storage.delete(spark, previous)
    if storage.exists(spark, path):
        storage.rename(spark, path, previous)
    storage.rename(spark, staging, path)
    storage.delete(spark, previous)


def load_model(spark: SparkSession, path: str):  # noqa: ANN201 - any pyspark.ml model
    """Load a saved model, its Python class read from the model's own metadata."""
    if not storage.exists(spark, path):
        raise FileNotFoundError(f"no saved model under {path}: materialize it first")
    java_class = DefaultParamsReader.loadMetadata(path, spark.sparkContext)["class"]
    module_name, class_name = java_class.replace("org.apache.spark", "pyspark").rsplit(".", 1)
    return getattr(importlib.import_module(module_name), class_name).load(path)
