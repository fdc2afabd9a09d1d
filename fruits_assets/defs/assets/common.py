"""What every Spark-backed asset needs: the classes of this run checked against the images root, settings that
fail fast when they cannot work, and the retry policy for transient failures."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetObservation,
    BackfillPolicy,
    Backoff,
    BetaWarning,
    Failure,
    MetadataValue,
    ResourceParam,
    RetryPolicy,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame, SparkSession

from fruits_assets.defs.resources import FruitsSettings
from spark_code.photos.augment import MAX_VIEWS
from spark_code.photos.layout import ImagesLayout, is_remote, validate_class_name
from spark_code.photos.splits import SplitRoles, split_names
from spark_code.settings import EMBEDDING_WIDTH

# Single-run backfill policies are stable in use but still flagged beta; the flag is noise in every log.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=BetaWarning)
warnings.filterwarnings("ignore", message=".*observable_source_asset.*", category=BetaWarning)

StepLauncherParam = ResourceParam[Any]
"""The `step_launcher` resource every Spark-backed asset declares: none in `local` (the step runs in this
process), dagster-aws's EMR step launcher in `prod` (the step runs on the cluster). The asset never calls it."""

SINGLE_RUN = BackfillPolicy.single_run()
"""A backfill over many classes is one run, hence one Spark job: per-class runs would each pay Spark and
TensorFlow start-up, which costs more than featurizing a class."""


SPARK_RETRY = RetryPolicy(max_retries=2, delay=5, backoff=Backoff.EXPONENTIAL)
"""Spark-backed assets retry a failed step twice, 5 s then 15 s later: a lost executor, a storage hiccup or a
dropped connection usually clears. Failures that cannot clear raise Failure(allow_retries=False) instead."""

MOBILENET_ALPHAS = (0.35, 0.5, 0.75, 1.0)
"""Width multipliers MobileNetV2 has ImageNet weights for and whose pooled features are EMBEDDING_WIDTH wide. Keras
also has weights for 1.3 and 1.4, but their last block is widened to 1664 and 1792 features, which the embeddings'
contract, its check and the saved models' readers do not take: refused with that reason rather than failing every
run's blocking check."""
WIDER_ALPHAS = {1.3: 1664, 1.4: 1792}


