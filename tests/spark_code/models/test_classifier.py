import numpy as np
import pytest
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_code.models.classifier import (
    ClassifierSettings,
    DegenerateClassifierError,
    Evaluation,
    NotEnoughClassesError,
    TrainedClassifier,
    evaluate,
    labels_of,
    score,
    train_classifier,
    with_folds,
)
from spark_code.photos.splits import FEEDBACK, SplitRoles, with_roles


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
    assert trained.selection.startswith("fitted on half of the training photos, scored by logLoss")
    assert trained.rejected == []
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


def test_scores_by_fruit_count_any_variety_of_the_right_fruit():
    # Granny Smith taken for Braeburn is the right fruit; a Kiwi taken for an apple is not; a Braeburn taken for a
    # Granny Smith is right too. No Spark: the counts are what `evaluate` collects.
    counts = {
        ("Apple Granny Smith", "Apple Granny Smith"): 2,
        ("Apple Granny Smith", "Apple Braeburn"): 3,
        ("Apple Braeburn", "Apple Granny Smith"): 1,
        ("Kiwi", "Apple Braeburn"): 4,
        ("Kiwi", "Kiwi"): 1,
    }
    result = Evaluation.from_counts(counts, ["Apple Braeburn", "Apple Granny Smith", "Kiwi"])
    assert result.images == 11 and result.correct == 3
    fruit = result.by_fruit(lambda label: label.split()[0])
    assert fruit.images == 11 and fruit.correct == 7 and fruit.accuracy == pytest.approx(7 / 11)
    assert fruit.per_fruit == {"Apple": (6, 6), "Kiwi": (1, 5)}
    assert fruit.confusion == {("Apple", "Apple"): 6, ("Kiwi", "Apple"): 4, ("Kiwi", "Kiwi"): 1}
    assert Evaluation.from_counts({}, ["Kiwi"]).by_fruit(str).accuracy == 0.0


def test_a_validation_split_scores_candidates_fitted_on_the_training_split(clustered):
    rows = clustered.withColumn(
        "split",
        F.when((F.col("split") == "Training") & F.col("path").endswith("0.jpg"), "Val").otherwise(F.col("split")),
    )
    trained = train_classifier(with_roles(rows, SplitRoles("Training", "Val", "Test")))
    assert trained.selection == "fitted on the training split, scored by logLoss on the validation split"
    assert len(trained.validation_metric) == len(ClassifierSettings().reg_params)


def _fine_feature_in_noise(spark, rows_per_split: dict[str, int]) -> DataFrame:
    """Classes A, B, C: one fine feature (class means 0.2 apart, sd 0.05) among 99 dimensions of noise (sd 0.15)."""
    rng = np.random.default_rng(31)
    rows = []
    for c, name in enumerate(["A", "B", "C"]):
        for split, count in rows_per_split.items():
            for i in range(count):
                x = 0.15 * rng.normal(0, 1, 100)
                x[0] = (c - 1) * 0.2 + rng.normal(0, 0.05)
                rows.append((f"file:/{split}/{name}/{i}.jpg", name, split, np.float32(x).tolist()))
    return spark.createDataFrame(rows, "path string, label string, split string, pca_features array<float>")


def _log_loss(fitted_on: DataFrame, scored_on: DataFrame, reg_param: float) -> float:
    """Log-loss on `scored_on` of a classifier fitted on `fitted_on` as the search fits its candidates."""
    settings = ClassifierSettings()
    estimator = LogisticRegression(
        featuresCol="v",
        labelCol="y",
        family="multinomial",
        regParam=reg_param,
        maxIter=settings.search_max_iter,
        tol=settings.search_tol,
        standardization=False,
    )
    prepared = [
        df.withColumn("v", array_to_vector("pca_features")).withColumn("y", F.ascii("label") - 65.0)
        for df in (fitted_on, scored_on)
    ]
    model = estimator.fit(prepared[0])
    return MulticlassClassificationEvaluator(labelCol="y", metricName="logLoss").evaluate(model.transform(prepared[1]))


