"""Class-partitioned Parquet folders (`<base>/label=<class>/`) where rewriting a class replaces only that class.

Writes go to a staging folder first and each class folder is then swapped in, so a reader never sees a half
written class, and a class whose new output is empty is replaced by an empty (but present) folder.
"""

from __future__ import annotations

import uuid

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_code import storage

PARTITION_COLUMN = "label"


class MissingClassError(LookupError):
    """A class was asked for that has never been written to this folder."""


def class_dir(spark: SparkSession, base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{PARTITION_COLUMN}={storage.escape_partition_value(spark, name)}"


def write_classes(df: DataFrame, base: str, classes: list[str]) -> dict[str, int]:
    """Replace the given classes under `base` with the rows of `df` (which must only hold those classes).

    Returns the number of rows written per class (0 for a class with no rows).
    """
    spark = df.sparkSession
    run = uuid.uuid4().hex
    staging = f"{base.rstrip('/')}/_staging-{run}"
    trash = f"{base.rstrip('/')}/_trash-{run}"
    df.write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(staging)
    written = spark.read.schema(df.schema).option("basePath", staging).parquet(staging)
    counts = {row[PARTITION_COLUMN]: row["count"] for row in written.groupBy(PARTITION_COLUMN).count().collect()}
    unexpected = sorted(set(counts) - set(classes))
    if unexpected:
        storage.delete(spark, staging)
        raise ValueError(f"rows of classes {unexpected} do not belong to this write (classes {classes})")
    empty_schema = df.drop(PARTITION_COLUMN).schema
    try:
        for name in classes:
            staged = class_dir(spark, staging, name)
            if name not in counts:
                spark.createDataFrame([], empty_schema).coalesce(1).write.parquet(staged)
            target = class_dir(spark, base, name)
            if storage.exists(spark, target):
                storage.rename(spark, target, class_dir(spark, trash, name))
            storage.rename(spark, staged, target)
    finally:
        storage.delete(spark, staging)
        storage.delete(spark, trash)
    return {name: int(counts.get(name, 0)) for name in classes}


def read_classes(spark: SparkSession, base: str, classes: list[str]) -> DataFrame:
    """The rows of the given classes, `label` as the second column; a class never written is a clear error."""
    dirs = [class_dir(spark, base, name) for name in classes]
    missing = [name for name, path in zip(classes, dirs, strict=True) if not storage.exists(spark, path)]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise MissingClassError(f"no data for class(es) {shown} under {base}: materialize them first")
    df = spark.read.option("basePath", base).parquet(*dirs)
    others = [c for c in df.columns if c not in {"path", PARTITION_COLUMN}]
    return df.select("path", F.col(PARTITION_COLUMN), *others)


def write_table(df: DataFrame, base: str) -> int:
    """Replace the whole folder with `df` (partitioned by class for readers), swapped in once written."""
    spark = df.sparkSession
    run = uuid.uuid4().hex
    staging, previous = f"{base.rstrip('/')}._staging-{run}", f"{base.rstrip('/')}._previous-{run}"
    df.write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(staging)
    rows = spark.read.schema(df.schema).parquet(staging).count()
    if storage.exists(spark, base):
        storage.rename(spark, base, previous)
    storage.rename(spark, staging, base)
    storage.delete(spark, previous)
    return rows


def read_table(spark: SparkSession, base: str) -> DataFrame:
    """A folder written by write_table, `label` as the second column."""
    if not storage.exists(spark, base):
        raise MissingClassError(f"no data under {base}: materialize it first")
    df = spark.read.parquet(base)
    others = [c for c in df.columns if c not in {"path", PARTITION_COLUMN}]
    return df.select("path", F.col(PARTITION_COLUMN), *others)
