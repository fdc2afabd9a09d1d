"""Each photo embedded once: a store of embeddings keyed by the photo's content and by the embedding settings.

An embedding is a function of a photo's bytes and of the settings that make it (the weights file's content, alpha,
input size, mirror averaging, the preprocessing code's version); the photo's name, folder and class play no part.
The store keeps `content_hash` (SHA-256 of the bytes), `features` and `error` (why the photo was rejected) per
settings fingerprint, so materializing a class runs the model only on contents the store has not seen with these
settings: a renamed or copied photo costs nothing, a photo whose bytes changed is embedded again, and switching
settings back and forth costs nothing twice. Batch size is not part of the key: features do not depend on it.

The store is a Delta Lake table, `<output_root>/embedding_store/`, with one row per (settings fingerprint, key),
partitioned by fingerprint. A run `MERGE`s in the rows it adds: Delta commits them whole or not at all, and a second
run racing on the same photos finds its commit in conflict, retries, and inserts only what the first did not, so a
key is never stored twice and readers need no de-duplication. Delta compacts the small files that each run adds
(auto compaction, a table property) and `VACUUM` removes the files a compaction replaced once they are older than
the table's retention (7 days by default). Any Delta reader (Spark, `deltalake`, DuckDB) reads it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from collections.abc import Callable

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from spark_code.features.embeddings import embed_images, ship_weights, spread
from spark_code.photos.image_files import CONTENT_KEY, with_contents
from spark_code.photos.images import PREPROCESSING_VERSION
from spark_code.photos.views import VIEW, photo_path, view_key, view_number
from spark_code.progress import Progress
from spark_code.settings import RANDOM_WEIGHTS, ModelSettings
from spark_code.storage import storage
from spark_code.storage.class_tables import CONCURRENT_COMMITS

STORE_FOLDER = "embedding_store"
"""The store's folder under the output root."""
KEY = CONTENT_KEY
STORE_SCHEMA = StructType(
    [
        StructField(KEY, StringType(), False),
        StructField("features", ArrayType(FloatType())),
        StructField("error", StringType()),
    ]
)
FINGERPRINT = "fingerprint"
"""The table's partition column: the settings fingerprint a row was embedded with."""
COMMIT_ATTEMPTS = 5
"""Merges tried before giving up when concurrent writers keep committing first."""


@functools.lru_cache(maxsize=16)
def _content_digest(uri: str, size: int, mtime_ns: int | None) -> str:
    """SHA-256 of a file's bytes, computed once per version of the file (its size and modification time)."""
    fs, path = storage.filesystem(uri)
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _weights_identity(weights: str) -> str:
    """What the weights are, by content: a weights file's SHA-256 (wherever it lies), or Keras's ImageNet release."""
    if weights == "imagenet":
        return "keras-imagenet"
    fs, path = storage.filesystem(weights)
    info = fs.get_file_info(path)
    if info.size is None:
        raise FileNotFoundError(f"MobileNetV2 weights file not found: {weights}")
    return "sha256:" + _content_digest(weights, info.size, info.mtime_ns)


