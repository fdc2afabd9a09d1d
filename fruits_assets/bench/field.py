"""`fruits bench field`: how the published classifier does on photos of the app's world, beside its Test split.

The photos are a field root laid out like any images root (`<root>/<split>/<class>/<photo>` or `<root>/<class>/...`,
local or s3://), never trained on. Every answer is scored by class and by fruit (any variety of the right fruit is
what the app tells its user). Then the confidence, by the pipeline's rules (spark_code.models.calibration): a
temperature for the classifier's probabilities is fitted on one split of the field root (the calibration split), the
lowest confidence that keeps the answers' precision at the target is chosen there, and both are reported on the
other splits, which neither choice saw.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from fruits_assets.app.predictor import FruitPredictor, read_bytes
from spark_code.models.calibration import (
    BINS,
    TEMPERATURES,
    FruitMembership,
    answers_in_bins,
    is_sure,
    lowest_threshold,
    row_losses,
)
from spark_code.models.classifier import Evaluation
from spark_code.models.fruit_facts import fruit_of
from spark_code.photos.images import ImageDecodeError
from spark_code.photos.layout import discover_layout, join_uri
from spark_code.photos.listing import folder_entries
from spark_code.storage.class_tables import read_arrow


@dataclass(frozen=True)
class ScoredPhotos:
    """The classifier's answers on the photos of one split: their true labels and class probabilities."""

    labels: list[str]
    probabilities: np.ndarray
    """(photos, classes), in the model's label order."""
    rejected: int


def field_photos(field_root: str, class_depth: int = 0) -> dict[str, list[tuple[str, str]]]:
    """split -> (photo URI, class label) of every visible file under the field root (split NO_SPLIT, '', for a root
    without split folders), its class folders as deep as `class_depth` says (see spark_code.photos.layout)."""
    layout = discover_layout(field_root, class_depth=class_depth)
    photos: dict[str, list[tuple[str, str]]] = {}
    for split, classes in sorted(layout.classes_by_split.items()):
        for label in classes:
            folder = join_uri(field_root, *[part for part in (split, layout.folder(split, label)) if part])
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


def fit_temperature(scored: ScoredPhotos, membership: FruitMembership) -> float:
    """The temperature under which the photos' true fruits are likeliest (the field photos' fruit is exact, their
    variety only approximate): the pipeline's rule, on arrays."""
    truth = [fruit_of(label) for label in scored.labels]
    return float(TEMPERATURES[int(np.argmin(row_losses(scored.probabilities, truth, membership).sum(axis=0)))])


def answers(
    scored: ScoredPhotos, membership: FruitMembership, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per photo: whether its answer names the right fruit, its confidence and its confidence bin."""
    return answers_in_bins(scored.probabilities, [fruit_of(label) for label in scored.labels], membership, temperature)


def threshold_for(right: np.ndarray, bins: np.ndarray, precision: float) -> float | None:
    """The pipeline's threshold rule (the lowest confidence bin keeping the precision), on arrays."""
    per_bin = np.bincount(bins, weights=right.astype(float), minlength=BINS)
    return lowest_threshold(per_bin, np.bincount(bins, minlength=BINS).astype(float), precision)


def at_threshold(right: np.ndarray, confidence: np.ndarray, threshold: float | None) -> dict[str, float | int]:
    """Coverage (share of photos answered confidently) and precision (share of those right) at a threshold."""
    confident = is_sure(confidence, threshold)
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


def bench_field(
    output_root: str, field_root: str, calibration_split: str | None, precision: float, class_depth: int = 0
) -> dict:
    """Score the output root's classifier on every photo of the field root; calibrate on `calibration_split`."""
    started = time.perf_counter()
    predictor = FruitPredictor(output_root)
    photos = field_photos(field_root, class_depth)
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
        membership = FruitMembership(labels, fruit_of)
        temperature = fit_temperature(scored[calibration_split], membership)
        right, _, bins = answers(scored[calibration_split], membership, temperature)
        threshold = threshold_for(right, bins, precision)
        reports = {}
        for split, s in scored.items():
            right, confidence, _ = answers(s, membership, temperature)
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