def test_the_penalty_is_chosen_on_the_validation_split_alone(spark):
    # 200 training and 8 validation rows per class. Fitted on the training rows, the weak penalty scores best on the
    # validation rows; fitted on the 24 validation rows it fits their noise and is confidently wrong on the training
    # rows. So the two directions disagree, and averaging them (a 2-fold CrossValidator) would choose 1e-2.
    rows = _fine_feature_in_noise(spark, {"Training": 200, "Val": 8})
    train, validation = rows.where("split = 'Training'"), rows.where("split = 'Val'")
    forward = {reg: _log_loss(train, validation, reg) for reg in (1e-2, 1e-6)}
    backward = {reg: _log_loss(validation, train, reg) for reg in (1e-2, 1e-6)}
    assert forward[1e-6] < forward[1e-2] - 0.3
    assert forward[1e-6] + backward[1e-6] > forward[1e-2] + backward[1e-2] + 0.2
    settings = ClassifierSettings(reg_params=(1e-2, 1e-6))
    trained = train_classifier(with_roles(rows, SplitRoles("Training", "Val", "Test")), settings)
    assert trained.reg_param == 1e-6
    assert trained.validation_metric == pytest.approx(forward, abs=1e-3)


def test_without_a_validation_split_candidates_are_fitted_on_one_half_and_scored_on_the_other(spark):
    """Each candidate's score is the log-loss on FOLD 1 of a fit on FOLD 0 (one fit per candidate), computed here
    independently of the search."""
    rows = _fine_feature_in_noise(spark, {"Training": 30, "Test": 4})
    training = rows.where("split = 'Training'").withColumn("label_index", F.ascii("label") - 65.0)
    folded = with_folds(training)
    halves = [folded.where(F.col("fold") == fold).drop("fold", "label_index") for fold in (0, 1)]
    reg_params = (1e-2, 1e-6)
    expected = {reg: _log_loss(halves[0], halves[1], reg) for reg in reg_params}
    trained = train_classifier(with_roles(rows, ROLES), ClassifierSettings(reg_params=reg_params))
    assert trained.selection.startswith("fitted on half of the training photos, scored by logLoss on the other half")
    assert trained.validation_metric == pytest.approx(expected, abs=1e-3)
    assert trained.reg_param == min(expected, key=expected.get)


def test_augmented_views_train_in_their_photos_fold_and_are_never_scored(spark):
    """Views (rows whose path is `<photo>#view=<n>`, features of their own) join their photo's fold; the candidates
    are fitted on FOLD 0 with its views and scored on the photos of FOLD 1 alone; the photos' folds do not move."""
    rows = _fine_feature_in_noise(spark, {"Training": 30, "Test": 4})
    views = rows.where("split = 'Training'").select(
        F.concat("path", F.lit("#view=1")).alias("path"),
        "label",
        "split",
        F.transform("pca_features", lambda x: x * 0.5).alias("pca_features"),
    )
    both = rows.unionByName(views)
    indexed = both.where("split = 'Training'").withColumn("label_index", F.ascii("label") - 65.0)
    folds = {row["path"]: row["fold"] for row in with_folds(indexed).collect()}
    photos = {path: fold for path, fold in folds.items() if "#view=" not in path}
    assert all(folds[f"{path}#view=1"] == fold for path, fold in photos.items())
    plain = rows.where("split = 'Training'").withColumn("label_index", F.ascii("label") - 65.0)
    assert photos == {row["path"]: row["fold"] for row in with_folds(plain).collect()}
    folded = with_folds(indexed).drop("label_index")
    fitted_on = folded.where(F.col("fold") == 0).drop("fold")
    scored_on = folded.where((F.col("fold") == 1) & ~F.col("path").contains("#view=")).drop("fold")
    reg_params = (1e-2, 1e-6)
    expected = {reg: _log_loss(fitted_on, scored_on, reg) for reg in reg_params}
    trained = train_classifier(with_roles(both, ROLES), ClassifierSettings(reg_params=reg_params))
    assert trained.validation_metric == pytest.approx(expected, abs=1e-3)


def test_a_fit_that_does_not_converge_is_refused_with_each_reason(clustered):
    with pytest.raises(DegenerateClassifierError, match="did not converge in 1 iterations") as failure:
        train_classifier(with_roles(clustered, ROLES), ClassifierSettings(max_iter=1))
    assert str(failure.value).count("regParam") == len(ClassifierSettings().reg_params)