def settings_problems(settings: FruitsSettings) -> list[str]:
    """What makes these settings unusable, for a person to read; empty when they can work."""
    model = settings.model
    problems = []
    if model.weights != "imagenet" and not is_remote(model.weights) and not os.path.isfile(model.weights):
        problems.append(f"MobileNetV2 weights file not found: {model.weights}")
    if model.alpha in WIDER_ALPHAS:
        problems.append(
            f"model_alpha {model.alpha} gives {WIDER_ALPHAS[model.alpha]}-wide features, not the pipeline's "
            f"{EMBEDDING_WIDTH}: use one of {', '.join(map(str, MOBILENET_ALPHAS))}"
        )
    elif model.alpha not in MOBILENET_ALPHAS:
        problems.append(f"model_alpha {model.alpha} is not one of {', '.join(map(str, MOBILENET_ALPHAS))}")
    if model.image_size < 32:
        problems.append(f"image_size {model.image_size} is below MobileNetV2's minimum of 32")
    if not 0 <= settings.augment_views <= MAX_VIEWS:
        problems.append(f"augment_views {settings.augment_views} must be between 0 and {MAX_VIEWS}")
    if model.batch_size < 1:
        problems.append(f"batch_size {model.batch_size} must be at least 1")
    if not 0 < settings.pca_variance <= 1:
        problems.append(f"pca_variance {settings.pca_variance} must be in (0, 1]")
    if not 0 <= settings.pca_k <= EMBEDDING_WIDTH:
        problems.append(f"pca_k {settings.pca_k} must be between 0 (chosen by variance) and {EMBEDDING_WIDTH}")
    if not 1 <= settings.pca_max_k <= EMBEDDING_WIDTH:
        problems.append(f"pca_max_k {settings.pca_max_k} must be between 1 and {EMBEDDING_WIDTH}")
    if not 0 < settings.holdout_fraction < 1:
        problems.append(f"holdout_fraction {settings.holdout_fraction} must be between 0 and 1")
    if not 0 < settings.feedback_sender_share <= 1:
        problems.append(f"feedback_sender_share {settings.feedback_sender_share} must be above 0 and at most 1")
    if not 0 <= settings.max_rejected_share <= 1:
        problems.append(f"max_rejected_share {settings.max_rejected_share} must be between 0 and 1")
    for name in ("pca_refit_share", "classifier_search_share"):
        if not 0 <= getattr(settings, name) <= 1:
            problems.append(f"{name} {getattr(settings, name)} must be between 0 and 1")
    if not 0 <= settings.min_field_fruit_accuracy <= 1:
        problems.append(f"min_field_fruit_accuracy {settings.min_field_fruit_accuracy} must be between 0 and 1")
    for name in ("class_depth", "field_class_depth"):
        if getattr(settings, name) < 0:
            problems.append(f"{name} {getattr(settings, name)} must be 0 (the leaf folders) or more")
    if not settings.feedback_weight > 0:
        problems.append(f"feedback_weight {settings.feedback_weight} must be above 0")
    if settings.classifier_max_iter < 1:
        problems.append(f"classifier_max_iter {settings.classifier_max_iter} must be at least 1")
    try:
        if not all(0 <= penalty < math.inf for penalty in settings.penalties):  # NaN fails too
            problems.append(f"classifier_penalties {settings.classifier_penalties!r} must be numbers of 0 or more")
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def check_settings(settings: FruitsSettings) -> None:
    """Fail the step at once, without retries, when the settings cannot work."""
    problems = settings_problems(settings)
    if problems:
        raise Failure(description="invalid settings: " + "; ".join(problems), allow_retries=False)


def run_layout(context: AssetExecutionContext, settings: FruitsSettings) -> tuple[ImagesLayout, list[str]]:
    """The images layout and this run's classes; bad settings, a bad root or an unknown class fail fast (no
    retries: they are PermanentErrors, see fruits_assets.defs.steps) with a clear message."""
    check_settings(settings)
    classes = sorted(context.partition_keys)
    for name in classes:
        validate_class_name(name)
    layout = settings.layout()
    layout.class_dirs(classes)
    settings.roles(layout.splits)
    context.log.info(f"{len(classes)} class(es) from {settings.images_root}")
    return layout, classes


def split_roles(settings: FruitsSettings, rows: DataFrame) -> SplitRoles:
    """The roles of the splits present in some rows (the settings' names, else found by name); settings that do not
    fit the data fail at once, without retries."""
    return settings.roles(split_names(rows))


def fresh_spark(pyspark: LazyPySparkResource, asset: str | None = None) -> SparkSession:
    """The Spark session, with the caches of earlier steps dropped; the step's Spark jobs are grouped under the
    asset's name (Spark UI, status tracker).

    Earlier outputs are written by then, and a cached DataFrame whose plan equals a new one (same files read again)
    would otherwise be served instead of reading the files afresh.
    """
    spark = pyspark.spark_session
    spark.catalog.clearCache()
    if asset:
        group_jobs(spark, asset)
    return spark


def group_jobs(spark: SparkSession, asset: str) -> None:
    """Name the Spark jobs this thread starts from now on after the asset (Spark UI, status tracker)."""
    spark.sparkContext.setJobGroup(asset, f"fruits asset {asset}")


SKIPPED = "skipped"
"""Metadata key of the observation an asset records when it has nothing to compute (the reason)."""


def skipped(context: AssetExecutionContext, asset_name: str, reason: str) -> AssetObservation:
    """Log why an asset produced nothing this time, and record it where the UI and the main job's summary find it."""
    context.log.warning(f"{asset_name} skipped: {reason}")
    return AssetObservation(asset_key=asset_name, metadata={SKIPPED: MetadataValue.text(reason)})
