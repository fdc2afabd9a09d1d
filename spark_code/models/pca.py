"""PCA of the embeddings with pyspark.ml: choosing k by explained variance, applying it per class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCA, PCAModel, StandardScaler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import DenseMatrix, DenseVector
from pyspark.ml.wrapper import JavaWrapper
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_code.errors import PermanentError
from spark_code.models.ml_models import PCA_VERSION
from spark_code.settings import EMBEDDING_WIDTH


@dataclass(frozen=True)
class PcaFit:
    """A fitted PCA with what a person needs to judge it."""

    model: PipelineModel
    """Mean-centering then PCA: Spark's PCA on uncentered embeddings returned a wrong, flat spectrum when the
    training rows were unevenly spread over partitions (seen with Spark 4.3); centered input is exact."""
    k: int
    explained_variance: float
    cumulative_variance: list[float]
    """Cumulative explained-variance ratio for 1..n components (n: the most k could be, max_k or a fixed k, at most
    rows - 1)."""
    training_rows: int
    requested_k: int
    """The k the settings asked for (fixed, or reaching the variance target); k is smaller when the training rows
    cannot support it: n centered rows span at most n - 1 directions."""


class PcaInputError(PermanentError, ValueError):
    """Training rows or settings a PCA cannot be fitted on."""


def choose_k(cumulative: list[float], target_variance: float, max_k: int = EMBEDDING_WIDTH) -> int:
    """Smallest k whose cumulative explained variance reaches the target, at most max_k."""
    if not 0 < target_variance <= 1:
        raise ValueError(f"PCA target variance must be in (0, 1], got {target_variance}")
    reached = np.flatnonzero(np.asarray(cumulative) >= target_variance - 1e-9)
    return min(int(reached[0]) + 1 if reached.size else len(cumulative), max_k)


def fit_pca(
    train: DataFrame, target_variance: float = 0.95, k: int | None = None, max_k: int = EMBEDDING_WIDTH
) -> PcaFit:
    """Fit on the given training rows (path, label, split, features); k is fixed when given, else the smallest k
    reaching the target variance, at most max_k; either way at most rows - 1 (the rank of centered rows)."""
    # A few cached partitions (one per core), not one per class file or shuffle partition: each of the fits below is
    # a pass over them, and on small data the per-task overhead would dominate.
    # Only the centred rows are kept in memory: two cached copies of 78,000 rows of 1,280 doubles (photos and two
    # augmented views of each) ran the 4 GB local driver out of heap.
    cores = train.sparkSession.sparkContext.defaultParallelism
    train = train.select(array_to_vector("features").alias("raw")).coalesce(cores)
    rows = train.count()
    if rows < 2:
        raise PcaInputError(f"PCA needs at least 2 training embeddings, found {rows}")
    if k is not None and not 1 <= k <= EMBEDDING_WIDTH:
        raise PcaInputError(f"PCA k must be between 1 and {EMBEDDING_WIDTH}, got {k}")
    centering = StandardScaler(inputCol="raw", outputCol="vector", withMean=True, withStd=False).fit(train)
    centered = centering.transform(train).select("vector").persist()
    try:
        # A fit is a pass over every row (a 1280 x 1280 covariance) and an eigen-decomposition: fit the most
        # components k may need, once; its explained variances are shares of the total, so they also tell the
        # smallest k reaching the target, whose model is the first k of its components.
        most = min(k if k is not None else max_k, rows - 1, EMBEDDING_WIDTH)
        widest = PCA(k=most, inputCol="vector", outputCol="pca").fit(centered)
        cumulative = np.cumsum(widest.explainedVariance.toArray()).tolist()
        requested = k if k is not None else choose_k(cumulative, target_variance, max_k)
        chosen = min(requested, rows - 1)
        pca = widest if chosen == most else first_components(widest, chosen)
    finally:
        centered.unpersist()
    model = PipelineModel(stages=[centering, pca])
    return PcaFit(model, chosen, float(cumulative[chosen - 1]), cumulative, rows, requested)


def first_components(pca: PCAModel, k: int) -> PCAModel:
    """The PCA model of the first k components of a fitted one: what Spark's fit with k gives (its eigenvectors and
    explained variances of the same covariance, cut after k), without another pass over the rows and another
    eigen-decomposition (on two cores: 6 s of the full sample's 22 s fit, 2-3 s of a run on a few photos)."""
    components = pca.pc.toArray()[:, :k]
    variance = pca.explainedVariance.toArray()[:k]
    pc = DenseMatrix(components.shape[0], k, components.ravel(order="F").tolist())
    # Spark's PCAModel constructor is package-private in Scala, public to the JVM (and so to py4j).
    java = JavaWrapper._new_java_obj(
        "org.apache.spark.ml.feature.PCAModel", pca.uid, pc, DenseVector(variance.tolist())
    )
    sliced = pca._copyValues(PCAModel(java))  # noqa: SLF001 - pyspark's way to carry a model's params
    sliced._set(k=k)  # noqa: SLF001
    sliced._transfer_params_to_java()  # noqa: SLF001
    return sliced


def pca_k(model: PipelineModel) -> int:
    """Number of components of a model made by fit_pca."""
    return model.stages[-1].getK()


def apply_pca(model: PipelineModel, embeddings: DataFrame, version: str | None) -> DataFrame:
    """path, label, split, features -> path, label, split, pca_features (array<float> of width k), pca_version (the
    PCA's version, so that a classifier never mixes features of two PCAs)."""
    projected = model.transform(embeddings.withColumn("raw", array_to_vector("features")))
    return projected.select(
        "path",
        "label",
        "split",
        vector_to_array("pca", "float32").alias("pca_features"),
        F.lit(version).cast("string").alias(PCA_VERSION),
    )


def classes_not_projected_by(reduced: DataFrame, version: str | None) -> list[str]:
    """Classes (at most 20) whose reduced features come from another PCA version than `version` (or from before
    features named their PCA)."""
    if PCA_VERSION not in reduced.columns:
        return sorted(row[0] for row in reduced.select("label").distinct().limit(20).collect())
    other = reduced.where(~F.col(PCA_VERSION).eqNullSafe(F.lit(version)))
    return sorted(row[0] for row in other.select("label").distinct().limit(20).collect())
