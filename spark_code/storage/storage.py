"""The driver's folder operations (list, delete, small files) through pyarrow's filesystems: one code path for
local disk and S3, with no Hadoop connector needed, so the S3 path is tested against a real S3 API server.

Only the driver calls these; they handle folders and pointer files, never rows. Spark reads and writes the data.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pyspark.sql import SparkSession

from spark_code.photos.layout import is_remote, local_path

S3_PATIENCE = {
    "connect_timeout": 10.0,
    "request_timeout": 60.0,
    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=8),
}
"""Timeouts and retries of the driver's S3 calls: the AWS SDK's defaults (1 s to connect, 3 s a request, 3
attempts) fail a run on one slow answer from a busy endpoint; these ride out throttling and a loaded server."""
REMOTE_READERS = 16
"""Objects read at a time from S3 where many are read one by one (a task's photos, the feedback records): each GET
mostly waits on the network."""


def s3_environment() -> tuple[str | None, str | None]:
    """The S3 region (AWS_REGION / AWS_DEFAULT_REGION) and endpoint (AWS_ENDPOINT_URL(_S3)) the environment sets, or
    None for each it does not: what every S3 client of the project honours."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return region or None, os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a local path, file: URI or s3:// (s3a://, s3n://) URI, and the path within it.

    S3 uses the standard AWS credential chain; the region comes from AWS_REGION / AWS_DEFAULT_REGION when set (no
    bucket lookup, which a least-privilege role may not be allowed); AWS_ENDPOINT_URL(_S3) is honoured.
    """
    if not is_remote(uri):
        return pafs.LocalFileSystem(), os.path.abspath(local_path(uri))
    path = uri.split("://", 1)[1]
    region, endpoint = s3_environment()
    if not region:
        region = pafs.resolve_s3_region(path.split("/", 1)[0])
    where = {}
    if endpoint:
        parsed = urlparse(endpoint)
        where = {"endpoint_override": parsed.netloc, "scheme": parsed.scheme or "https"}
    return pafs.S3FileSystem(region=region, **where, **S3_PATIENCE), path


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def delete(uri: str) -> None:
    """Delete a folder with everything under it, or a file; missing is fine."""
    fs, path = filesystem(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


def newest_mtime(uri: str) -> float | None:
    """When anything under a folder (itself included), or a file, was last modified, in seconds since the epoch:
    None when it is missing or nothing has a time (S3 has none for folders, only for objects).

    Times come from the filesystem: the local clock on disk, the object's upload time (the server's clock) on S3.
    """
    fs, path = filesystem(uri)
    infos = [fs.get_file_info(path)]
    if infos[0].type == pafs.FileType.Directory:
        infos += fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    times = [info.mtime_ns for info in infos if info.type != pafs.FileType.NotFound and info.mtime_ns is not None]
    return max(times) / 1e9 if times else None


def list_names(uri: str) -> list[str]:
    """Names of the entries directly under a folder, sorted; a missing folder has none."""
    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos)


def read_text(uri: str) -> str | None:
    """A small UTF-8 file's text, or None when it does not exist."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read().decode("utf-8")
    except FileNotFoundError:
        return None


def write_bytes(uri: str, data: bytes) -> None:
    """Replace a file atomically: a reader finds the old bytes or the new ones, never a part, and a writer killed
    midway leaves no part under the name.

    On S3 an object appears whole when its upload completes. On local disk the bytes go to a hidden temporary file
    beside the target (hidden from Spark's readers and the listings), then renamed over it (atomic on POSIX).
    """
    fs, path = filesystem(uri)
    if is_remote(uri):
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    folder, name = path.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(temporary) as out:
        out.write(data)
    fs.move(temporary, path)


def write_text(uri: str, text: str) -> None:
    """Replace a small UTF-8 file atomically (see write_bytes)."""
    write_bytes(uri, text.encode("utf-8"))


def qualify(spark: SparkSession, uri: str) -> str:
    """The fully qualified form Spark writes in `path` columns (e.g. `file:/abs/dir`, `s3://bucket/dir`)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs.makeQualified(path).toString().rstrip("/")


def escape_partition_value(spark: SparkSession, value: str) -> str:
    """The folder name Spark gives a partition value (it escapes characters such as ':', '%', '=')."""
    utils = spark.sparkContext._jvm.org.apache.spark.sql.catalyst.catalog.ExternalCatalogUtils
    return str(utils.escapePathName(value))
