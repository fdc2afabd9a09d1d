"""Filesystem operations through Hadoop's FileSystem API, so one code path serves local disk, HDFS and S3.

Only the driver calls these; they move folders, never rows.
"""

from __future__ import annotations

from pyspark.sql import SparkSession


def _fs_and_path(spark: SparkSession, uri: str):  # noqa: ANN202 - py4j objects
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def qualify(spark: SparkSession, uri: str) -> str:
    """The fully qualified form Spark writes in `path` columns (e.g. `file:/abs/dir`, `s3://bucket/dir`)."""
    fs, path = _fs_and_path(spark, uri)
    return fs.makeQualified(path).toString().rstrip("/")


def exists(spark: SparkSession, uri: str) -> bool:
    fs, path = _fs_and_path(spark, uri)
    return bool(fs.exists(path))


def delete(spark: SparkSession, uri: str) -> None:
    """Recursive delete; missing is fine."""
    fs, path = _fs_and_path(spark, uri)
    fs.delete(path, True)


def rename(spark: SparkSession, source: str, target: str) -> None:
    """Move a folder; the target's parent is created first. Fails loudly rather than leaving a half state."""
    fs, src = _fs_and_path(spark, source)
    _, dst = _fs_and_path(spark, target)
    fs.mkdirs(dst.getParent())
    if not fs.rename(src, dst):
        raise OSError(f"could not move {source} to {target}")


def list_names(spark: SparkSession, uri: str) -> list[str]:
    """Names of the entries directly under a folder, sorted; a missing folder has none."""
    fs, path = _fs_and_path(spark, uri)
    if not fs.exists(path):
        return []
    return sorted(str(status.getPath().getName()) for status in fs.listStatus(path))


def escape_partition_value(spark: SparkSession, value: str) -> str:
    """The folder name Spark gives a partition value (it escapes characters such as ':', '%', '=')."""
    utils = spark.sparkContext._jvm.org.apache.spark.sql.catalyst.catalog.ExternalCatalogUtils
    return str(utils.escapePathName(value))


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """Write a small UTF-8 file (overwriting)."""
    fs, path = _fs_and_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()
