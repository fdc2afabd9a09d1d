"""Every output a Delta Lake table partitioned by class: a class's rows are replaced in one commit, which readers see
whole or not at all, and any Delta reader (Spark SQL, `deltalake`, polars, DuckDB) reads the published rows.

A class output (`write_classes`) is partitioned by `label` and by `computed_from`, the stamp its writer gave the
class's rows (what they were computed from, e.g. the class's data version and the embedding settings): a commit
replaces the rows of its classes (`replaceWhere`), and the table's own log says, per class, its stamp and its row
count (the add actions' partition values and record counts), so deciding what is up to date reads the log, not the
rows. A class written with no rows has no file to carry its stamp: the commit's `userMetadata` lists such classes
(`{"fruits": {"empty": {class: stamp}}}`, carried from each commit to the next). A whole table (`write_table`) is
replaced as a whole; its commit's metadata holds its stamp and the notes readers without Spark need
(`{"fruits": {"whole": {"stamp": ..., "notes": ...}}}`).

An interrupted writer leaves files that no commit names: readers never see them, and `VACUUM` (every
`VACUUM_EVERY` commits, past the table's retention, Delta's 7 days by default) deletes them with the files that later
commits replaced. Concurrent writers of other classes commit side by side; a conflict (the same classes, the table's
creation) is retried (`COMMIT_ATTEMPTS`). Readers without Spark use `deltalake`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from urllib.parse import urlparse

import pyarrow as pa
from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    MetadataChangedException,
    ProtocolChangedException,
)
from delta.tables import DeltaTable as SparkDeltaTable
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from pyspark import StorageLevel
from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
from pyspark.sql import functions as F

from spark_code.errors import MissingOutputError
from spark_code.photos.layout import is_remote, local_path, validate_class_name
from spark_code.storage import storage

PARTITION_COLUMN = "label"
STAMP_COLUMN = "computed_from"
"""Second partition column of a class output: the stamp of its class's rows."""
WHOLE = "all"
"""The key of a whole table's entry in `published_stamps`."""
METADATA_KEY = "fruits"
"""The key of this module's entry in a commit's `userMetadata` (JSON)."""
COMMIT_ATTEMPTS = 5
"""Commits tried before giving up when concurrent writers keep committing first."""
VACUUM_EVERY = 20
"""A commit whose version is a multiple of this runs `VACUUM` (which lists every file of the table) after it."""
LOOK_BACK = 50
"""Commits read back from the newest for the last one that carries this module's metadata (a compaction or a
`VACUUM` carries none)."""
CONCURRENT_COMMITS = (
    ConcurrentAppendException,
    ConcurrentDeleteReadException,
    ConcurrentDeleteDeleteException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    MetadataChangedException,
    ProtocolChangedException,
)
"""Delta's answers to a commit that another writer's commit got in first (two creators of the table included)."""


class MissingClassError(MissingOutputError, LookupError):
    """A class was asked for that has never been written to this table."""


def storage_options(base: str) -> dict[str, str] | None:
    """`deltalake`'s options for an s3:// table from the same environment as spark_code.storage.storage (region,
    AWS_ENDPOINT_URL(_S3), plain HTTP for a local endpoint); None for a local table."""
    if not is_remote(base):
        return None
    options = {}
    region, endpoint = storage.s3_environment()
    if region:
        options["AWS_REGION"] = region
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if urlparse(endpoint).scheme == "http":
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def open_table(base: str, version: int | None = None) -> DeltaTable | None:
    """The table under `base` (at `version`, default the newest), or None when nothing was ever committed there."""
    try:
        return DeltaTable(local_path(base.rstrip("/")), version=version, storage_options=storage_options(base))
    except TableNotFoundError:
        return None


def _commit_metadata(base: str, version: int) -> dict | None:
    """This module's metadata in the commit of `version`, None when that commit carries none."""
    text = storage.read_text(f"{base.rstrip('/')}/_delta_log/{version:020d}.json") or ""
    for line in text.splitlines():
        info = json.loads(line).get("commitInfo") if line.strip() else None
        if info is not None:
            try:
                return json.loads(info.get("userMetadata") or "{}").get(METADATA_KEY)
            except (ValueError, AttributeError):
                return None
    return None


def _metadata(base: str, version: int) -> dict:
    """The metadata of the newest commit up to `version` that carries it ({} when none does)."""
    for older in range(version, max(-1, version - LOOK_BACK), -1):
        found = _commit_metadata(base, older)
        if found is not None:
            return found
    return {}


