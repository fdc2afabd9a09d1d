"""Reading the image files of some classes into Spark and indexing them, without moving any row to the driver.

An index row keeps what the file's listing said (size, modification time) beside its content's SHA-256: a later
index of the same class reads again only the files whose listing entry changed (`reindex`), so the cost of indexing
follows the new photos, not all of them.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow.fs as pafs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import BinaryType, IntegerType, StringType, StructField, StructType

from spark_code.photos.images import ImageDecodeError, check_image
from spark_code.photos.layout import NO_SPLIT, ImagesLayout, empty_files, is_remote, join_uri
from spark_code.storage import storage
from spark_code.storage.storage import REMOTE_READERS, qualify

CONTENT_KEY = "content_hash"
"""The SHA-256 of a file's bytes (hex): what the embedding store keys embeddings by."""
LISTING_ENTRY = ["path", "size_bytes", "modified"]
"""What a file's listing says of it: a file whose entry is unchanged since it was indexed is not read again."""
INDEX_FORMAT = "2"
"""Bumped when INDEX_COLUMNS change: an index of another format is read again in full (2: content hash and
modification time)."""
INDEX_COLUMNS = ["path", "label", "split", "size_bytes", "modified", CONTENT_KEY, "width", "height", "format", "error"]


_GLOB_CHARACTERS = "\\*?[]{}"


def literal(path: str) -> str:
    """A path Spark's reader takes as it is: Hadoop expands glob characters in the paths it is given, so a class
    `Apple [red]` would not be found and a class `Apple?` would also read `Apples`."""
    return "".join(f"\\{c}" if c in _GLOB_CHARACTERS else c for c in path)


def with_split_and_label(files: DataFrame, qualified_root: str, layout: ImagesLayout) -> DataFrame:
    """Add `split` and `label` from `<root>/<split>/<class>/...`, or `<root>/<class>/...` with split NO_SPLIT, the
    class folder lying as deep as the layout says (images in sub-folders of a class folder keep its class)."""
    relative = F.substring("path", len(qualified_root) + 2, 1 << 30)
    parts = F.split(relative, "/")
    split = parts.getItem(0) if layout.has_splits else F.lit(NO_SPLIT)
    below = 1 if layout.has_splits else 0  # the parts before the class folder's
    if not layout.folders:
        return files.withColumn("split", split).withColumn("label", parts.getItem(below))
    # Nested class folders: the label of the folder each file lies in, looked up at each depth a class folder has.
    pairs = [
        (join_uri(*[part for part in (name, layout.folder(name, label)) if part]), label)
        for name, labels in layout.classes_by_split.items()
        for label in labels
    ]
    by_folder = F.create_map(*[F.lit(text) for pair in pairs for text in pair])
    label = F.coalesce(
        *[by_folder[F.array_join(F.slice(parts, 1, below + depth), "/")] for depth in sorted(layout.depths)]
    )
    return files.withColumn("split", split).withColumn("label", label)


def _read_folders(spark: SparkSession, dirs: list[str], content: bool) -> DataFrame:
    """path, size_bytes, modified (milliseconds since the epoch) (+ content) of every visible file under the folders.

    Spark's binaryFile source skips hidden files (names starting with '.' or '_'), so `.DS_Store` is never seen.
    It also skips zero-byte files; those are listed separately and added with empty content (and no modification
    time, so they are always read again), to be rejected. Without `content`, no file is opened.
    """
    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load([literal(d) for d in dirs])
    columns = ["path", "size_bytes", "modified", *(["content"] if content else [])]
    files = files.select(
        "path", F.col("length").alias("size_bytes"), F.unix_millis("modificationTime").alias("modified"), "content"
    ).select(*columns)
    empty = [(f"{qualify(spark, folder)}/{name}", 0, None, b"") for folder in dirs for name in empty_files(folder)]
    if empty:
        schema = "path string, size_bytes long, modified long, content binary"
        files = files.unionByName(spark.createDataFrame(empty, schema).select(*columns))
    return files


def _files(spark: SparkSession, layout: ImagesLayout, classes: list[str], content: bool) -> DataFrame:
    """Every visible file of the given classes, all splits and sources: path, label, split, size_bytes, modified
    (+ content); see _read_folders."""
    folders = layout.class_folders(classes)  # unknown classes fail here
    parts = []
    if own := [uri for split, _, uri in folders if split not in layout.roots]:
        parts.append(with_split_and_label(_read_folders(spark, own, content), qualify(spark, layout.root), layout))
    for source, root in layout.roots.items():
        if dirs := [uri for split, _, uri in folders if split == source]:
            relative = F.substring("path", len(qualify(spark, root)) + 2, 1 << 30)
            files = _read_folders(spark, dirs, content)
            parts.append(files.withColumn("split", F.lit(source)).withColumn("label", F.split(relative, "/")[0]))
    labelled = functools.reduce(DataFrame.unionByName, parts)
    columns = ["path", "label", "split", "size_bytes", "modified", *(["content"] if content else [])]
    return labelled.select(*columns)


