"""Models: the PCA fitted on every class's training embeddings."""

from dataclasses import asdict

from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, asset
from pyspark.sql import DataFrame

from fruits_assets.assets.common import SPARK_RETRY, StepLauncherParam, check_settings, group_jobs, split_roles
from fruits_assets.failures import fail_at_once_when_permanent
from fruits_assets.plots import cumulative_variance_plot
from fruits_assets.resources import FruitsSettings
from spark_code.ml_models import ModelArtifact
from spark_code.pca import fit_pca
from spark_code.splits import TRAIN, rows_with_role


@asset(
    group_name="models",
    io_manager_key="spark_model_io_manager",
    ins={"image_embeddings": AssetIn()},
    kinds={"spark"},
    retry_policy=SPARK_RETRY,
)
@fail_at_once_when_permanent
def pca_model(
    context: AssetExecutionContext,
    step_launcher: StepLauncherParam,
    image_embeddings: DataFrame,
    settings: FruitsSettings,
) -> Output[ModelArtifact]:
    """PCA (pyspark.ml) on the training images of every class, never the evaluation hold-out; k reaches the target
    variance, at most pca_max_k."""
    # k is also at most the training images' rank (photos - 1); the metadata says when that cap applied.
    check_settings(settings)
    group_jobs(image_embeddings.sparkSession, "pca_model")
    roles = split_roles(settings, image_embeddings)
    fixed_k = settings.pca_k or None
    fit = fit_pca(rows_with_role(image_embeddings, roles, TRAIN), settings.pca_variance, fixed_k, settings.pca_max_k)
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
        "roles": asdict(roles),
        "embedding": asdict(settings.model),
    }
    return Output(
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
            "cumulative_variance": cumulative_variance_plot(
                fit.cumulative_variance, fit.k, None if fixed_k else settings.pca_variance
            ),
        },
    )
