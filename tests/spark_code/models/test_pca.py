import numpy as np
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCA
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import functions as F

from spark_code.models.pca import apply_pca, choose_k, classes_not_projected_by, first_components, fit_pca, pca_k
from spark_code.settings import EMBEDDING_WIDTH


@pytest.fixture(scope="module")
def low_rank_embeddings(spark):
    """300 training + 30 test vectors of width 1280 whose variance lies in 5 known directions (+ small noise)."""
    rng = np.random.default_rng(7)
    basis = np.linalg.qr(rng.normal(size=(EMBEDDING_WIDTH, 5)))[0].T
    scales = np.array([10.0, 6.0, 4.0, 2.0, 1.0])
    rows = []
    for i in range(330):
        vector = (rng.normal(size=5) * scales) @ basis + rng.normal(scale=0.01, size=EMBEDDING_WIDTH)
        split = "Training" if i < 300 else "Test"
        rows.append((f"file:/x/{i}.jpg", "Synthetic", split, vector.astype(np.float32).tolist()))
    return spark.createDataFrame(rows, "path string, label string, split string, features array<float>")


def test_choose_k_is_the_smallest_reaching_the_target():
    assert choose_k([0.5, 0.8, 0.95, 0.99], 0.95) == 3
    assert choose_k([0.5, 0.8, 0.95, 0.99], 0.96) == 4
    assert choose_k([0.5, 0.8], 0.99) == 2
    assert choose_k([0.5, 0.8, 0.95, 0.99], 0.95, max_k=2) == 2
    with pytest.raises(ValueError):
        choose_k([0.5], 0)


def training(df):
    return df.where(F.col("split") == "Training")


def test_k_follows_the_explained_variance(low_rank_embeddings):
    total = np.sum(np.array([10.0, 6.0, 4.0, 2.0, 1.0]) ** 2)
    fit = fit_pca(training(low_rank_embeddings), target_variance=0.95)
    expected_k = choose_k(np.cumsum(np.array([100, 36, 16, 4, 1]) / total).tolist(), 0.95)
    assert fit.k == expected_k == 3
    assert fit.training_rows == 300
    assert 0.95 <= fit.explained_variance <= fit.cumulative_variance[-1] <= 1.0 + 1e-6
    assert fit.cumulative_variance == sorted(fit.cumulative_variance)


def test_reduced_width_equals_k(low_rank_embeddings):
    fit = fit_pca(training(low_rank_embeddings), k=4)
    reduced = apply_pca(fit.model, low_rank_embeddings, "v1")
    assert fit.k == pca_k(fit.model) == 4
    assert reduced.columns == ["path", "label", "split", "pca_features", "pca_version"]
    widths = {r[0] for r in reduced.select(F.size("pca_features")).distinct().collect()}
    assert widths == {4}
    assert reduced.count() == 330
    assert classes_not_projected_by(reduced, "v1") == []


def test_classes_projected_by_another_pca_are_named(low_rank_embeddings):
    """A classifier must not mix features of two PCAs (a run stopped between the PCA and the reduced features)."""
    fit = fit_pca(training(low_rank_embeddings), k=2)
    labels = sorted(row[0] for row in low_rank_embeddings.select("label").distinct().collect())
    old = apply_pca(fit.model, low_rank_embeddings.where(F.col("label") == labels[0]), "old")
    new = apply_pca(fit.model, low_rank_embeddings.where(F.col("label") != labels[0]), "new")
    mixed = old.unionByName(new)
    assert classes_not_projected_by(mixed, "new") == [labels[0]]
    assert classes_not_projected_by(mixed, "old") == labels[1:]
    assert classes_not_projected_by(mixed.drop("pca_version"), "new") == labels
    assert classes_not_projected_by(apply_pca(fit.model, low_rank_embeddings, None), None) == []


def test_spectrum_does_not_depend_on_how_rows_are_spread_over_partitions(spark):
    """Non-negative, offset features split unevenly by class over partitions (as class files read back are): Spark's
    PCA on uncentered input once returned a flat, wrong spectrum for this layout. It must match NumPy's."""
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 2, size=(3, EMBEDDING_WIDTH))
    rows, sizes = [], {0: 250, 1: 348, 2: 152}
    for label, size in sizes.items():
        for i in range(size):
            vector = np.maximum(centres[label] + rng.normal(scale=0.3, size=EMBEDDING_WIDTH), 0).astype(np.float32)
            rows.append((f"file:/{label}/{i}.jpg", f"C{label}", "Training", vector.tolist()))
    schema = "path string, label string, split string, features array<float>"
    df = spark.createDataFrame(rows, schema).repartition(3, "label")
    fit = fit_pca(df, k=3)
    matrix = np.asarray([r[3] for r in rows], dtype=np.float64)
    spectrum = np.linalg.svd(matrix - matrix.mean(0), compute_uv=False) ** 2
    expected = np.cumsum(spectrum / spectrum.sum())[:3]
    np.testing.assert_allclose(fit.cumulative_variance[:3], expected, rtol=1e-6)


def test_bad_k_and_empty_training_rows_are_clear_errors(low_rank_embeddings):
    with pytest.raises(ValueError, match="k must be between"):
        fit_pca(low_rank_embeddings, k=2000)
    with pytest.raises(ValueError, match="at least 2 training embeddings, found 0"):
        fit_pca(low_rank_embeddings.where(F.col("split") == "Validation"))


def test_k_is_capped_by_the_rank_of_few_training_rows(low_rank_embeddings):
    few = training(low_rank_embeddings).limit(4)
    fixed = fit_pca(few, k=50)
    assert (fixed.k, fixed.requested_k, fixed.training_rows) == (3, 50, 4)
    assert fit_pca(few, target_variance=1.0).k <= 3
    assert {len(r[0]) for r in apply_pca(fixed.model, few, "v2").select("pca_features").collect()} == {3}


def test_the_first_components_of_a_wide_fit_are_sparks_own_fit_with_that_k(spark, low_rank_embeddings, tmp_path):
    vectors = training(low_rank_embeddings).select(array_to_vector("features").alias("vector")).persist()
    wide = PCA(k=5, inputCol="vector", outputCol="pca").fit(vectors)
    refitted = PCA(k=3, inputCol="vector", outputCol="pca").fit(vectors)
    first = first_components(wide, 3)
    assert first.getK() == 3 and first.getInputCol() == "vector" and first.getOutputCol() == "pca"
    np.testing.assert_allclose(np.abs(first.pc.toArray()), np.abs(refitted.pc.toArray()), atol=1e-9)
    np.testing.assert_allclose(first.explainedVariance.toArray(), refitted.explainedVariance.toArray(), atol=1e-12)
    PipelineModel(stages=[first]).save(str(tmp_path / "pca"))
    loaded = PipelineModel.load(str(tmp_path / "pca")).stages[0]
    assert loaded.getK() == 3 and np.array_equal(loaded.pc.toArray(), first.pc.toArray())
    projected = loaded.transform(vectors).select(vector_to_array("pca").alias("pca")).toPandas()["pca"]
    expected = np.stack([row.vector.toArray() for row in vectors.collect()]) @ first.pc.toArray()
    np.testing.assert_allclose(np.stack(projected), expected, atol=1e-9)
    vectors.unpersist()
