"""`fruits bench field`: how the published classifier does on photos of the app's world, beside its Test split.

The photos are a field root laid out like any images root (`<root>/<split>/<class>/<photo>` or `<root>/<class>/...`,
local or s3://), never trained on. Every answer is scored by class and by fruit (any variety of the right fruit is
what the app tells its user). Then the confidence: a temperature for the classifier's probabilities is fitted on one
split of the field root (the calibration split), the lowest confidence that keeps the answers' precision at the
target is chosen there, and both are reported on the other splits, which neither choice saw.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from fruits_assets.app.predictor import FruitPredictor, read_bytes
from spark_code.models.classifier import Evaluation
from spark_code.models.fruit_facts import fruit_of
from spark_code.photos.images import ImageDecodeError
from spark_code.photos.layout import discover_layout, join_uri
from spark_code.photos.listing import folder_entries
from spark_code.storage.parquet_store import read_arrow

TEMPERATURES = np.geomspace(0.01, 1000.0, 401)
"""Temperatures tried when calibrating (a grid: one parameter, and the likelihood is smooth in its logarithm)."""


@dataclass(frozen=True)
class ScoredPhotos:
    """The classifier's answers on the photos of one split: their true labels and class probabilities."""

    labels: list[str]
    probabilities: np.ndarray
    """(photos, classes), in the model's label order."""
    rejected: int


def field_photos(field_root: str) -> dict[str, list[tuple[str, str]]]:
    """split -> (photo URI, class label) of every visible file under the field root (split NO_SPLIT, '', for a root
    without split folders)."""
    layout = discover_layout(field_root)
    photos: dict[str, list[tuple[str, str]]] = {}
    for split, classes in sorted(layout.classes_by_split.items()):
        for label in classes:
            folder = join_uri(field_root, *[part for part in (split, label) if part])
            photos.setdefault(split, []).extend(
                (join_uri(folder, relative), label) for relative, _, _ in sorted(folder_entries(folder))
            )
    return photos


def score_photos(predictor: FruitPredictor, photos: list[tuple[str, str]], batch: int = 64) -> ScoredPhotos:
    """Class probabilities of each photo that decodes, in batches of one model call."""
    labels: list[str] = []
    rows: list[np.ndarray] = []
    rejected = 0
    for start in range(0, len(photos), batch):
        arrays = []
        for uri, label in photos[start : start + batch]:
            try:
                arrays.append(predictor.prepare(read_bytes(uri)))
            except ImageDecodeError:
                rejected += 1
                continue
            labels.append(label)
        if arrays:
            rows.extend(predictor.probabilities_of(arrays))
    shape = (len(rows), len(predictor.labels))
    return ScoredPhotos(labels, np.array(rows).reshape(shape), rejected)


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(margins / T), from the softmax of the margins (their logarithms differ from the margins by a constant
    per photo, which the softmax ignores)."""
    scaled = np.log(np.clip(probabilities, 1e-300, None)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def _fruits(model_labels: list[str], true_labels: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes, fruits) 0/1 membership, each class's fruit index, each photo's true fruit index (-1: a fruit the
    model does not know)."""
    fruits = [fruit_of(label) for label in model_labels]
    names = sorted(set(fruits))
    member = np.array([[fruit == name for name in names] for fruit in fruits], dtype=np.float64)
    class_fruit = np.array([names.index(fruit) for fruit in fruits])
    truth = np.array([names.index(f) if (f := fruit_of(label)) in names else -1 for label in true_labels], dtype=int)
    return member, class_fruit, truth


