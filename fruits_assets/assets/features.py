"""Features: MobileNetV2 embeddings (with the images they reject) and their PCA reduction, per class."""

from dagster import AssetExecutionContext, AssetIn, AssetOut, MetadataValue, Output, asset, multi_asset
from dagster_pyspark import LazyPySparkResource
from pyspark.ml.feature import PCAModel
from pyspark.sql import DataFrame

from fruits_assets.assets.common import SINGLE_RUN, run_layout
from fruits_assets.partitions import fruit_class_partitions
from fruits_assets.resources import FruitsSettings
from spark_code.embeddings import accepted, embed_images, rejected, ship_weights
from spark_code.image_files import read_image_files
from spark_code.pca import apply_pca


@multi_asset(
    outs={
        "image_embeddings": AssetOut(
            io_manager_key="class_parquet_io_manager",
            description="MobileNetV2 (ImageNet) pooled features of each image: path, label, split, features[1280].",
            kinds={"spark", "tensorflow"},
        ),
        "rejected_images": AssetOut(
            io_manager_key="class_parquet_io_manager",
            description="Files that could not be decoded as images: path, label, split, reason.",
            kinds={"spark"},
        ),
    },
    ins={"raw_images": AssetIn()},
    partitions_def=fruit_class_partitions,
    backfill_policy=SINGLE_RUN,
    group_name="features",
)
def image_embeddings(
    context: AssetExecutionContext,
    raw_images: DataFrame,
    settings: FruitsSettings,
    pyspark: LazyPySparkResource,
) -> tuple[Output[DataFrame], Output[DataFrame]]:
    """Embed every indexed image of the run's classes; undecodable files go to rejected_images, not to failure."""
    spark = pyspark.spark_session
    layout, classes = run_layout(context, settings)
    model = settings.model
    ship_weights(spark, model)
    files = read_image_files(spark, layout, classes).join(raw_images.select("path"), "path", "left_semi")
    # Both outputs come from one pass of the model: the second write reads the cached result.
    embedded = embed_images(files, model).persist()
    model_metadata = {
        "model_weights": MetadataValue.text(model.weights),
        "model_alpha": MetadataValue.float(model.alpha),
        "image_size": MetadataValue.int(model.image_size),
    }
    return Output(accepted(embedded), metadata=model_metadata), Output(rejected(embedded))


@asset(
    partitions_def=fruit_class_partitions,
    backfill_policy=SINGLE_RUN,
    group_name="features",
    io_manager_key="class_parquet_io_manager",
    ins={"image_embeddings": AssetIn(), "pca_model": AssetIn()},
    kinds={"spark"},
)
def reduced_features(
    context: AssetExecutionContext, image_embeddings: DataFrame, pca_model: PCAModel
) -> Output[DataFrame]:
    """Each image's embedding projected on the PCA components: path, label, split, pca_features[k]."""
    context.log.info(f"projecting {len(context.partition_keys)} class(es) on {pca_model.getK()} components")
    return Output(apply_pca(pca_model, image_embeddings), metadata={"k": MetadataValue.int(pca_model.getK())})
