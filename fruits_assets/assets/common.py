"""What every Spark-backed asset needs: the classes of this run, checked against the images root."""

from __future__ import annotations

import warnings
from typing import Any

from dagster import AssetExecutionContext, BackfillPolicy, BetaWarning, Failure, ResourceParam
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import SparkSession

from fruits_assets.resources import FruitsSettings
from spark_code.layout import ImagesLayout, LayoutError, validate_class_name

# Single-run backfill policies are stable in use but still flagged beta; the flag is noise in every log.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=BetaWarning)

StepLauncherParam = ResourceParam[Any]
"""The `step_launcher` resource every Spark-backed asset declares: none in `local` (the step runs in this
process), dagster-aws's EMR step launcher in `prod` (the step runs on the cluster). The asset never calls it."""

SINGLE_RUN = BackfillPolicy.single_run()
"""A backfill over many classes is one run, hence one Spark job: per-class runs would each pay Spark and
TensorFlow start-up, which costs more than featurizing a class."""


def run_layout(context: AssetExecutionContext, settings: FruitsSettings) -> tuple[ImagesLayout, list[str]]:
    """The images layout and this run's classes; a bad root or unknown class fails fast with a clear message."""
    classes = sorted(context.partition_keys)
    try:
        for name in classes:
            validate_class_name(name)
        layout = settings.layout()
        layout.class_dirs(classes)
    except LayoutError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    context.log.info(f"{len(classes)} class(es) from {settings.images_root}")
    return layout, classes


def fresh_spark(pyspark: LazyPySparkResource) -> SparkSession:
    """The Spark session, with the caches of earlier steps dropped.

    Their outputs are written by then, and a cached DataFrame whose plan equals a new one (same files read again)
    would otherwise be served instead of reading the files afresh.
    """
    spark = pyspark.spark_session
    spark.catalog.clearCache()
    return spark