def fruit_answers(
    probabilities: np.ndarray, model_labels: list[str], true_labels: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per photo: whether the answer (the top class) names the right fruit, its confidence (the probability of
    every class of the answer's fruit together), and the probability given to the true fruit."""
    member, class_fruit, truth = _fruits(model_labels, true_labels)
    by_fruit = probabilities @ member
    rows = np.arange(len(probabilities))
    answer = class_fruit[probabilities.argmax(axis=1)] if len(rows) else np.zeros(0, int)
    true_probability = np.where(truth >= 0, by_fruit[rows, np.maximum(truth, 0)], 0.0)
    return answer == truth, by_fruit[rows, answer], true_probability


def fit_temperature(probabilities: np.ndarray, model_labels: list[str], true_labels: list[str]) -> float:
    """The temperature that minimises the negative log-likelihood of the true fruits (the field photos' fruit is
    exact, their variety only approximate)."""
    member, _, truth = _fruits(model_labels, true_labels)
    known = truth >= 0

    def loss(temperature: float) -> float:
        by_fruit = with_temperature(probabilities[known], temperature) @ member
        return float(-np.log(np.clip(by_fruit[np.arange(len(by_fruit)), truth[known]], 1e-12, None)).mean())

    return float(min(TEMPERATURES, key=loss))


def threshold_for(right: np.ndarray, confidence: np.ndarray, precision: float) -> float | None:
    """The lowest confidence at which the answers at or above it are right at least `precision` of the time (the
    most answers kept), or None when no confidence reaches it."""
    order = np.argsort(-confidence, kind="stable")
    hits = np.cumsum(right[order])
    precisions = hits / np.arange(1, len(order) + 1)
    # A threshold must keep every photo of equal confidence together: look only at the last of each run of ties.
    ends = np.r_[confidence[order][1:] != confidence[order][:-1], True] if len(order) else np.array([], bool)
    good = np.flatnonzero((precisions >= precision) & ends)
    return float(confidence[order][good[-1]]) if len(good) else None


def at_threshold(right: np.ndarray, confidence: np.ndarray, threshold: float | None) -> dict[str, float | int]:
    """Coverage (share of photos answered confidently) and precision (share of those right) at a threshold."""
    confident = confidence >= threshold if threshold is not None else np.zeros(len(right), bool)
    answered = int(confident.sum())
    return {
        "photos": len(right),
        "confident": answered,
        "coverage": round(answered / len(right), 4) if len(right) else 0.0,
        "precision": round(float(right[confident].mean()), 4) if answered else None,
    }


def split_report(scored: ScoredPhotos, model_labels: list[str]) -> dict:
    """Accuracy by class and by fruit, per fruit, the most common answers and the confidence of the answers."""
    answers = [model_labels[i] for i in scored.probabilities.argmax(axis=1)] if len(scored.labels) else []
    evaluation = Evaluation.from_counts(Counter(zip(scored.labels, answers, strict=True)), model_labels)
    fruit = evaluation.by_fruit(fruit_of)
    top = scored.probabilities.max(axis=1) if len(scored.labels) else np.array([])
    return {
        "photos": evaluation.images,
        "rejected": scored.rejected,
        "class_accuracy": round(evaluation.accuracy, 4),
        "fruit_accuracy": round(fruit.accuracy, 4),
        "per_fruit": {name: f"{right}/{seen}" for name, (right, seen) in fruit.per_fruit.items()},
        "most_common_answers": Counter(answers).most_common(5),
        "median_top_probability": round(statistics.median(top), 4) if len(top) else None,
        "answers_above_half": round(float((top > 0.5).mean()), 4) if len(top) else None,
    }


def evaluation_split_accuracy(output_root: str) -> dict[str, float | int]:
    """The published evaluation's accuracy (the Test split, or the hold-out standing in for it), by class and
    fruit."""
    table = read_arrow(join_uri(output_root, "classifier_evaluation"))
    labels, predicted = table["label"].to_pylist(), table["predicted"].to_pylist()
    counts = Counter(zip(labels, predicted, strict=True))
    evaluation = Evaluation.from_counts(counts, sorted(set(labels)))
    return {
        "photos": evaluation.images,
        "class_accuracy": round(evaluation.accuracy, 5),
        "fruit_accuracy": round(evaluation.by_fruit(fruit_of).accuracy, 5),
    }


def bench_field(output_root: str, field_root: str, calibration_split: str | None, precision: float) -> dict:
    """Score the output root's classifier on every photo of the field root; calibrate on `calibration_split`."""
    started = time.perf_counter()
    predictor = FruitPredictor(output_root)
    photos = field_photos(field_root)
    if calibration_split is not None and calibration_split not in photos:
        raise ValueError(f"no split {calibration_split!r} under {field_root} (splits: {', '.join(photos)})")
    scored = {split: score_photos(predictor, listed) for split, listed in photos.items()}
    labels = predictor.labels
    every = ScoredPhotos(
        [label for s in scored.values() for label in s.labels],
        np.concatenate([s.probabilities for s in scored.values()]),
        sum(s.rejected for s in scored.values()),
    )
    result: dict = {
        "field_root": field_root,
        "classes": len(labels),
        "evaluation_split": evaluation_split_accuracy(output_root),
        "field": {"every photo": split_report(every, labels)}
        | {split or "(no split)": split_report(s, labels) for split, s in scored.items()},
    }
    if calibration_split is not None:
        calibration = scored[calibration_split]
        temperature = fit_temperature(calibration.probabilities, labels, calibration.labels)
        right, confidence, _ = fruit_answers(
            with_temperature(calibration.probabilities, temperature), labels, calibration.labels
        )
        threshold = threshold_for(right, confidence, precision)
        reports = {}
        for split, s in scored.items():
            right, confidence, _ = fruit_answers(with_temperature(s.probabilities, temperature), labels, s.labels)
            reports[split] = at_threshold(right, confidence, threshold)
        result["confidence"] = {
            "calibrated_on": calibration_split,
            "temperature": round(temperature, 4),
            "target_precision": precision,
            "threshold": None if threshold is None else round(threshold, 6),
            "at_threshold": reports,
        }
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result
