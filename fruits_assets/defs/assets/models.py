"""Models: the PCA fitted on every class's training embeddings, again only when the refit rule says so."""

from collections.abc import Iterator
from dataclasses import asdict

from dagster import AssetExecutionContext, AssetIn, AssetObservation, MetadataValue, Output, asset
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_assets.defs.assets.common import (
    SPARK_RETRY,
    StepLauncherParam,
    check_settings,
    group_jobs,
    skipped,
    split_roles,
)
from fruits_assets.defs.automation import AFTER_UPSTREAM_DECISIONS, code_version
from fruits_assets.defs.io_managers import PUBLISHED_CLASSES_ONLY
from fruits_assets.defs.plots import cumulative_variance_plot
from fruits_assets.defs.resources import FruitsSettings, PublishedOutputs
from fruits_assets.defs.staleness import pca_context
from fruits_assets.defs.steps import asset_step
from spark_code.models.ml_models import ModelArtifact, published_notes
from spark_code.models.pca import fit_pca
from spark_code.models.pca_refit import TRAINING_ROWS, kept_reason, refit_reason
from spark_code.photos.splits import ROLE, TRAIN, rows_with_role, with_roles


@asset(
    group_name="models",
    io_manager_key="spark_model_io_manager",
    ins={"image_embeddings": AssetIn(metadata={PUBLISHED_CLASSES_ONLY: True})},
    kinds={"spark"},
    retry_policy=SPARK_RETRY,
    output_required=False,
    automation_condition=AFTER_UPSTREAM_DECISIONS,
    code_version=code_version("pca_model"),
)
@asset_step
def pca_model(
    context: AssetExecutionContext,
    step_launcher: StepLauncherParam,
    image_embeddings: DataFrame,
    settings: FruitsSettings,
    outputs: PublishedOutputs,
) -> Iterator[Output[ModelArtifact] | AssetObservation]:
    """PCA (pyspark.ml) on the training images of every class, never the evaluation hold-out; k reaches the target
    variance, at most pca_max_k."""
    # k is also at most the training images' rank (photos - 1); the metadata says when that cap applied.
    # Fitted again only by the refit rule (spark_code.models.pca_refit): otherwise the published PCA is kept, nothing is
    # materialized and the reason is recorded. (The docstring is the UI's description: kept short for its catalog.)
    check_settings(settings)
    group_jobs(image_embeddings.sparkSession, "pca_model")
    roles = split_roles(settings, image_embeddings)
    training = rows_with_role(image_embeddings, roles, TRAIN)
    per_class = with_roles(image_embeddings, roles).groupBy("label").agg(F.sum((F.col(ROLE) == TRAIN).cast("int")))
    photos = {row[0]: row[1] for row in per_class.collect()}  # one row per class, not per photo
    training_rows = {label: count for label, count in photos.items() if count}
    fit_context = pca_context(settings, asdict(roles))
    previous = published_notes(outputs.path("pca_model"))
    reason = refit_reason(previous, training_rows, fit_context, settings.pca_refit_share)
    if reason is None:
        yield skipped(context, "pca_model", kept_reason(previous, training_rows, settings.pca_refit_share))
        return
    context.log.info(f"fitting the PCA: {reason}")
    fixed_k = settings.pca_k or None
    fit = fit_pca(training, settings.pca_variance, fixed_k, settings.pca_max_k)
    context.log.info(f"PCA k={fit.k} explains {fit.explained_variance:.4f} of the variance")
    capped = fit.k < fit.requested_k
    if capped:
        context.log.warning(
            f"PCA k capped at {fit.k} instead of {fit.requested_k}: {fit.training_rows} training images span at "
            f"most {fit.training_rows - 1} directions"
        )
    notes = {
        "k": fit.k,
        "explained_variance": fit.explained_variance,
        "classes": sorted(photos),  # with or without training photos
        TRAINING_ROWS: training_rows,
        **fit_context,
    }
    yield Output(
        ModelArtifact(fit.model, notes),
        metadata={
            "k": MetadataValue.int(fit.k),
            "explained_variance": MetadataValue.float(fit.explained_variance),
            "target_variance": MetadataValue.float(settings.pca_variance)
            if fixed_k is None
            else MetadataValue.text("fixed k"),
            "max_k": MetadataValue.int(settings.pca_max_k),
            "requested_k": MetadataValue.int(fit.requested_k),
            "k_capped_by_training_images": MetadataValue.bool(capped),
            "training_rows": MetadataValue.int(fit.training_rows),
            "training_images": MetadataValue.text(roles.describe_training()),
            "refit_because": MetadataValue.text(reason),
            "cumulative_variance": cumulative_variance_plot(
                fit.cumulative_variance, fit.k, None if fixed_k else settings.pca_variance
            ),
        },
    )
