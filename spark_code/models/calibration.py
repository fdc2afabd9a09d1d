"""A confidence the app can trust: a temperature for the classifier's probabilities and the confidence under which
its answer is "not sure", both fitted on held-out field photos (photos of the app's world, never trained on).

The app tells a fruit, so an answer's confidence is the probability of its fruit (every class of the fruit of the top
class together), and an answer is right when it names the right fruit. The temperature T divides the classifier's
margins (softmax(margins / T)): fitted by the likelihood of the photos' true fruits over a grid of T. The threshold is
the lowest confidence (on a grid of 1/BINS) at which the answers at or above it are right at least `precision` of
the time, with 95% confidence (Wilson's lower bound: a handful of photos never makes it sure). Only aggregates reach
the driver: one loss per temperature, one count per confidence bin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, DoubleType

TEMPERATURES = np.geomspace(0.01, 1000.0, 161)
"""The temperatures tried (one parameter, and the likelihood is smooth in its logarithm: a grid is enough)."""
BINS = 1000
"""Confidence bins the threshold is chosen on."""
PRECISION = 0.95
"""The share of confident answers that must name the right fruit."""
CONFIDENCE_Z = 1.645
"""The precision must hold with 95% confidence (one-sided): its Wilson lower bound, not the share alone, reaches
PRECISION, so that a few lucky photos never make the app sure (2 right of 2 is no evidence of 95%)."""


@dataclass(frozen=True)
class Calibration:
    """What the app needs to say how sure it is."""

    temperature: float
    threshold: float | None
    """The lowest confidence answered as sure; None when no confidence reaches the precision: never sure."""
    precision: float
    photos: int
    """Field photos it was fitted on."""

    def as_notes(self) -> dict[str, Any]:
        return asdict(self)


class FruitMembership:
    """Which fruit each class of a classifier names, as a (classes, fruits) 0/1 matrix."""

    def __init__(self, labels: list[str], fruit_of: Callable[[str], str]) -> None:
        fruits = [fruit_of(label) for label in labels]
        self.fruits = sorted(set(fruits))
        self.of_class = np.array([self.fruits.index(fruit) for fruit in fruits])
        self.matrix = np.zeros((len(labels), len(self.fruits)))
        self.matrix[np.arange(len(labels)), self.of_class] = 1.0

    def index(self, fruit: str) -> int:
        """The fruit's column, -1 for a fruit no class names."""
        return self.fruits.index(fruit) if fruit in self.fruits else -1


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(margins / T) of rows of softmax(margins) (the logarithm of a softmax differs from the margins by one
    constant per row, which the softmax ignores)."""
    scaled = np.log(np.clip(probabilities, 1e-300, None)) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def fruit_answers(probabilities: np.ndarray, membership: FruitMembership) -> tuple[np.ndarray, np.ndarray]:
    """Per row of class probabilities: the answer's fruit (the fruit of the top class) and its confidence (the
    probability of that fruit: all its classes together)."""
    answer = membership.of_class[probabilities.argmax(axis=-1)]
    by_fruit = probabilities @ membership.matrix
    return answer, np.take_along_axis(by_fruit, answer[..., None], axis=-1)[..., 0]


def row_losses(probabilities: np.ndarray, truth: list[str], membership: FruitMembership) -> np.ndarray:
    """(photos, TEMPERATURES): each photo's negative log-likelihood of its true fruit under each temperature (0 for a
    fruit the classifier does not know: no temperature changes it)."""
    true = np.array([membership.index(fruit) for fruit in truth], dtype=int)
    known = true >= 0
    out = np.zeros((len(true), len(TEMPERATURES)))
    for i, temperature in enumerate(TEMPERATURES):
        by_fruit = with_temperature(probabilities[known], temperature) @ membership.matrix
        out[known, i] = -np.log(np.clip(by_fruit[np.arange(len(by_fruit)), true[known]], 1e-12, None))
    return out


def confidence_bin(confidence: np.ndarray) -> np.ndarray:
    """The bin of each confidence, BINS per unit (rounded first: 0.8 * BINS is 799.99... in floating point)."""
    return np.minimum(np.floor(np.round(np.asarray(confidence) * BINS, 6)).astype(int), BINS - 1)


def is_sure(confidence: np.ndarray, threshold: float | None) -> np.ndarray:
    """Whether each confidence reaches the threshold (compared by bin, as the threshold was chosen); never for None."""
    if threshold is None:
        return np.zeros(np.shape(confidence), dtype=bool)
    return confidence_bin(confidence) >= round(threshold * BINS)


def answers_in_bins(
    probabilities: np.ndarray, truth: list[str], membership: FruitMembership, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per photo under a temperature: whether its answer names the right fruit, its confidence and its bin."""
    answer, confidence = fruit_answers(with_temperature(probabilities, temperature), membership)
    right = np.array([membership.fruits[a] == fruit for a, fruit in zip(answer, truth, strict=True)], dtype=bool)
    return right, confidence, confidence_bin(confidence)