def _stamps_at(table: DeltaTable, base: str) -> dict[str, dict]:
    """Per class (or WHOLE), its rows and stamp (and a whole table's notes) in the table's loaded version."""
    metadata = _metadata(base, table.version())
    actions = pa.table(table.get_add_actions(flatten=True))
    counts = actions["num_records"].to_pylist() if actions.num_rows else []
    if "whole" in metadata:
        return {WHOLE: {"rows": int(sum(n or 0 for n in counts)), **metadata["whole"]}}
    found: dict[str, dict] = {}
    if actions.num_rows:
        labels = actions[f"partition.{PARTITION_COLUMN}"].to_pylist()
        stamps = actions[f"partition.{STAMP_COLUMN}"].to_pylist()
        for name, stamp, count in zip(labels, stamps, counts, strict=True):
            entry = found.setdefault(name, {"rows": 0, "stamp": stamp or None})
            entry["rows"] += int(count or 0)
    for name, stamp in metadata.get("empty", {}).items():
        found.setdefault(name, {"rows": 0, "stamp": stamp})
    return found


def published_stamps(base: str) -> dict[str, dict]:
    """Every published class's {"rows": n, "stamp": what its rows were computed from}, or for a whole table
    {WHOLE: {"rows", "stamp", "notes"}}, read from the table's log without Spark; {} when nothing is published."""
    table = open_table(base)
    return {} if table is None else _stamps_at(table, base.rstrip("/"))


STAMPS_METADATA = "computed_from"
"""Metadata key of a read's `path` column: {class (or "all"): the stamp published with the rows read}."""


def _with_stamps(df: DataFrame, entries: dict[str, dict]) -> DataFrame:
    """`path` first, `label` second, without the stamp column; the stamps of what was read on `path`'s metadata (see
    input_stamps)."""
    others = [c for c in df.columns if c not in {"path", PARTITION_COLUMN, STAMP_COLUMN}]
    stamps = {name: entry.get("stamp") for name, entry in entries.items()}
    path = F.col("path").alias("path", metadata={STAMPS_METADATA: stamps})
    return df.select(path, F.col(PARTITION_COLUMN), *others)


def input_stamps(df: DataFrame) -> dict[str, str | None]:
    """What the rows that read_classes or read_table returned were computed from, per class (or "all"): the stamps
    published with exactly those rows (the same table version), so that a stage stamps its output from its input,
    never from a second look at the photos or at the table."""
    return dict(df.schema["path"].metadata.get(STAMPS_METADATA, {}))


def _literal(value: str) -> str:
    """A Spark SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in_classes(classes: list[str]) -> str:
    return f"{PARTITION_COLUMN} IN ({', '.join(map(_literal, classes))})"


def _commit(spark: SparkSession, base: str, write: Callable[[int], None]) -> DeltaTable:
    """Run `write(version read)` until it commits, retrying when a concurrent writer's commit got in first
    (COMMIT_ATTEMPTS); then `VACUUM` if the table's new version is a multiple of VACUUM_EVERY (files replaced longer
    ago than the table's retention go). Returns the table as the commit left it."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        table = open_table(base)
        try:
            write(-1 if table is None else table.version())
            break
        except CONCURRENT_COMMITS:
            if attempt == COMMIT_ATTEMPTS:
                raise
    table = open_table(base)
    if table.version() % VACUUM_EVERY == 0 and table.version() > 0:
        SparkDeltaTable.forPath(spark, base).vacuum()
    return table


def _always_committed(writer: DataFrameWriter, version: int) -> DataFrameWriter:
    """A write that adds and removes no file (an empty class that had none) is no commit to Delta: an application
    transaction of its own (never seen before, so never skipped as a repeat) makes every write one. A table this write
    creates forgets those transactions after a week."""
    writer = writer.option("txnAppId", f"fruits-{uuid.uuid4().hex}").option("txnVersion", 0)
    return writer.option("delta.setTransactionRetentionDuration", "interval 7 days") if version < 0 else writer


def _user_metadata(metadata: dict) -> str:
    return json.dumps({METADATA_KEY: metadata}, sort_keys=True)


def write_classes(df: DataFrame, base: str, classes: list[str], stamps: dict[str, str] | None = None) -> dict[str, int]:
    """Replace the given classes under `base` with the rows of `df` (which must only hold those classes), each class's
    rows with its stamp from `stamps`, in one commit. Returns the rows written per class (0 for a class with none)."""
    for name in classes:
        validate_class_name(name)
    if not classes:
        return {}
    stamp_of = F.create_map(*[F.lit(x).cast("string") for name in classes for x in (name, (stamps or {}).get(name))])
    rows = df.withColumn(STAMP_COLUMN, F.element_at(stamp_of, F.col(PARTITION_COLUMN)))
    # One task per class writes it (one file per class and commit), from one pass over `df` that also counts them.
    rows = rows.repartition(PARTITION_COLUMN).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {row[PARTITION_COLUMN]: row["count"] for row in rows.groupBy(PARTITION_COLUMN).count().collect()}
        unexpected = sorted(set(counts) - set(classes))
        if unexpected:
            raise ValueError(f"rows of classes {unexpected} do not belong to this write (classes {classes})")
        written = {name: int(counts.get(name, 0)) for name in classes}
        empty = {name: (stamps or {}).get(name) for name, count in written.items() if not count}
        _replace(rows, base.rstrip("/"), classes, empty)
    finally:
        rows.unpersist()
    return written


