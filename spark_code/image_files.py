"""Reading the image files of some classes into Spark and indexing them, without moving any row to the driver."""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from spark_code.images import ImageDecodeError, check_image
from spark_code.layout import NO_SPLIT, ImagesLayout, empty_files
from spark_code.storage import qualify

INDEX_COLUMNS = ["path", "label", "split", "size_bytes", "width", "height", "format", "error"]


_GLOB_CHARACTERS = "\\*?[]{}"


def literal(path: str) -> str:
    """A path Spark's reader takes as it is: Hadoop expands glob characters in the paths it is given, so a class
    `Apple [red]` would not be found and a class `Apple?` would also read `Apples`."""
    return "".join(f"\\{c}" if c in _GLOB_CHARACTERS else c for c in path)


def with_split_and_label(files: DataFrame, qualified_root: str, has_splits: bool = True) -> DataFrame:
    """Add `split` and `label` from `<root>/<split>/<class>/...`, or `<root>/<class>/...` with split NO_SPLIT
    (images in nested sub-folders keep their class)."""
    relative = F.substring("path", len(qualified_root) + 2, 1 << 30)
    parts = F.split(relative, "/")
    if not has_splits:
        return files.withColumn("split", F.lit(NO_SPLIT)).withColumn("label", parts.getItem(0))
    return files.withColumn("split", parts.getItem(0)).withColumn("label", parts.getItem(1))


def read_image_files(spark: SparkSession, layout: ImagesLayout, classes: list[str]) -> DataFrame:
    """Every visible file of the given classes, all splits: path, label, split, size_bytes, content.

    Spark's binaryFile source skips hidden files (names starting with '.' or '_'), so `.DS_Store` is never seen.
    It also skips zero-byte files; those are listed separately and added with empty content, to be rejected.
    """
    dirs = layout.class_dirs(classes)
    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load([literal(d) for d in dirs])
    files = files.select("path", F.col("length").alias("size_bytes"), "content")
    empty = [(f"{qualify(spark, folder)}/{name}", 0, b"") for folder in dirs for name in empty_files(folder)]
    if empty:
        files = files.unionByName(spark.createDataFrame(empty, files.schema))
    return with_split_and_label(files, qualify(spark, layout.root), layout.has_splits).select(
        "path", "label", "split", "size_bytes", "content"
    )


_CHECK_SCHEMA = StructType(
    [
        StructField("width", IntegerType()),
        StructField("height", IntegerType()),
        StructField("format", StringType()),
        StructField("error", StringType()),
    ]
)


@pandas_udf(_CHECK_SCHEMA)
def _check_images(contents: pd.Series) -> pd.DataFrame:
    rows = []
    for data in contents:
        try:
            width, height, fmt = check_image(bytes(data))
            rows.append((width, height, fmt, None))
        except ImageDecodeError as exc:  # the file's own fault: recorded; any other error fails the task
            rows.append((None, None, None, str(exc)))
    return pd.DataFrame(rows, columns=["width", "height", "format", "error"])


def index_images(files: DataFrame) -> DataFrame:
    """One row per file with its size, and its width, height and format read from its header; for a file whose header
    is no image (or declares a decompression bomb), the reason instead (else null). Pixels are decoded once, by the
    embedding, which rejects what does not decode."""
    checked = files.withColumn("_check", _check_images("content"))
    return checked.select(
        "path", "label", "split", "size_bytes", *[F.col(f"_check.{c}").alias(c) for c in INDEX_COLUMNS[4:]]
    )