def test_a_kept_penalty_is_refitted_without_a_search_unless_it_is_refused(clustered):
    kept = train_classifier(with_roles(clustered, ROLES), kept_reg_param=1e-3)
    assert kept.reg_param == 1e-3 and not kept.searched and kept.validation_metric == {}
    assert kept.selection.startswith("kept from the last search") and kept.training_accuracy == 1.0
    searched = train_classifier(with_roles(clustered, ROLES))
    assert searched.searched and len(searched.validation_metric) == len(ClassifierSettings().reg_params)
    # refused (here 1e-2 needs 33 iterations, 1e-7 24): the search runs and its best penalty is refitted instead
    settings = ClassifierSettings(max_iter=30, reg_params=(1e-7,))
    fallback = train_classifier(with_roles(clustered, ROLES), settings, kept_reg_param=1e-2)
    assert fallback.searched and fallback.rejected == ["regParam 0.01: did not converge in 30 iterations"]
    assert fallback.reg_param == 1e-7 and fallback.iterations < 30


def test_a_single_candidate_penalty_is_fitted_without_a_search(clustered):
    only = train_classifier(with_roles(clustered, ROLES), ClassifierSettings(reg_params=(1e-3,)))
    assert only.reg_param == 1e-3 and only.searched and only.validation_metric == {} and only.rejected == []
    assert only.selection == "the only candidate penalty, no search" and only.training_accuracy == 1.0
    searched = train_classifier(with_roles(clustered, ROLES), ClassifierSettings(reg_params=(1e-3, 1e-5)))
    assert set(searched.validation_metric) == {1e-3, 1e-5}  # two are searched as before
    with pytest.raises(DegenerateClassifierError, match="regParam 0.001: did not converge in 1 iterations"):
        train_classifier(with_roles(clustered, ROLES), ClassifierSettings(reg_params=(1e-3,), max_iter=1))


def test_a_feedback_photos_weight_counts_it_that_many_times(clustered):
    """Weight 2 for the feedback area's photos fits the model that training on each of them twice fits."""
    some = clustered.where("split = 'Training'").where(F.col("path").rlike("/[0-9][.]jpg$"))  # 10 of each class
    some = some.withColumn("split", F.lit(FEEDBACK))
    weighted = train_classifier(
        with_roles(clustered.unionByName(some), ROLES), ClassifierSettings(feedback_weight=2.0), kept_reg_param=1e-3
    )
    twice = clustered.unionByName(some.withColumn("split", F.lit("Training")))
    duplicated = train_classifier(with_roles(twice.unionByName(some), ROLES), kept_reg_param=1e-3)
    once = train_classifier(with_roles(clustered.unionByName(some), ROLES), kept_reg_param=1e-3)
    coefficients = [trained.model.stages[-1].coefficientMatrix.toArray() for trained in (weighted, duplicated, once)]
    assert np.allclose(coefficients[0], coefficients[1], atol=1e-4)
    assert not np.allclose(coefficients[0], coefficients[2], atol=1e-4)


def test_one_class_is_not_enough(clustered):
    with pytest.raises(NotEnoughClassesError, match="1 class"):
        train_classifier(with_roles(clustered.where(F.col("label") == "Apple"), ROLES))


def test_folds_are_never_empty_and_hold_every_class_of_two_photos(spark):
    sizes = {0.0: 1, 1.0: 1, 2.0: 2, 3.0: 7}
    rows = [(f"file:/{label}/{i}.jpg", label, "train") for label, n in sizes.items() for i in range(n)]
    indexed = spark.createDataFrame(rows, "path string, label_index double, role string")
    folds = {}
    for row in with_folds(indexed).collect():
        folds.setdefault(row["label_index"], []).append(row["fold"])
    assert {fold for values in folds.values() for fold in values} == {0, 1}
    assert folds[0.0] != folds[1.0]  # two classes of one photo land in different folds
    assert sorted(folds[2.0]) == [0, 1] and sorted(folds[3.0]).count(0) in (3, 4)