def _replace(rows: DataFrame, base: str, classes: list[str], empty: dict[str, str | None] | None) -> None:
    """Commit `rows` (with STAMP_COLUMN) in place of the classes' rows; the classes of `empty` are listed as published
    without rows, the others unlisted (None: every class unpublished, a withdrawal)."""

    def write(version: int) -> None:
        listed = dict(_metadata(base, version).get("empty", {})) if version >= 0 else {}
        listed = {name: stamp for name, stamp in listed.items() if name not in set(classes)} | (empty or {})
        writer = rows.write.format("delta").mode("overwrite").partitionBy(PARTITION_COLUMN, STAMP_COLUMN)
        writer = writer.option("replaceWhere", _in_classes(classes)).option("mergeSchema", "true")
        _always_committed(writer, version).option("userMetadata", _user_metadata({"empty": listed})).save(base)

    _commit(rows.sparkSession, base, write)


def write_table(df: DataFrame, base: str, stamp: str | None = None, notes: dict | None = None) -> int:
    """Replace the whole table with `df` (partitioned by class for readers) in one commit, its stamp and `notes`
    (what readers without Spark need beside the rows: `published_stamps(base)["all"]`) in the commit's metadata."""
    spark = df.sparkSession
    base = base.rstrip("/")
    metadata = _user_metadata({"whole": {"stamp": stamp, "notes": notes}})

    def write(version: int) -> None:
        writer = df.repartition(PARTITION_COLUMN).write.format("delta").mode("overwrite")
        writer = writer.partitionBy(PARTITION_COLUMN).option("overwriteSchema", "true")
        _always_committed(writer, version).option("userMetadata", metadata).save(base)

    return _stamps_at(_commit(spark, base, write), base)[WHOLE]["rows"]


def _read(spark: SparkSession, base: str) -> tuple[DataFrame | None, dict[str, dict]]:
    """The table's newest version as Spark reads it, and what that version publishes (published_stamps); (None, {})
    when nothing was ever committed."""
    table = open_table(base)
    if table is None:
        return None, {}
    return spark.read.format("delta").option("versionAsOf", table.version()).load(base), _stamps_at(table, base)


def read_classes(spark: SparkSession, base: str, classes: list[str]) -> DataFrame:
    """The rows of the given classes, `label` as the second column (no row for no class); a class never written, or
    a table never written, is a clear error."""
    base = base.rstrip("/")
    df, published = _read(spark, base)
    missing = [name for name in classes if name not in published]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise MissingClassError(f"no data for class(es) {shown} under {base}: materialize them first")
    if df is None:
        raise MissingClassError(f"no data under {base}: materialize it first")
    rows = df.where(_in_classes(classes)) if classes else df.limit(0)
    return _with_stamps(rows, {name: published[name] for name in classes})


def read_table(spark: SparkSession, base: str) -> DataFrame:
    """A table written by write_table, `label` as the second column."""
    df, published = _read(spark, base.rstrip("/"))
    if df is None:
        raise MissingClassError(f"no data under {base}: materialize it first")
    return _with_stamps(df, published)


def withdraw_classes_except(spark: SparkSession, base: str, kept: set[str]) -> list[str]:
    """Delete every class not in `kept` (their photos are gone) in one commit, so that no reader finds them; returns
    those withdrawn. Reads only the table's log when there is nothing to delete."""
    base = base.rstrip("/")
    gone = sorted(set(published_stamps(base)) - set(kept) - {WHOLE})
    if gone:
        _replace(spark.read.format("delta").load(base).limit(0), base, gone, None)
    return gone


def read_arrow(base: str) -> pa.Table:
    """Every published row of an output as an Arrow table, without Spark (for notebooks and services), the stamp
    column left out."""
    table = open_table(base)
    if table is None:
        raise MissingClassError(f"no data under {base}: materialize it first")
    rows = pa.table(table.to_pyarrow_table())
    return rows.drop_columns([STAMP_COLUMN]) if STAMP_COLUMN in rows.column_names else rows