def settings_fingerprint(settings: ModelSettings) -> str | None:
    """The store key of these embedding settings; None for untrained random weights, whose features differ between
    processes and must never be stored."""
    if settings.weights == RANDOM_WEIGHTS:
        return None
    described = {
        "model": "MobileNetV2, average pooling",
        "weights": _weights_identity(settings.weights),
        "alpha": settings.alpha,
        "image_size": settings.image_size,
        "flip_average": settings.flip_average,
        "preprocessing": PREPROCESSING_VERSION,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


MODEL_PASS = "the model's pass"
"""In the description of the Spark job that runs the model on the photos the store lacks (Spark's UI and REST API)."""
DESCRIPTION = "spark.job.description"


def with_content_keys(files: DataFrame) -> DataFrame:
    """Add each file's KEY, the SHA-256 of its content (and of a row with a VIEW n >= 1, its n-th view's key:
    spark_code.photos.augment.view_key)."""
    key = F.sha2("content", 256)
    return files.withColumn(KEY, view_key(key, F.col(VIEW)) if VIEW in files.columns else key)


def empty_store_rows(spark: SparkSession) -> DataFrame:
    """No row, with the store's columns."""
    return spark.createDataFrame([], STORE_SCHEMA)


def read_store(spark: SparkSession, base: str, fingerprint: str | None) -> DataFrame:
    """KEY, features, error of every photo stored with these settings, one row per key (none for None, and none
    before a run stored anything)."""
    if not fingerprint or not DeltaTable.isDeltaTable(spark, base):
        return empty_store_rows(spark)
    table = spark.read.format("delta").load(base)
    return table.where(F.col(FINGERPRINT) == fingerprint).select(*STORE_SCHEMA.fieldNames())


def _merge(new: DataFrame, base: str, fingerprint: str) -> tuple[DeltaTable, bool]:
    """Insert the rows of keys the table lacks under the fingerprint, and say whether the table was there: the first
    write creates it instead, by a plain write (creating it empty and merging cost a new process 3-4 s more of
    Delta's start-up). A table created meanwhile fails that write (it never appends to a table it did not see), and
    the caller retries."""
    spark = new.sparkSession
    if not DeltaTable.isDeltaTable(spark, base):
        writer = new.write.format("delta").partitionBy(FINGERPRINT).mode("errorifexists")
        writer.option("delta.autoOptimize.autoCompact", "true").save(base)
        return DeltaTable.forPath(spark, base), False
    table = DeltaTable.forPath(spark, base)
    matches = (F.col(f"stored.{FINGERPRINT}") == F.lit(fingerprint)) & (F.col(f"stored.{KEY}") == F.col(f"new.{KEY}"))
    table.alias("stored").merge(new.alias("new"), matches).whenNotMatchedInsertAll().execute()
    return table, True


def add_to_store(rows: DataFrame, base: str, fingerprint: str) -> None:
    """Merge `rows` (KEY, features, error: one per key) into the store under the fingerprint, inserting the keys it
    does not hold yet; readers see all of them or none. A commit that a concurrent writer's commit conflicts with is
    retried (`COMMIT_ATTEMPTS`). Persist `rows` first: a retry, and Delta's merge itself, read them again. After a
    commit that compacted the fingerprint's files, the files it replaced go (`VACUUM`, past the table's retention)."""
    spark = rows.sparkSession
    base = base.rstrip("/")
    # A few files per commit (one per core), not one per partition of the join that found the new photos.
    columns = [F.col(field.name).cast(field.dataType).alias(field.name) for field in STORE_SCHEMA.fields]
    new = rows.select(F.lit(fingerprint).alias(FINGERPRINT), *columns).coalesce(spark.sparkContext.defaultParallelism)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            table, merged = _merge(new, base, fingerprint)
            break
        except CONCURRENT_COMMITS + (AnalysisException,) as exc:
            if attempt == COMMIT_ATTEMPTS or (isinstance(exc, AnalysisException) and not _created_meanwhile(exc)):
                raise
    if merged and table.history(1).first()["operation"] == "OPTIMIZE":  # auto compaction followed a merge
        table.vacuum()


def _created_meanwhile(error: AnalysisException) -> bool:
    """Whether a first write failed because another writer created the table since it looked."""
    return error.getErrorClass() == "DELTA_PATH_EXISTS"


def warm_up(spark: SparkSession) -> None:
    """Run Delta's write and read paths once on a one-row table in a temporary folder: a new process otherwise pays
    their start-up (class loading, 2-3 s here) in its first run's `image_embeddings`; started beside other work (the
    session started ahead of time by `fruits run`), that cost overlaps it."""
    with tempfile.TemporaryDirectory(prefix="fruits-delta-warm-up-") as folder:
        empty_store_rows(spark).write.format("delta").save(folder)
        spark.read.format("delta").load(folder).count()


def not_stored(keyed_files: DataFrame, stored: DataFrame) -> DataFrame:
    """KEY, path, VIEW of the files (and augmented views) whose content the store lacks, one per distinct KEY: the
    path of the photo to read, and which view of it to embed (0: the photo itself)."""
    missing = keyed_files.select(KEY, "path").join(stored.select(KEY), KEY, "left_anti").dropDuplicates([KEY])
    return missing.select(KEY, photo_path().alias("path"), view_number().alias(VIEW))


def with_stored_embeddings(keyed_files: DataFrame, stored: DataFrame) -> DataFrame:
    """path, label, split (+ KEY) -> path, label, split, features, error: each file's embedding by its content."""
    joined = keyed_files.select("path", "label", "split", KEY).join(stored, KEY, "left")
    return joined.select("path", "label", "split", "features", "error")


def embedded_with_store(
    keyed_files: DataFrame, settings: ModelSettings, base: str, what: str, log: Callable[[str], None]
) -> tuple[DataFrame, int]:
    """path, label, split, KEY -> path, label, split, features, error (persisted), and the photos the model ran on:
    only the contents the store lacks are read and embedded, once each, and added to the store; the others'
    embeddings come from it. `what` names the work in the progress lines `log` gets."""
    spark = keyed_files.sparkSession
    fingerprint = settings_fingerprint(settings)
    stored = read_store(spark, base, fingerprint)
    missing = not_stored(keyed_files, stored).persist()  # contents never embedded with these settings, one file each
    todo = missing.count()
    counter = spark.sparkContext.accumulator(0)
    new = empty_store_rows(spark)
    if todo:
        ship_weights(spark, settings)
        # Only these files are read. Stored under the key of the bytes read: a file rewritten since it was indexed
        # leaves its indexed key without an embedding, which the nothing-lost check reports.
        contents = with_content_keys(with_contents(spread(missing, todo)))
        new = embed_images(contents, settings, keep=(KEY,), counter=counter).persist()
        context, described = spark.sparkContext, spark.sparkContext.getLocalProperty(DESCRIPTION)
        context.setJobDescription(f"{what}: {MODEL_PASS} over {todo} photos")  # its name in Spark's UI
        try:
            with Progress(f"{what}: photos embedded", todo, lambda: counter.value, log):
                new.count()  # the model's only pass
        finally:
            context.setLocalProperty(DESCRIPTION, described)
        if fingerprint:
            add_to_store(new, base, fingerprint)
    missing.unpersist()
    return with_stored_embeddings(keyed_files, stored.unionByName(new)).persist(), counter.value