def read_image_files(spark: SparkSession, layout: ImagesLayout, classes: list[str]) -> DataFrame:
    """Every visible file of the given classes, all splits: path, label, split, size_bytes, modified, content."""
    return _files(spark, layout, classes, content=True)


def list_image_files(spark: SparkSession, layout: ImagesLayout, classes: list[str]) -> DataFrame:
    """The same rows as read_image_files without content: no file is opened, only listed."""
    return _files(spark, layout, classes, content=False)


@functools.lru_cache(maxsize=8)
def _bucket_filesystem(scheme_and_bucket: str) -> pafs.FileSystem:
    return storage.filesystem(scheme_and_bucket)[0]


def _read_bytes(path: str) -> bytes:
    """A file's bytes, from the path Spark gave it (`file:/...`, or s3://bucket/key)."""
    if not is_remote(path):
        # Not urlparse: '?' and '#' are plain characters of a file name here (a class "Apple?").
        local = path[len("file://") :] if path.startswith("file://") else path.removeprefix("file:")
        with open(local, "rb") as stream:
            return stream.read()
    scheme, rest = path.split("://", 1)
    with _bucket_filesystem(f"{scheme}://{rest.split('/', 1)[0]}").open_input_stream(rest) as stream:
        return stream.read()


@pandas_udf(BinaryType())
def _contents(paths: pd.Series) -> pd.Series:
    if len(paths) and is_remote(paths.iloc[0]):
        with ThreadPoolExecutor(REMOTE_READERS) as pool:
            return pd.Series(list(pool.map(_read_bytes, paths)))
    return pd.Series([_read_bytes(path) for path in paths])


def with_contents(files: DataFrame) -> DataFrame:
    """Add each file's `content`, read by the executors from its `path` (local disk or S3): for reading some files
    of a folder, which Spark's readers cannot do without listing the folder and reading all of them. A file gone
    since it was listed fails the task (and the step), as it does in Spark's readers."""
    return files.withColumn("content", _contents("path"))


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
    """One row per file with its size, modification time, content hash, and its width, height and format read from
    its header; for a file whose header is no image (or declares a decompression bomb), the reason instead (else
    null). Pixels are decoded once, by the embedding, which rejects what does not decode."""
    checked = files.withColumn("_check", _check_images("content")).withColumn(CONTENT_KEY, F.sha2("content", 256))
    return checked.select(*INDEX_COLUMNS[:6], *[F.col(f"_check.{c}").alias(c) for c in INDEX_COLUMNS[6:]])


READ_NOW = "read_now"
"""reindex's marker column: whether the file was read this time (drop it before publishing the index)."""


def _reusable(previous: DataFrame) -> DataFrame | None:
    """The rows of an earlier index that may be kept unread: none of an index written by an older version without
    some of INDEX_COLUMNS (another INDEX_FORMAT is read again in full), and no row without a content hash (an older
    class's rows unioned with newer ones, its missing columns null), which the embedding store could not key."""
    if not set(INDEX_COLUMNS) <= set(previous.columns):
        return None
    return previous.where(F.col(CONTENT_KEY).isNotNull()).select(*INDEX_COLUMNS)


def reindex(listed: DataFrame, previous: DataFrame | None) -> DataFrame:
    """The index of the listed files (list_image_files), with READ_NOW: a file whose listing entry (path, size,
    modification time) is in `previous` (an earlier index of these classes) keeps its row, unread; every other file
    is read and indexed, and so is every file of an index that lacks some index column (see _reusable). A rewrite
    that kept a file's size and modification time to the millisecond goes unseen: `previous=None` reads everything."""
    kept = None if previous is None else _reusable(previous)
    changed = listed if kept is None else listed.join(kept.select(*LISTING_ENTRY), LISTING_ENTRY, "left_anti")
    fresh = index_images(with_contents(changed)).withColumn(READ_NOW, F.lit(True))
    if kept is None:
        return fresh
    kept = kept.join(listed.select(*LISTING_ENTRY), LISTING_ENTRY, "left_semi")
    return kept.withColumn(READ_NOW, F.lit(False)).unionByName(fresh)
