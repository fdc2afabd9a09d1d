"""Data-quality checks, run with the assets they check, on the classes of the run."""

from dagster import AssetCheckResult, AssetCheckSeverity, AssetIn, MetadataValue, asset_check
from pyspark.ml.feature import PCAModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_code.settings import EMBEDDING_WIDTH


def _width_problems(df: DataFrame, column: str, width: int) -> tuple[int, int, int]:
    """Rows, rows whose array is not `width` long, and rows holding a NaN, in one Spark aggregation."""
    row = df.agg(
        F.count("*").alias("rows"),
        F.sum((F.size(column) != width).cast("int")).alias("wrong_width"),
        F.sum(F.exists(column, lambda x: F.isnan(x)).cast("int")).alias("with_nan"),
    ).first()
    return int(row["rows"]), int(row["wrong_width"] or 0), int(row["with_nan"] or 0)


@asset_check(asset="image_embeddings", blocking=True)
def embeddings_are_1280_wide_without_nan(image_embeddings: DataFrame) -> AssetCheckResult:
    """Every embedding has exactly 1280 finite-or-infinite but never NaN values."""
    rows, wrong_width, with_nan = _width_problems(image_embeddings, "features", EMBEDDING_WIDTH)
    return AssetCheckResult(
        passed=rows > 0 and wrong_width == 0 and with_nan == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={"rows": rows, "wrong_width": wrong_width, "with_nan": with_nan},
    )


@asset_check(
    asset="image_embeddings",
    additional_ins={"raw_images": AssetIn(), "rejected_images": AssetIn()},
    blocking=True,
)
def every_indexed_file_is_embedded_or_rejected(
    image_embeddings: DataFrame, raw_images: DataFrame, rejected_images: DataFrame
) -> AssetCheckResult:
    """Nothing lost, nothing doubled: embeddings + rejected = files indexed, with no path twice."""
    indexed = raw_images.count()
    embedded = image_embeddings.count()
    rejected = rejected_images.count()
    distinct = image_embeddings.select("path").unionByName(rejected_images.select("path")).distinct().count()
    return AssetCheckResult(
        passed=embedded + rejected == indexed == distinct,
        metadata={
            "files_indexed": MetadataValue.int(indexed),
            "embedded": MetadataValue.int(embedded),
            "rejected": MetadataValue.int(rejected),
            "distinct_paths": MetadataValue.int(distinct),
        },
    )


@asset_check(asset="reduced_features", additional_ins={"pca_model": AssetIn()}, blocking=True)
def reduced_width_equals_k(reduced_features: DataFrame, pca_model: PCAModel) -> AssetCheckResult:
    """Every reduced vector has exactly k values, none NaN."""
    k = pca_model.getK()
    rows, wrong_width, with_nan = _width_problems(reduced_features, "pca_features", k)
    return AssetCheckResult(
        passed=rows > 0 and wrong_width == 0 and with_nan == 0,
        metadata={"k": k, "rows": rows, "wrong_width": wrong_width, "with_nan": with_nan},
    )
