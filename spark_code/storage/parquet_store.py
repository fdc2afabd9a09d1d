"""Class-partitioned Parquet outputs where rewriting a class replaces only that class, published by pointer.

A write puts all its rows in a new version folder (`<base>/_versions/<tag>/label=<class>/`, one Spark job) and
then points each class at it (spark_code.storage.publish). A reader follows each class's pointer, so it always finds a
complete version of a class, the new one or the previous one, even when the writer is killed half-way, on local disk
and on S3. A class whose new output is empty is published as an empty (but present) folder.

Each version also holds `_stamps.json`: per class (or `all` for a whole table), its row count and the stamp its
writer gave it (what it was computed from, e.g. the class's data version and the embedding settings), published with
the rows; `published_stamps` reads them without Spark, so deciding what is up to date costs a few small reads.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from spark_code.errors import MissingOutputError
from spark_code.photos.layout import validate_class_name
from spark_code.storage import publish, storage

PARTITION_COLUMN = "label"
STAMPS_FILE = "_stamps.json"
"""In each version: {class (or "all"): {"rows": n, "stamp": what the writer said the rows were computed from}}."""


class MissingClassError(MissingOutputError, LookupError):
    """A class was asked for that has never been written to this folder."""


def class_part(spark: SparkSession, name: str) -> str:
    """`label=<escaped name>`: a class's folder inside a version, and its pointer's name; unsafe names refused."""
    validate_class_name(name)
    return f"{PARTITION_COLUMN}={storage.escape_partition_value(spark, name)}"


def class_dir(spark: SparkSession, base: str, name: str) -> str | None:
    """The folder holding the published rows of a class, or None when it was never written."""
    return publish.current(base, class_part(spark, name))


def _write_empty(folder: str, schema: pa.Schema) -> None:
    """A class with no rows as one Parquet file with the rows' schema, written by the driver: a Spark job per empty
    class would cost about 0.2 s each, a minute for a few hundred classes (e.g. rejected_images)."""
    fs, path = storage.filesystem(folder)
    fs.create_dir(path, recursive=True)
    pq.write_table(schema.empty_table(), f"{path}/part-00000-empty.parquet", filesystem=fs)


def _write_stamps(version: str, rows: dict[str, int], stamps: dict[str, str] | None, notes: dict | None = None) -> None:
    entries = {part: {"rows": count, "stamp": (stamps or {}).get(part)} for part, count in rows.items()}
    if notes is not None:
        entries[publish.WHOLE]["notes"] = notes
    storage.write_text(f"{version}/{STAMPS_FILE}", json.dumps(entries, sort_keys=True))


def _name_of(part: str) -> str:
    """The class a pointer publishes (`label=<escaped>`), or "all"."""
    return publish.WHOLE if part == publish.WHOLE else unquote(part.split("=", 1)[1])


def published_stamps(base: str) -> dict[str, dict]:
    """The stamps of every published class (or of the whole table, under "all"), read from the versions that the
    pointers name; a class whose version has no stamps (written before them) maps to {}."""
    names: dict[str, list[str]] = {}
    for part, location in publish.pointers(base.rstrip("/")).items():
        names.setdefault(publish.version_of(location), []).append(_name_of(part))
    return _entries_of(base.rstrip("/"), names)


def withdraw_classes_except(base: str, kept: set[str]) -> list[str]:
    """Unpublish every class not in `kept` (their photos are gone), so that no reader finds them; returns those
    withdrawn. Reads only the pointers."""
    parts = {part: _name_of(part) for part in publish.pointers(base.rstrip("/")) if part != publish.WHOLE}
    gone = {part: name for part, name in parts.items() if name not in kept}
    publish.withdraw(base, sorted(gone))
    return sorted(gone.values())


STAMPS_METADATA = "computed_from"
"""Metadata key of a read's `path` column: {class (or "all"): the stamp published with the rows read}."""


def _entries_of(base: str, versions: dict[str, list[str]]) -> dict[str, dict]:
    """The stamps entries of the named parts (class names, or "all") in their versions (`_versions/<tag>`), each
    version's file read once."""
    found: dict[str, dict] = {}
    for version, names in versions.items():
        text = storage.read_text(f"{base}/{version}/{STAMPS_FILE}")
        entries = json.loads(text) if text else {}
        found |= {name: entries.get(name, {}) for name in names}
    return found


def _with_stamps(df: DataFrame, entries: dict[str, dict]) -> DataFrame:
    """`path` first, `label` second, the stamps of what was read on `path`'s metadata (see input_stamps)."""
    others = [c for c in df.columns if c not in {"path", PARTITION_COLUMN}]
    stamps = {name: entry.get("stamp") for name, entry in entries.items()}
    path = F.col("path").alias("path", metadata={STAMPS_METADATA: stamps})
    return df.select(path, F.col(PARTITION_COLUMN), *others)


def input_stamps(df: DataFrame) -> dict[str, str | None]:
    """What the rows that read_classes or read_table returned were computed from, per class (or "all"): the stamps
    published with exactly those rows, so that a stage stamps its output from its input, never from a second look
    at the photos or at the pointers."""
    return dict(df.schema["path"].metadata.get(STAMPS_METADATA, {}))


