"""Class-partitioned Parquet folders (`<base>/label=<class>/`) where rewriting a class replaces only that class.

Writes go to a staging folder first and each class folder is then swapped in (spark_code.publish): a reader
always finds a complete version of a class, the new one or the previous one, even when the writer is killed
half-way; the next writer puts back what a dead writer left aside. A class whose new output is empty is replaced
by an empty (but present) folder.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_code import publish, storage
from spark_code.layout import validate_class_name
from spark_code.publish import ASIDE, STAGING

PARTITION_COLUMN = "label"


class MissingClassError(LookupError):
    """A class was asked for that has never been written to this folder."""


def class_dir(spark: SparkSession, base: str, name: str) -> str:
    """`<base>/label=<escaped name>`; a name that could escape `base` is refused."""
    validate_class_name(name)
    return f"{base.rstrip('/')}/{PARTITION_COLUMN}={storage.escape_partition_value(spark, name)}"


def recover(spark: SparkSession, base: str) -> list[str]:
    """Put back the class folders that dead writers moved aside and delete their staging folders.

    Returns the class folders put back (e.g. `label=Kiwi`).
    """
    base = base.rstrip("/")
    names = storage.list_names(spark, base)
    restored = []
    for name in (n for n in names if n.startswith(ASIDE) and publish.owner_is_dead(n)):
        folder = f"{base}/{name}"
        for entry in storage.list_names(spark, folder):
            if entry.startswith(f"{PARTITION_COLUMN}=") and publish.restore(
                spark, f"{base}/{entry}", f"{folder}/{entry}"
            ):
                restored.append(entry)
        storage.delete(spark, folder)
    for name in (n for n in names if n.startswith(STAGING) and publish.owner_is_dead(n)):
        storage.delete(spark, f"{base}/{name}")
    return restored


def write_classes(df: DataFrame, base: str, classes: list[str]) -> dict[str, int]:
    """Replace the given classes under `base` with the rows of `df` (which must only hold those classes).

    Returns the number of rows written per class (0 for a class with no rows).
    """
    spark = df.sparkSession
    base = base.rstrip("/")
    targets = {name: class_dir(spark, base, name) for name in classes}
    recover(spark, base)
    tag = publish.temp_tag()
    staging, aside = f"{base}/{STAGING}{tag}", f"{base}/{ASIDE}{tag}"
    df.write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(staging)
    written = spark.read.schema(df.schema).option("basePath", staging).parquet(staging)
    counts = {row[PARTITION_COLUMN]: row["count"] for row in written.groupBy(PARTITION_COLUMN).count().collect()}
    unexpected = sorted(set(counts) - set(classes))
    if unexpected:
        storage.delete(spark, staging)
        raise ValueError(f"rows of classes {unexpected} do not belong to this write (classes {classes})")
    empty_schema = df.drop(PARTITION_COLUMN).schema
    try:
        for name, target in targets.items():
            staged = class_dir(spark, staging, name)
            if name not in counts:
                spark.createDataFrame([], empty_schema).coalesce(1).write.parquet(staged)
            publish.publish(spark, staged, target, class_dir(spark, aside, name))
    finally:
        for name, target in targets.items():
            publish.restore(spark, target, class_dir(spark, aside, name))
        storage.delete(spark, staging)
        storage.delete(spark, aside)
    return {name: int(counts.get(name, 0)) for name in classes}


def _published_dirs(spark: SparkSession, base: str, classes: list[str]) -> dict[str, str | None]:
    """Each class's complete folder: its own, or the previous version a writer has moved aside."""
    asides = [f"{base}/{n}" for n in storage.list_names(spark, base) if n.startswith(ASIDE)]
    return {
        name: publish.current(spark, class_dir(spark, base, name), [class_dir(spark, a, name) for a in asides])
        for name in classes
    }


def read_classes(spark: SparkSession, base: str, classes: list[str]) -> DataFrame:
    """The rows of the given classes, `label` as the second column; a class never written is a clear error."""
    base = base.rstrip("/")
    dirs = _published_dirs(spark, base, classes)
    missing = [name for name, path in dirs.items() if path is None]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise MissingClassError(f"no data for class(es) {shown} under {base}: materialize them first")
    by_parent: dict[str, list[str]] = {}
    for path in dirs.values():
        by_parent.setdefault(path.rsplit("/", 1)[0], []).append(path)
    parts = [spark.read.option("basePath", parent).parquet(*paths) for parent, paths in by_parent.items()]
    df = parts[0]
    for part in parts[1:]:
        df = df.unionByName(part)
    others = [c for c in df.columns if c not in {"path", PARTITION_COLUMN}]
    return df.select("path", F.col(PARTITION_COLUMN), *others)


def _table_temps(spark: SparkSession, base: str, prefix: str) -> list[str]:
    """Temporary siblings `<base>.<prefix><tag>` of a table folder."""
    parent, name = base.rsplit("/", 1) if "/" in base else (".", base)
    return [f"{parent}/{n}" for n in storage.list_names(spark, parent) if n.startswith(f"{name}.{prefix}")]


def write_table(df: DataFrame, base: str) -> int:
    """Replace the whole folder with `df` (partitioned by class for readers), swapped in once written."""
    spark = df.sparkSession
    base = base.rstrip("/")
    for leftover in _table_temps(spark, base, ASIDE):
        if publish.owner_is_dead(leftover.rsplit("/", 1)[-1]):
            publish.restore(spark, base, leftover)
    for leftover in _table_temps(spark, base, STAGING):
        if publish.owner_is_dead(leftover.rsplit("/", 1)[-1]):
            storage.delete(spark, leftover)
    tag = publish.temp_tag()
    staging, aside = f"{base}.{STAGING}{tag}", f"{base}.{ASIDE}{tag}"
    df.write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(staging)
    rows = spark.read.schema(df.schema).parquet(staging).count()
    try:
        publish.publish(spark, staging, base, aside)
    finally:
        publish.restore(spark, base, aside)
        storage.delete(spark, staging)
    return rows


def read_table(spark: SparkSession, base: str) -> DataFrame:
    """A folder written by write_table, `label` as the second column."""
    base = base.rstrip("/")
    found = publish.current(spark, base, _table_temps(spark, base, ASIDE))
    if found is None:
        raise MissingClassError(f"no data under {base}: materialize it first")
    df = spark.read.parquet(found)
    others = [c for c in df.columns if c not in {"path", PARTITION_COLUMN}]
    return df.select("path", F.col(PARTITION_COLUMN), *others)