def wilson_lower(right: np.ndarray, photos: np.ndarray, z: float = CONFIDENCE_Z) -> np.ndarray:
    """The Wilson score lower bound of the share right among `photos` (0 where there is no photo)."""
    n = np.maximum(photos, 1)
    share = right / n
    centre = share + z * z / (2 * n)
    spread = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return np.where(photos > 0, (centre - spread) / (1 + z * z / n), 0.0)


def lowest_threshold(right_per_bin: np.ndarray, photos_per_bin: np.ndarray, precision: float) -> float | None:
    """The lowest bin's confidence at which the photos at or above it are right at least `precision` of the time
    with 95% confidence (the Wilson lower bound), or None when none is."""
    above_right, above = np.cumsum(right_per_bin[::-1])[::-1], np.cumsum(photos_per_bin[::-1])[::-1]
    bound = wilson_lower(above_right, above)
    good = [b for b in range(BINS) if photos_per_bin[b] and bound[b] >= precision]
    return good[0] / BINS if good else None


def _probabilities(scored: DataFrame) -> DataFrame:
    """`probs` (array<double>) and `truth` (the true fruit) of scored rows holding `probability` and `fruit`."""
    return scored.select(vector_to_array("probability").alias("probs"), F.col("fruit").alias("truth"))


def _stacked(probs: pd.Series) -> np.ndarray:
    return np.stack(probs.to_numpy())


def fit_temperature(scored: DataFrame, membership: FruitMembership) -> float:
    """The temperature of TEMPERATURES under which the true fruits are likeliest (rows: `probability`, `fruit`)."""

    @pandas_udf(ArrayType(DoubleType()))
    def losses(probs: pd.Series, truth: pd.Series) -> pd.Series:
        return pd.Series(list(row_losses(_stacked(probs), list(truth), membership)))

    per_photo = _probabilities(scored).select(array_to_vector(losses("probs", "truth")).alias("loss"))
    mean = per_photo.select(Summarizer.mean(F.col("loss")).alias("mean")).first()["mean"]
    return float(TEMPERATURES[int(np.argmin(mean.toArray()))])


def _answered(scored: DataFrame, membership: FruitMembership, temperature: float) -> DataFrame:
    """`right` (0/1), `bin` and `confidence` of each scored photo's answer under the temperature."""

    @pandas_udf("right int, bin int, confidence double")
    def answered(probs: pd.Series, truth: pd.Series) -> pd.DataFrame:
        right, confidence, bins = answers_in_bins(_stacked(probs), list(truth), membership, temperature)
        return pd.DataFrame({"right": right.astype(int), "bin": bins, "confidence": confidence})

    return _probabilities(scored).select(answered("probs", "truth").alias("a")).select("a.*")


def choose_threshold(
    scored: DataFrame, membership: FruitMembership, temperature: float, precision: float = PRECISION
) -> float | None:
    """The lowest confidence bin at which the answers at or above it are right at least `precision` of the time."""
    counts = (
        _answered(scored, membership, temperature)
        .groupBy("bin")
        .agg(F.sum("right").alias("right"), F.count("*").alias("photos"))
        .collect()  # at most BINS rows of counts
    )
    right, photos = np.zeros(BINS), np.zeros(BINS)
    for row in counts:
        right[row["bin"]], photos[row["bin"]] = row["right"], row["photos"]
    return lowest_threshold(right, photos, precision)


def calibrate(
    scored: DataFrame, labels: list[str], fruit_of: Callable[[str], str], precision: float = PRECISION
) -> Calibration:
    """Temperature and threshold fitted on scored field photos (`probability`, `fruit`); without a photo, never sure."""
    photos = scored.count()
    if not photos:
        return Calibration(1.0, None, precision, 0)
    membership = FruitMembership(labels, fruit_of)
    temperature = fit_temperature(scored, membership)
    threshold = choose_threshold(scored, membership, temperature, precision)
    return Calibration(temperature, threshold, precision, photos)


def at_threshold(
    scored: DataFrame, membership: FruitMembership, calibration: Calibration
) -> dict[str, float | int | None]:
    """Coverage (share of photos answered as sure) and precision (share of those right) of a calibration on scored
    photos it was not fitted on."""
    # by bin, as the threshold was chosen; None: never sure
    sure = F.col("bin") >= (BINS + 1 if calibration.threshold is None else round(calibration.threshold * BINS))
    totals = (
        _answered(scored, membership, calibration.temperature)
        .agg(F.count("*"), F.count_if(sure), F.count_if(sure & (F.col("right") == 1)))
        .first()
    )
    photos, answered, right = totals[0], totals[1], totals[2]
    return {
        "photos": photos,
        "coverage": round(answered / photos, 4) if photos else 0.0,
        "precision": round(right / answered, 4) if answered else None,
    }


def calibrated_answer(
    probabilities: np.ndarray, membership: FruitMembership, calibration: Calibration
) -> tuple[str, float, bool]:
    """One photo's answer as the app tells it: its fruit, the calibrated confidence in it, and whether that is sure."""
    answer, confidence = fruit_answers(with_temperature(probabilities[None], calibration.temperature), membership)
    return membership.fruits[answer[0]], float(confidence[0]), bool(is_sure(confidence, calibration.threshold)[0])
