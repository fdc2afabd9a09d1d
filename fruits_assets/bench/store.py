"""`fruits bench store`: what the embedding store costs one incremental run as earlier runs pile up: the Delta table
against the pointer-published segments it replaced (rebuilt here as the baseline, as that store worked), in one
invocation, on the same rows.

The rows are synthetic (1280 pseudo-random floats under a hash key per photo): the model never runs, so the figures
are the store's own cost. Every earlier run adds `rows_per_run` new keys to both stores. After 1, 10, 50 earlier runs
(`checkpoints`), an incremental run is timed on each: one class of `class_rows` photos, of which `new_rows` are new
and the rest are spread over all the earlier runs; it does what `image_embeddings` does with the store (find the
keys it lacks, add their rows, read every photo's features), `repeats` times, each with other new photos, and the
median is kept.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_code.features.embedding_store import (
    KEY,
    STORE_SCHEMA,
    add_to_store,
    empty_store_rows,
    not_stored,
    read_store,
    with_stored_embeddings,
)
from spark_code.settings import EMBEDDING_WIDTH
from spark_code.storage import publish, storage

FINGERPRINT = "bench0000000000f"


def _keys(spark: SparkSession, run: object, count: int) -> DataFrame:
    """KEY of `count` photos of one run, as the pipeline's keys look: 64 hex characters."""
    return spark.range(count).select(F.sha2(F.concat_ws(":", F.lit(str(run)), F.col("id")), 256).alias(KEY))


def _rows(keys: DataFrame) -> DataFrame:
    """The store's rows of these keys: features a function of the key, different for every key and position."""
    features = F.expr(f"transform(sequence(1, {EMBEDDING_WIDTH}), i -> cast(hash({KEY}, i) / 2147483647 as float))")
    return keys.select(KEY, features.alias("features"), F.lit(None).cast("string").alias("error"))


def _segments_add(rows: DataFrame, base: str, fingerprint: str) -> None:
    """The store before the Delta table: each write a new segment, published by pointer."""
    publish.recover(base)
    version = publish.new_version(base)
    part = f"{fingerprint}-{uuid.uuid4().hex[:12]}"
    rows.select(*STORE_SCHEMA.fieldNames()).coalesce(rows.sparkSession.sparkContext.defaultParallelism).write.parquet(
        f"{version}/{part}"
    )
    publish.commit(base, version, [part])


def _segments_read(spark: SparkSession, base: str, fingerprint: str) -> DataFrame:
    """...and every reader unions its fingerprint's segments, keeping one row per key."""
    pointers = sorted(publish.pointers(base).items())
    folders = [f"{base}/{where}" for part, where in pointers if part.startswith(fingerprint)]
    if not folders:
        return empty_store_rows(spark)
    return spark.read.schema(STORE_SCHEMA).parquet(*folders).dropDuplicates([KEY])


STORES: dict[str, tuple[Callable, Callable]] = {
    "delta": (add_to_store, read_store),
    "segments": (_segments_add, _segments_read),
}


def _one_run(spark: SparkSession, store: str, base: str, photos: DataFrame) -> float:
    """Seconds of one incremental run's work with the store, for the photos of one class (KEY, path, label, split)."""
    add, read = STORES[store]
    started = time.perf_counter()
    stored = read(spark, base, FINGERPRINT)
    missing = not_stored(photos, stored).persist()
    missing.count()
    new = _rows(missing.select(KEY)).persist()
    new.count()
    add(new, base, FINGERPRINT)
    embedded = with_stored_embeddings(photos, stored.unionByName(new)).persist()
    width = embedded.agg(F.sum(F.size("features"))).first()[0]
    elapsed = time.perf_counter() - started
    if width != photos.count() * EMBEDDING_WIDTH:
        raise RuntimeError(f"{store}: a photo's features are missing after the run")
    for frame in (missing, new, embedded):
        frame.unpersist()
    return elapsed


def _files(spark: SparkSession, store: str, base: str) -> int:
    """Data files a reader of the store opens."""
    if store == "delta":
        return int(spark.sql(f"DESCRIBE DETAIL delta.`{base}`").first()["numFiles"])
    return sum(
        len([name for name in storage.list_names(f"{base}/{where}") if name.endswith(".parquet")])
        for where in publish.pointers(base).values()
    )


def bench_store(
    spark: SparkSession,
    work_dir: Path,
    checkpoints: list[int],
    rows_per_run: int,
    class_rows: int,
    new_rows: int,
    repeats: int = 3,
) -> dict:
    """The figures of each checkpoint (see the module's docstring); each is also printed to stderr as it comes."""
    bases = {store: str(work_dir / store) for store in STORES}
    for base in bases.values():
        storage.delete(base)
    results, built = [], 0
    for checkpoint in sorted(checkpoints):
        for run in range(built, checkpoint):
            rows = _rows(_keys(spark, run, rows_per_run)).persist()
            for store, (add, _) in STORES.items():
                add(rows, bases[store], FINGERPRINT)
            rows.unpersist()
        built = checkpoint
        old = spark.range(class_rows - new_rows).select(
            F.sha2(F.concat_ws(":", (F.col("id") % checkpoint).cast("string"), F.col("id")), 256).alias(KEY)
        )
        seconds: dict[str, list[float]] = {store: [] for store in STORES}
        for repeat in range(repeats):
            new = _keys(spark, f"new-{checkpoint}-{repeat}", new_rows)
            photos = (
                old.unionByName(new)
                .select(KEY, F.concat(F.lit("file:/bench/"), F.col(KEY)).alias("path"), F.lit("Kiwi").alias("label"))
                .withColumn("split", F.lit("Training"))
                .persist()
            )
            photos.count()
            for store in STORES:
                seconds[store].append(_one_run(spark, store, bases[store], photos))
            photos.unpersist()
        row = {"earlier_runs": checkpoint, "store_rows": checkpoint * rows_per_run}
        for store in STORES:
            row[f"{store}_s"] = round(statistics.median(seconds[store]), 3)
            row[f"{store}_files"] = _files(spark, store, bases[store])
        row["delta_over_segments"] = round(row["delta_s"] / row["segments_s"], 3)
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return {
        "rows_per_run": rows_per_run,
        "class_rows": class_rows,
        "new_rows": new_rows,
        "repeats": repeats,
        "runs": results,
    }