def write_classes(df: DataFrame, base: str, classes: list[str], stamps: dict[str, str] | None = None) -> dict[str, int]:
    """Replace the given classes under `base` with the rows of `df` (which must only hold those classes), each with
    its stamp from `stamps` if given.

    Returns the number of rows written per class (0 for a class with no rows).
    """
    spark = df.sparkSession
    base = base.rstrip("/")
    parts = {name: class_part(spark, name) for name in classes}
    publish.recover(base)
    version = publish.new_version(base)
    try:
        # One task per class writes it: a join upstream leaves up to 200 partitions, each of which would write a
        # small file per class (3,400 files for 21 classes: most of the write's time, and of every read's).
        df.repartition(PARTITION_COLUMN).write.partitionBy(PARTITION_COLUMN).parquet(version)
        written = spark.read.schema(df.schema).option("basePath", version).parquet(version)
        counts = {row[PARTITION_COLUMN]: row["count"] for row in written.groupBy(PARTITION_COLUMN).count().collect()}
        unexpected = sorted(set(counts) - set(classes))
        if unexpected:
            raise ValueError(f"rows of classes {unexpected} do not belong to this write (classes {classes})")
        empty_schema = to_arrow_schema(df.drop(PARTITION_COLUMN).schema)
        for name in classes:
            if name not in counts:
                _write_empty(f"{version}/{parts[name]}", empty_schema)
        _write_stamps(version, {name: int(counts.get(name, 0)) for name in classes}, stamps)
    except BaseException:
        publish.discard(version)
        raise
    publish.commit(base, version, list(parts.values()))
    return {name: int(counts.get(name, 0)) for name in classes}


def read_classes(spark: SparkSession, base: str, classes: list[str]) -> DataFrame:
    """The rows of the given classes, `label` as the second column; a class never written is a clear error."""
    base = base.rstrip("/")
    dirs = {name: class_dir(spark, base, name) for name in classes}
    missing = [name for name, path in dirs.items() if path is None]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise MissingClassError(f"no data for class(es) {shown} under {base}: materialize them first")
    by_version: dict[str, list[str]] = {}
    names: dict[str, list[str]] = {}
    for name, path in dirs.items():
        by_version.setdefault(path.rsplit("/", 1)[0], []).append(path)
        names.setdefault(publish.version_of(path[len(base) + 1 :]), []).append(name)
    parts = [spark.read.option("basePath", version).parquet(*paths) for version, paths in by_version.items()]
    df = parts[0]
    for part in parts[1:]:
        df = df.unionByName(part, allowMissingColumns=True)  # classes written by older code
    return _with_stamps(df, _entries_of(base, names))


def write_table(df: DataFrame, base: str, stamp: str | None = None, notes: dict | None = None) -> int:
    """Replace the whole output with `df` (partitioned by class for readers), published once written; `notes` (what
    readers without Spark need beside the rows) are published with its stamp (`published_stamps(base)["all"]`)."""
    spark = df.sparkSession
    base = base.rstrip("/")
    publish.recover(base)
    version = publish.new_version(base)
    try:
        df.repartition(PARTITION_COLUMN).write.partitionBy(PARTITION_COLUMN).parquet(version)
        rows = spark.read.schema(df.schema).parquet(version).count()
        _write_stamps(version, {publish.WHOLE: rows}, {publish.WHOLE: stamp} if stamp else None, notes)
    except BaseException:
        publish.discard(version)
        raise
    publish.commit(base, version, [publish.WHOLE])
    return rows


def read_table(spark: SparkSession, base: str) -> DataFrame:
    """An output written by write_table, `label` as the second column."""
    base = base.rstrip("/")
    found = publish.current(base)
    if found is None:
        raise MissingClassError(f"no data under {base}: materialize it first")
    version = publish.version_of(found[len(base) + 1 :])
    return _with_stamps(spark.read.parquet(found), _entries_of(base, {version: [publish.WHOLE]}))


def read_arrow(base: str) -> pa.Table:
    """Every published row of an output as an Arrow table, without Spark (for notebooks and services): each
    version is read once, keeping the classes whose pointers name it."""
    by_version: dict[str, set[str] | None] = {}
    for part, location in publish.pointers(base).items():
        version = publish.version_of(location)
        if part == publish.WHOLE:
            by_version[version] = None
        elif by_version.get(version, set()) is not None:
            by_version.setdefault(version, set()).add(_name_of(part))
    tables = []
    for version, labels in sorted(by_version.items()):
        fs, path = storage.filesystem(f"{base.rstrip('/')}/{version}")
        # Labels stay strings: hive discovery would turn classes named "007" or "2019" into integers.
        partitioning = ds.partitioning(pa.schema([(PARTITION_COLUMN, pa.string())]), flavor="hive")
        table = ds.dataset(path, filesystem=fs, partitioning=partitioning).to_table()
        if labels is not None:
            table = table.filter(pc.is_in(table[PARTITION_COLUMN], pa.array(sorted(labels))))
        tables.append(table)
    if not tables:
        raise MissingClassError(f"no data under {base}: materialize it first")
    return pa.concat_tables(tables, promote_options="default")