# Data where the penalty matters (the clusters above are told apart by any penalty). Spark's L2 penalty acts on the
# raw features: a strong one cannot give the large weight a fine-scaled feature needs (underfit); a weak one lets
# few rows in many noisy dimensions be fitted exactly (overfit). Validation must see both, and held-out data made
# the same way (200 rows per class, never seen by the search) confirms each choice.


def _generated(spark, seed: int, train_rows: int, features) -> DataFrame:
    """Classes A, B, C (index c = 0, 1, 2) with `features(rng, c)` as pca_features; train_rows Training rows and 200
    Test rows per class."""
    rng = np.random.default_rng(seed)
    rows = [
        (f"file:/{name}/{i}.jpg", name, "Training" if i < train_rows else "Test", features(rng, c))
        for c, name in enumerate(["A", "B", "C"])
        for i in range(train_rows + 200)
    ]
    return spark.createDataFrame(rows, "path string, label string, split string, pca_features array<float>")


def _held_out(trained: TrainedClassifier, rows: DataFrame) -> tuple[float, float]:
    """Log-loss and accuracy on the Test rows, computed here from the model's probabilities."""
    test = rows.where("split = 'Test'").withColumn("pca_vector", array_to_vector("pca_features"))
    out = trained.model.transform(test).select("label_index", vector_to_array("probability").alias("p")).collect()
    truth = np.array([int(r["label_index"]) for r in out])
    probabilities = np.array([r["p"] for r in out])
    log_loss = -np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-15, 1.0)))
    return float(log_loss), float(np.mean(probabilities.argmax(axis=1) == truth))


def _chosen_and_fixed(rows: DataFrame, grid: tuple[float, float], bad: float):
    chosen = train_classifier(with_roles(rows, ROLES), ClassifierSettings(reg_params=grid))
    fixed = train_classifier(with_roles(rows, ROLES), ClassifierSettings(reg_params=(bad,)))
    return chosen, _held_out(chosen, rows), _held_out(fixed, rows)


@pytest.fixture(scope="module")
def underfit(spark):
    """One fine feature (class means 0.2 apart, sd 0.05: a weight near 100 separates the classes), one coarse weak
    feature (means 1 apart, sd 2) and one of noise; 60 training rows per class. A penalty of 1e-2 leans on the
    coarse feature."""

    def features(rng, c):
        return np.float32([(c - 1) * 0.2 + rng.normal(0, 0.05), (c - 1) + rng.normal(0, 2), rng.normal()]).tolist()

    return _chosen_and_fixed(_generated(spark, 21, 60, features), (1e-2, 1e-4), bad=1e-2)


@pytest.fixture(scope="module")
def overfit(spark):
    """40 dimensions of noise (sd 0.15), one of them shifted by 0.225 per class; 10 training rows per class: with
    1e-6 the fit separates the training rows through the noise and is confidently wrong on new ones."""

    def features(rng, c):
        x = rng.normal(0, 1, 40)
        x[0] += (c - 1) * 1.5
        return np.float32(0.15 * x).tolist()

    return _chosen_and_fixed(_generated(spark, 22, 10, features), (1e-2, 1e-6), bad=1e-6)


def test_validation_picks_the_weak_penalty_where_a_strong_one_underfits(underfit):
    chosen, (loss, accuracy), (bad_loss, bad_accuracy) = underfit
    assert chosen.reg_param == 1e-4
    assert chosen.validation_metric[1e-2] > chosen.validation_metric[1e-4] + 0.3
    # Only the strong penalty allowed: clearly worse on held-out rows, in log-loss and in accuracy.
    assert loss < 0.3 < bad_loss - 0.2
    assert accuracy > 0.9 and accuracy > bad_accuracy + 0.1


def test_validation_picks_the_strong_penalty_where_a_weak_one_overfits(overfit):
    chosen, (loss, accuracy), (bad_loss, bad_accuracy) = overfit
    assert chosen.reg_param == 1e-2
    assert chosen.validation_metric[1e-6] > chosen.validation_metric[1e-2] + 0.4
    # Better than answering 1/3 for every class (log-loss ln 3), unlike the weak penalty alone: its held-out
    # log-loss is far worse (overconfident), its accuracy no better.
    assert loss < np.log(3) < bad_loss - 0.5
    assert bad_accuracy <= accuracy + 0.05
