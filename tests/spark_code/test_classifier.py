import numpy as np
import pytest
from pyspark.sql import functions as F

from spark_code.classifier import (
    ClassifierSettings,
    DegenerateClassifierError,
    NotEnoughClassesError,
    evaluate,
    labels_of,
    score,
    train_classifier,
    with_folds,
)
from spark_code.splits import SplitRoles, with_roles


@pytest.fixture(scope="module")
def clustered(spark):
    """Three classes as well separated clusters in 6 dimensions, 40 training and 10 test rows each."""
    rng = np.random.default_rng(11)
    rows = []
    for c, name in enumerate(["Cherry", "Apple", "Banana"]):
        centre = np.eye(6)[c] * 5
        for i in range(50):
            features = (centre + rng.normal(scale=0.5, size=6)).astype(np.float32).tolist()
            rows.append((f"file:/{name}/{i}.jpg", name, "Training" if i < 40 else "Test", features))
    return spark.createDataFrame(rows, "path string, label string, split string, pca_features array<float>")


ROLES = SplitRoles("Training", None, "Test")


def test_trains_on_the_training_split_and_names_the_classes(clustered):
    trained = train_classifier(with_roles(clustered, ROLES))
    model = trained.model
    assert labels_of(model) == ["Apple", "Banana", "Cherry"]
    # The penalty with the lowest validation log-loss wins; the weaker the penalty on separable data, the lower.
    losses = trained.validation_metric
    assert trained.reg_param == min(losses, key=losses.get) == min(ClassifierSettings().reg_params)
    assert trained.selection.startswith("CrossValidator by logLoss, two folds") and trained.rejected == []
    scored = score(model, clustered.where("split = 'Test'"))
    assert scored.columns == ["path", "label", "split", "predicted", "confidence"]
    rows = scored.collect()
    assert len(rows) == 30
    assert all(r["predicted"] == r["label"] and 0.5 < r["confidence"] <= 1.0 for r in rows)


def test_evaluation_metrics_from_known_confusions(spark):
    # Apple: 3 right, 1 taken for Banana; Banana: 2 right; Cherry: 1 right, 1 taken for Banana.
    pairs = [("Apple", "Apple")] * 3 + [("Apple", "Banana"), ("Banana", "Banana"), ("Banana", "Banana")]
    pairs += [("Cherry", "Cherry"), ("Cherry", "Banana")]
    scored = spark.createDataFrame(pairs, "label string, predicted string")
    result = evaluate(scored, ["Apple", "Banana", "Cherry"])
    assert result.images == 8 and result.correct == 6 and result.accuracy == pytest.approx(0.75)
    assert result.recall == pytest.approx({"Apple": 0.75, "Banana": 1.0, "Cherry": 0.5})
    # F1: Apple 2*1*.75/1.75, Banana 2*.5*1/1.5, Cherry 2*1*.5/1.5
    expected_f1 = (6 / 7 + 2 / 3 + 2 / 3) / 3
    assert result.macro_f1 == pytest.approx(expected_f1)
    assert result.most_confused(5) == [("Apple", "Banana", 1), ("Cherry", "Banana", 1)]


def test_a_validation_split_is_one_of_two_crossvalidator_folds(clustered):
    rows = clustered.withColumn(
        "split",
        F.when((F.col("split") == "Training") & F.col("path").endswith("0.jpg"), "Val").otherwise(F.col("split")),
    )
    trained = train_classifier(with_roles(rows, SplitRoles("Training", "Val", "Test")))
    assert trained.selection.startswith("CrossValidator")
    assert len(trained.validation_metric) == len(ClassifierSettings().reg_params)


def test_a_fit_that_does_not_converge_is_refused_with_each_reason(clustered):
    with pytest.raises(DegenerateClassifierError, match="did not converge in 1 iterations") as failure:
        train_classifier(with_roles(clustered, ROLES), ClassifierSettings(max_iter=1))
    assert str(failure.value).count("regParam") == len(ClassifierSettings().reg_params)


def test_one_class_is_not_enough(clustered):
    with pytest.raises(NotEnoughClassesError, match="1 class"):
        train_classifier(with_roles(clustered.where(F.col("label") == "Apple"), ROLES))


def test_folds_are_never_empty_and_hold_every_class_of_two_photos(spark):
    sizes = {0.0: 1, 1.0: 1, 2.0: 2, 3.0: 7}
    rows = [(f"file:/{label}/{i}.jpg", label, "train") for label, n in sizes.items() for i in range(n)]
    indexed = spark.createDataFrame(rows, "path string, label_index double, role string")
    folds = {}
    for row in with_folds(indexed, validated=False).collect():
        folds.setdefault(row["label_index"], []).append(row["fold"])
    assert {fold for values in folds.values() for fold in values} == {0, 1}
    assert folds[0.0] != folds[1.0]  # two classes of one photo land in different folds
    assert sorted(folds[2.0]) == [0, 1] and sorted(folds[3.0]).count(0) in (3, 4)
