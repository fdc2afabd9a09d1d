"""Photos whose label their neighbours contradict: each suspect photo's nearest photos (cosine similarity of their
features) and the labels those carry.

Why neighbours: a photo a user filed under the wrong class sits among photos of its true class. Measured on the
field photos given as feedback, with 3% or 10% of their labels made wrong at random (BENCHMARKS.md, "The app's
users' photos as training data"), "none of its 10 nearest training photos carries its label" found 92-93% of the
wrong ones, and 75-88% of what it flagged was wrong; the distance to the class's centre (robust z-score) found half
at a precision of 16-45%, because real photos lie far from a studio class's centre whether their label is right or
not.

The search is exact and stays in Spark: the pool and the suspects are cut in blocks of about BLOCK_ROWS rows, each
pair of blocks meets in one matrix product in Python, and only the k best of a pool block per suspect leave it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

NEIGHBOURS = 10
"""How many nearest photos vote on a suspect's label."""
BLOCK_ROWS = 2048
"""Rows per block: a pair of blocks is one BLOCK_ROWS x BLOCK_ROWS similarity matrix."""

_CANDIDATES = "suspect string, neighbour_label string, similarity double"


def _unit(vectors: list) -> np.ndarray:
    matrix = np.array([np.asarray(vector, np.float32) for vector in vectors], np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _candidates(k: int):
    def candidates(pairs: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """For each (suspects' block, pool's block) row: the k most similar pool rows of the block for each suspect,
        the suspect itself left out."""
        for batch in pairs:
            for pair in batch.itertuples(index=False):
                suspects, pool = list(pair.suspects), list(pair.pool)
                similarity = _unit([s["vector"] for s in suspects]) @ _unit([p["vector"] for p in pool]).T
                suspect_paths = np.array([s["path"] for s in suspects], object)
                pool_paths = np.array([p["path"] for p in pool], object)
                similarity[suspect_paths[:, None] == pool_paths[None, :]] = -np.inf
                take = min(k, similarity.shape[1])
                best = np.argpartition(-similarity, take - 1, axis=1)[:, :take]
                rows, columns = np.repeat(np.arange(len(suspects)), take), best.ravel()
                kept = np.isfinite(similarity[rows, columns])
                rows, columns = rows[kept], columns[kept]
                yield pd.DataFrame(
                    {
                        "suspect": suspect_paths[rows],
                        "neighbour_label": np.array([p["label"] for p in pool], object)[columns],
                        "similarity": similarity[rows, columns].astype(np.float64),
                    }
                )

    return candidates


def _blocks(rows: DataFrame, vector: str, name: str, blocks: int, label: bool) -> DataFrame:
    """The rows in `blocks` blocks by a hash of their path, each block one row holding them in an array `name`: a
    block reaches Python whole, whatever Arrow's batch size (Spark 4.3 fails a cogroup whose group spans batches)."""
    fields = [F.col("path"), *([F.col("label")] if label else []), F.col(vector).alias("vector")]
    keyed = rows.select(F.struct(*fields).alias("row"), (F.abs(F.hash("path")) % blocks).alias("block"))
    return keyed.groupBy("block").agg(F.collect_list("row").alias(name))


def neighbour_votes(pool: DataFrame, suspects: DataFrame, vector: str, k: int = NEIGHBOURS) -> DataFrame:
    """For each suspect row (path, label, `vector`): path, label, `agreeing` (how many of its k nearest pool rows
    carry its label, itself never counted) and `neighbours_say` (the label most of them carry; ties by name).

    `pool` holds path, label and `vector` rows (the suspects may be among them); paths are unique in each."""
    pool_blocks = _blocks(pool, vector, "pool", max(1, math.ceil(pool.count() / BLOCK_ROWS)), label=True)
    suspect_blocks = _blocks(suspects, vector, "suspects", max(1, math.ceil(suspects.count() / BLOCK_ROWS)), False)
    pairs = suspect_blocks.select("suspects").crossJoin(pool_blocks.select("pool"))
    found = pairs.mapInPandas(_candidates(k), _CANDIDATES)
    rank = F.row_number().over(Window.partitionBy("suspect").orderBy(F.desc("similarity"), "neighbour_label"))
    nearest = found.withColumn("rank", rank).where(F.col("rank") <= k)
    votes = nearest.groupBy("suspect", "neighbour_label").agg(F.count("*").alias("votes"))
    most = Window.partitionBy("suspect").orderBy(F.desc("votes"), "neighbour_label")
    said = votes.withColumn("place", F.row_number().over(most)).where(F.col("place") == 1)
    said = said.select(F.col("suspect").alias("path"), F.col("neighbour_label").alias("neighbours_say"))
    joined = suspects.select("path", "label").join(votes.withColumnRenamed("suspect", "path"), "path", "left")
    agreeing = joined.groupBy("path", "label").agg(
        F.coalesce(F.sum(F.when(F.col("neighbour_label") == F.col("label"), F.col("votes"))), F.lit(0)).alias(
            "agreeing"
        )
    )
    return agreeing.join(said, "path", "left")
