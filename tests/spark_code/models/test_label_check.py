import numpy as np
from pyspark.sql import functions as F

from spark_code.models import label_check
from spark_code.models.label_check import neighbour_votes

SCHEMA = "path string, label string, vector array<double>"


def _brute_force(vectors: np.ndarray, labels: list[str], suspects: list[int], k: int) -> dict[int, int]:
    """How many of each suspect's k nearest others (cosine) share its label, in numpy."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    agreeing = {}
    for i in suspects:
        similarity = unit @ unit[i]
        similarity[i] = -np.inf
        nearest = np.argsort(-similarity)[:k]
        agreeing[i] = sum(labels[j] == labels[i] for j in nearest)
    return agreeing


def test_votes_equal_an_exact_search_across_blocks(spark, monkeypatch):
    """Random vectors and labels: the blocked search finds exactly the numpy nearest, the suspect itself excluded,
    across two pool blocks of about 75 rows, each spanning two of the session's Arrow batches (64 rows)."""
    monkeypatch.setattr(label_check, "BLOCK_ROWS", 100)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(150, 6))
    labels = [f"c{i}" for i in rng.integers(0, 3, size=150)]
    suspects = list(range(0, 150, 4))
    pool = spark.createDataFrame([(f"p{i}", labels[i], vectors[i].tolist()) for i in range(150)], SCHEMA)
    votes = neighbour_votes(pool, pool.where(F.col("path").isin([f"p{i}" for i in suspects])), "vector", k=5)
    found = {int(row["path"][1:]): row["agreeing"] for row in votes.collect()}
    assert found == _brute_force(vectors, labels, suspects, 5)


def test_a_photo_filed_under_the_wrong_class_is_outvoted_by_its_true_class(spark, monkeypatch):
    """Three tight clusters; a point of the Banana cluster labelled Kiwi gets no vote for Kiwi and is said to be a
    Banana, while the rightly labelled points get all their votes."""
    monkeypatch.setattr(label_check, "BLOCK_ROWS", 16)
    rng = np.random.default_rng(5)
    centres = {"Apple": np.eye(8)[0], "Banana": np.eye(8)[1], "Kiwi": np.eye(8)[2]}
    rows = [
        (f"{name}/{i}", name, (centre + rng.normal(scale=0.05, size=8)).tolist())
        for name, centre in centres.items()
        for i in range(15)
    ]
    rows.append(("feedback/wrong", "Kiwi", (centres["Banana"] + rng.normal(scale=0.05, size=8)).tolist()))
    rows.append(("feedback/right", "Apple", (centres["Apple"] + rng.normal(scale=0.05, size=8)).tolist()))
    pool = spark.createDataFrame(rows, SCHEMA)
    votes = neighbour_votes(pool, pool.where(F.col("path").startswith("feedback/")), "vector")
    found = {row["path"]: (row["label"], row["agreeing"], row["neighbours_say"]) for row in votes.collect()}
    assert found == {"feedback/wrong": ("Kiwi", 0, "Banana"), "feedback/right": ("Apple", 10, "Apple")}


def test_a_suspect_without_a_pool_has_no_vote(spark):
    pool = spark.createDataFrame([("a", "Apple", [1.0, 0.0])], SCHEMA)
    votes = neighbour_votes(pool, pool, "vector").collect()
    assert [(row["path"], row["agreeing"], row["neighbours_say"]) for row in votes] == [("a", 0, None)]
