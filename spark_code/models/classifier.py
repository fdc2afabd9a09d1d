"""The fruit classifier: Spark ML on the PCA features, its scoring and its evaluation."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.pool import ThreadPool

from pyspark.ml import PipelineModel
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.feature import StringIndexer
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.tuning import ParamGridBuilder
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.util import inheritable_thread_target

from spark_code.errors import PermanentError
from spark_code.photos.splits import FEEDBACK, ROLE, TRAIN, VALIDATE
from spark_code.photos.views import is_view, photo_path

FEATURES = "pca_vector"
LABEL_INDEX = "label_index"
FOLD = "fold"


@dataclass(frozen=True)
class ClassifierSettings:
    """Multinomial logistic regression on the raw (unstandardized) PCA features; its L2 penalty is chosen on
    validation data among `reg_params`, then the chosen one is refitted on all training images to convergence.

    Candidates are compared by validation log-loss, not accuracy: accuracy saturates (every penalty scores 100% on
    separable data, or on a validation share of near-duplicate frames such as Fruits-360's) and then cannot rank
    them, while log-loss still does, and the app shows the probabilities. Measured in BENCHMARKS.md ("Classifier").
    """

    reg_params: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
    """The candidate penalties; a single one is fitted without a search (the search is 6 fits of up to 100
    iterations besides the refit: on a few photos, where each iteration is a Spark job, most of the training's
    time)."""
    search_tol: float = 1e-6
    """Spark's default tolerance while comparing candidates: enough to rank them, a fraction of the iterations."""
    search_max_iter: int = 100
    """Iterations per candidate while comparing them: each is a Spark job, and ranking needs no convergence (on the
    shared sample Spark's default tolerance stops at about 100 anyway)."""
    tol: float = 1e-9
    """The refit runs to convergence (Spark's default stopped about 0.05 points of accuracy short)."""
    max_iter: int = 2000
    """A fit that needs more iterations has not converged and is not published."""
    metric: str = "logLoss"
    """What the candidates are compared by (MulticlassClassificationEvaluator's metricName; ties go to the first
    candidate, the strongest penalty)."""
    standardization: bool = False
    feedback_weight: float = 1.0
    """What a photo of the feedback area (spark_code.photos.splits.FEEDBACK) weighs in the fit against a photo of
    the images root: its loss counts this many times."""


@dataclass(frozen=True)
class TrainedClassifier:
    """A classifier that passed the degeneracy checks, with how it was chosen."""

    model: PipelineModel
    reg_param: float
    iterations: int
    training_accuracy: float
    validation_metric: dict[float, float]
    """Each candidate penalty's score on validation data (the settings' metric)."""
    selection: str
    rejected: list[str]
    """Candidates refitted before this one and refused, with the reason (a fallback happened if not empty)."""
    searched: bool
    """Whether the penalty was chosen in this training, by a search or as the only candidate (else kept from an
    earlier search)."""


class NotEnoughClassesError(PermanentError, ValueError):
    """Fewer than two classes have training images: there is nothing to tell apart."""


class DegenerateClassifierError(PermanentError, RuntimeError):
    """No candidate setting gave a usable classifier; the message gives each one's reason."""


def labels_of(model: PipelineModel) -> list[str]:
    """Class labels in the order of the classifier's outputs (the label index)."""
    return list(model.stages[0].labels)


def _problem(model: LogisticRegressionModel, settings: ClassifierSettings, chance: float) -> str | None:
    """Why a fitted model must not be published, or None: it stopped without converging, or it does no better than
    always answering the largest class on its own training images (e.g. an optimizer that gave up)."""
    summary = model.summary
    if summary.totalIterations >= settings.max_iter:
        return f"did not converge in {settings.max_iter} iterations"
    if summary.accuracy <= chance + 1e-12:
        return f"training accuracy {summary.accuracy:.4f} is at chance (largest class {chance:.4f})"
    return None


WEIGHT = "weight"


def _estimator(settings: ClassifierSettings, tol: float, max_iter: int) -> LogisticRegression:
    estimator = LogisticRegression(
        featuresCol=FEATURES,
        labelCol=LABEL_INDEX,
        family="multinomial",
        maxIter=max_iter,
        tol=tol,
        standardization=settings.standardization,
    )
    return estimator.setWeightCol(WEIGHT) if settings.feedback_weight != 1.0 else estimator


def with_weights(rows: DataFrame, settings: ClassifierSettings) -> DataFrame:
    """Add WEIGHT (the feedback area's photos settings.feedback_weight, every other 1) when the weights differ."""
    if settings.feedback_weight == 1.0:
        return rows
    return rows.withColumn(WEIGHT, F.when(F.col("split") == FEEDBACK, settings.feedback_weight).otherwise(1.0))


def with_folds(indexed: DataFrame) -> DataFrame:
    """Add FOLD (0 or 1) to split the training photos in two when there is no validation split: dealt alternately
    to the two folds in an order set by a hash of their path, per class, each class starting on the fold the previous
    one did not, so that neither fold is ever empty (2 photos suffice) and both hold every class of 2 photos or
    more."""
    photo = photo_path()  # a photo's augmented views go to its fold
    in_class = Window.partitionBy(LABEL_INDEX).orderBy(F.xxhash64(photo), photo)
    return indexed.withColumn(FOLD, (F.dense_rank().over(in_class) + F.col(LABEL_INDEX).cast("int")) % 2)


def _search(indexed: DataFrame, validated: bool, settings: ClassifierSettings) -> list[float]:
    """The validation score of each candidate penalty (the settings' metric), with Spark ML's own tools.

    Each candidate is fitted on the training photos and scored on the validation photos only
    (`Estimator.fitMultiple` and the evaluator, as `TrainValidationSplit` does internally: that class draws its own
    random split and cannot be given this one). The validation photos are the validation split's, or without one
    FOLD 1 of the training photos (`with_folds`), the candidates then fitted on FOLD 0. One fit per candidate: the
    2-fold `CrossValidator` used before cost twice the fits and chose the same penalty on the shared sample
    (BENCHMARKS.md, "One fit per candidate")."""
    estimator = _estimator(settings, settings.search_tol, min(settings.search_max_iter, settings.max_iter))
    grid = ParamGridBuilder().addGrid(estimator.regParam, list(settings.reg_params)).build()
    evaluator = MulticlassClassificationEvaluator(labelCol=LABEL_INDEX, metricName=settings.metric)
    if validated:
        fit_on, validation = indexed.where(F.col(ROLE) == TRAIN), indexed.where(F.col(ROLE) == VALIDATE)
    else:
        fit_on, validation = (
            indexed.where(F.col(FOLD) == 0),
            indexed.where((F.col(FOLD) == 1) & ~is_view() & (F.col("split") != FEEDBACK)),  # studio photos only
        )
    fitted = estimator.fitMultiple(fit_on, grid)  # thread-safe: one model per next()

    @inheritable_thread_target
    def fit_and_score(_: int) -> tuple[int, float]:
        index, model = next(fitted)
        return index, float(evaluator.evaluate(model.transform(validation)))

    metrics = [0.0] * len(grid)
    # Every candidate on a thread of its own: on small inputs each L-BFGS iteration is a Spark job that waits on
    # scheduling more than on the cores (6 threads instead of 2: a 3-class training 4.9-5.6 s -> 3.7-4.0 s warm), while
    # on the full sample the candidates share the cores either way (80.8 s with 2 threads, 82.2 s with 6).
    with ThreadPool(len(grid)) as pool:
        for index, metric in pool.imap_unordered(fit_and_score, range(len(grid))):
            metrics[index] = metric
    return metrics


WORK_PER_PARTITION = 100_000_000
"""Multiply-adds of one L-BFGS pass (rows x features x classes) worth a partition of their own. Each iteration is a
Spark job whose fixed cost (about 50 ms here) a second partition doubles on small data (measured: 97 against 50 ms
per iteration for 5,250 rows x 100 features x 20 classes); large inputs still spread over every core."""


def partitions_for(rows: int, width: int, classes: int, cores: int) -> int:
    """Partitions of the classifier's cached input: one per WORK_PER_PARTITION of a pass, at most one per core."""
    return max(1, min(cores, math.ceil(rows * width * classes / WORK_PER_PARTITION)))


def train_classifier(
    rows: DataFrame, settings: ClassifierSettings = ClassifierSettings(), kept_reg_param: float | None = None
) -> TrainedClassifier:
    """Fit label index + classifier on rows of path, label, split, pca_features and `role` (TRAIN and VALIDATE rows
    are used): the penalty is chosen on validation data, then refitted on all of them; a candidate that does not
    converge or stays at chance is refused and the next best is tried. With `kept_reg_param` (the penalty of an
    earlier search, see spark_code.models.penalty_search) that penalty is refitted without a search, unless it is
    refused."""
    candidates = rows.where(F.col(ROLE).isin(TRAIN, VALIDATE)).withColumn(FEATURES, array_to_vector("pca_features"))
    candidates = with_weights(candidates, settings)
    indexer = StringIndexer(
        inputCol="label", outputCol=LABEL_INDEX, stringOrderType="alphabetAsc", handleInvalid="skip"
    ).fit(candidates.where(F.col(ROLE) == TRAIN))
    labels = list(indexer.labels)
    if len(labels) < 2:
        raise NotEnoughClassesError(f"{len(labels)} class(es) with training images: a classifier needs at least 2")
    indexed = indexer.transform(candidates)
    sizes = indexed.agg(F.count("*"), F.max(F.size("pca_features")), F.max(F.col(ROLE) == VALIDATE)).first()
    validated = bool(sizes[2])
    # Every L-BFGS iteration is a Spark job over this input: cached, in as few partitions as its work needs (not
    # one per class file), which keeps the per-iteration overhead small.
    cores = rows.sparkSession.sparkContext.defaultParallelism
    partitions = partitions_for(sizes[0], sizes[1], len(labels), cores)
    indexed = (indexed if validated else with_folds(indexed)).coalesce(partitions).persist()
    final = _estimator(settings, settings.tol, settings.max_iter)
    rejected: list[str] = []

    def refit(
        reg_param: float, metrics: dict[float, float], selection: str, kept: bool = False
    ) -> TrainedClassifier | None:
        model = final.fit(indexed, {final.regParam: reg_param})
        problem = _problem(model, settings, chance)
        if problem:
            rejected.append(f"regParam {reg_param:g}: {problem}")
            return None
        return TrainedClassifier(
            model=PipelineModel(stages=[indexer, model]),
            reg_param=reg_param,
            iterations=model.summary.totalIterations,
            training_accuracy=float(model.summary.accuracy),
            validation_metric=metrics,
            selection=selection,
            rejected=list(rejected),
            searched=not kept,
        )

    try:
        largest = indexed.groupBy(LABEL_INDEX).count().agg(F.max("count"), F.sum("count")).first()
        chance = largest[0] / largest[1]
        if kept_reg_param is not None:
            kept = refit(kept_reg_param, {}, "kept from the last search (spark_code.models.penalty_search)", kept=True)
            if kept is not None:
                return kept
        if len(settings.reg_params) == 1:  # nothing to choose among: the one candidate is fitted, no search
            order, scores, selection = [0], {}, "the only candidate penalty, no search"
        else:
            metrics = _search(indexed, validated, settings)
            selection = (
                f"fitted on the training split, scored by {settings.metric} on the validation split"
                if validated
                else f"fitted on half of the training photos, scored by {settings.metric} on the other half "
                "(stratified, by a hash of each path)"
            )
            better = 1 if MulticlassClassificationEvaluator(metricName=settings.metric).isLargerBetter() else -1
            order = sorted(range(len(metrics)), key=lambda i: (-better * metrics[i], i))
            scores = dict(zip(settings.reg_params, metrics, strict=True))
        for i in order:
            trained = refit(settings.reg_params[i], scores, selection)
            if trained is not None:
                return trained
    finally:
        indexed.unpersist()
    raise DegenerateClassifierError("no usable classifier: " + "; ".join(rejected))


def score(model: PipelineModel, reduced: DataFrame, keep_probability: bool = False) -> DataFrame:
    """path, label, split, predicted (label), confidence (probability of the predicted label), and with
    `keep_probability` every class's (`probability`, a vector in the label order)."""
    labels = F.array(*[F.lit(name) for name in labels_of(model)])
    classifier = model.stages[-1]
    scored = classifier.transform(reduced.withColumn(FEATURES, array_to_vector("pca_features")))
    return scored.select(
        "path",
        "label",
        "split",
        F.element_at(labels, F.col("prediction").cast("int") + 1).alias("predicted"),
        F.array_max(vector_to_array("probability")).alias("confidence"),
        *(["probability"] if keep_probability else []),
    )


@dataclass(frozen=True)
class FruitScores:
    """Quality by fruit: an answer counts when it names any variety of the right fruit, which is what the app tells
    its user (a Royal Gala called `Apple Red 1` is right)."""

    images: int
    correct: int
    accuracy: float
    per_fruit: dict[str, tuple[int, int]]
    """fruit -> (photos answered with the right fruit, photos of that fruit)."""
    confusion: dict[tuple[str, str], int]
    """(true fruit, predicted fruit) -> images."""


@dataclass(frozen=True)
class Evaluation:
    """Quality of the classifier on one split, from its confusion counts."""

    images: int
    correct: int
    accuracy: float
    macro_f1: float
    recall: dict[str, float]
    f1: dict[str, float]
    confusion: dict[tuple[str, str], int]
    """(true label, predicted label) -> images."""

    def most_confused(self, n: int = 10) -> list[tuple[str, str, int]]:
        pairs = [(true, predicted, count) for (true, predicted), count in self.confusion.items() if true != predicted]
        return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))[:n]

    def by_fruit(self, fruit_of: Callable[[str], str]) -> FruitScores:
        """The same answers scored by fruit; `fruit_of` names a class label's fruit."""
        right: dict[str, int] = defaultdict(int)
        seen: dict[str, int] = defaultdict(int)
        confusion: dict[tuple[str, str], int] = defaultdict(int)
        for (true, guess), count in self.confusion.items():
            fruit, answer = fruit_of(true), fruit_of(guess)
            seen[fruit] += count
            right[fruit] += count if answer == fruit else 0
            confusion[(fruit, answer)] += count
        correct = sum(right.values())
        return FruitScores(
            images=self.images,
            correct=correct,
            accuracy=correct / self.images if self.images else 0.0,
            per_fruit={fruit: (right[fruit], seen[fruit]) for fruit in sorted(seen)},
            confusion=dict(confusion),
        )

    @classmethod
    def from_counts(cls, counts: dict[tuple[str, str], int], labels: list[str]) -> Evaluation:
        """Accuracy, macro F1 and per-class recall from (true label, predicted label) -> images."""
        truth: dict[str, int] = defaultdict(int)
        predicted: dict[str, int] = defaultdict(int)
        for (true, guess), count in counts.items():
            truth[true] += count
            predicted[guess] += count
        images = sum(counts.values())
        correct = sum(count for (true, guess), count in counts.items() if true == guess)
        recall, f1 = {}, {}
        for name in sorted(set(labels) | set(truth)):
            hits = counts.get((name, name), 0)
            recall[name] = hits / truth[name] if truth[name] else 0.0
            precision = hits / predicted[name] if predicted[name] else 0.0
            f1[name] = 2 * precision * recall[name] / (precision + recall[name]) if hits else 0.0
        evaluated = [name for name in f1 if truth[name]]
        return cls(
            images=images,
            correct=correct,
            accuracy=correct / images if images else 0.0,
            macro_f1=sum(f1[name] for name in evaluated) / len(evaluated) if evaluated else 0.0,
            recall={name: recall[name] for name in evaluated},
            f1={name: f1[name] for name in evaluated},
            confusion=dict(counts),
        )


def evaluate(scored: DataFrame, labels: list[str]) -> Evaluation:
    """Accuracy, macro F1 and per-class recall; only the (at most classes^2) confusion counts reach the driver."""
    counts = {
        (row["label"], row["predicted"]): int(row["count"])
        for row in scored.groupBy("label", "predicted").count().collect()
    }
    return Evaluation.from_counts(counts, labels)
