"""Models: the PCA fitted on every class's training embeddings."""

from dataclasses import asdict

from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, asset
from pyspark.sql import DataFrame

from fruits_assets.assets.common import SPARK_RETRY, StepLauncherParam, check_settings, group_jobs
from fruits_assets.plots import cumulative_variance_plot
from fruits_assets.resources import FruitsSettings
from spark_code.ml_models import ModelArtifact
from spark_code.pca import fit_pca


@asset(
    group_name="models",
    io_manager_key="spark_model_io_manager",
    ins={"image_embeddings": AssetIn()},
    kinds={"spark"},
    retry_policy=SPARK_RETRY,
)
def pca_model(
    context: AssetExecutionContext,
    step_launcher: StepLauncherParam,
    image_embeddings: DataFrame,
    settings: FruitsSettings,
) -> Output[ModelArtifact]:
    """pyspark.ml PCA on the training split of every class; k reaches the target variance (at most pca_max_k: the
    classifier's accuracy is measured at k <= 100) unless fixed."""
    check_settings(settings)
    group_jobs(image_embeddings.sparkSession, "pca_model")
    fixed_k = settings.pca_k or None
    fit = fit_pca(image_embeddings, settings.pca_variance, fixed_k, settings.training_split, settings.pca_max_k)
    context.log.info(f"PCA k={fit.k} explains {fit.explained_variance:.4f} of the variance")
    notes = {
        "k": fit.k,
        "explained_variance": fit.explained_variance,
        "training_split": settings.training_split,
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
            "training_rows": MetadataValue.int(fit.training_rows),
            "cumulative_variance": cumulative_variance_plot(
                fit.cumulative_variance, fit.k, None if fixed_k else settings.pca_variance
            ),
        },
    )
