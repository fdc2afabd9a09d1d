"""Calibration on generated probabilities whose right answers are known, in NumPy and in Spark (the same rules)."""

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors

from spark_code.models.calibration import (
    BINS,
    TEMPERATURES,
    Calibration,
    FruitMembership,
    answers_in_bins,
    at_threshold,
    calibrate,
    choose_threshold,
    fit_temperature,
    fruit_answers,
    is_sure,
    lowest_threshold,
    row_losses,
    wilson_lower,
    with_temperature,
)

LABELS = ["Apple Braeburn", "Apple Granny Smith", "Banana", "Kiwi"]


def fruit(label: str) -> str:
    return label.split()[0]


MEMBERSHIP = FruitMembership(LABELS, fruit)


def _softmax(margins: np.ndarray) -> np.ndarray:
    exp = np.exp(margins - margins.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _drawn(photos: int, temperature: float, seed: int = 7) -> tuple[np.ndarray, list[str]]:
    """A model's probabilities softmax(margins), and true fruits drawn from softmax(margins / temperature): the
    model is overconfident by that temperature."""
    rng = np.random.default_rng(seed)
    margins = rng.normal(0, 6, (photos, len(LABELS)))
    truth = [fruit(LABELS[rng.choice(len(LABELS), p=p)]) for p in _softmax(margins / temperature)]
    return _softmax(margins), truth


def test_the_likeliest_temperature_is_the_one_the_truth_was_drawn_with():
    probabilities, truth = _drawn(6000, 3.0)
    # by fruit: the apples' summed probability at the true temperature is still the one the fruits were drawn with
    fitted = TEMPERATURES[int(np.argmin(row_losses(probabilities, truth, MEMBERSHIP).sum(axis=0)))]
    assert fitted == pytest.approx(3.0, rel=0.15)


def test_temperature_keeps_the_ranking_and_flattens_the_probabilities():
    probabilities = _softmax(np.array([[4.0, 1.0, 0.0, -1.0], [0.0, 0.5, 3.0, 0.0]]))
    flat = with_temperature(probabilities, 4.0)
    assert (flat.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert (flat.max(axis=1) < probabilities.max(axis=1)).all()
    np.testing.assert_allclose(flat.sum(axis=1), 1.0)
    np.testing.assert_allclose(with_temperature(probabilities, 1.0), probabilities, rtol=1e-9)


def test_an_answers_confidence_is_its_fruits_and_any_variety_is_right():
    probabilities = np.array([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6]])
    answer, confidence = fruit_answers(probabilities, MEMBERSHIP)
    assert [MEMBERSHIP.fruits[a] for a in answer] == ["Apple", "Kiwi"]
    np.testing.assert_allclose(confidence, [0.8, 0.6])
    right, _, bins = answers_in_bins(probabilities, ["Apple", "Banana"], MEMBERSHIP, 1.0)
    assert right.tolist() == [True, False] and bins.tolist() == [800, 600]
    assert MEMBERSHIP.index("Durian") == -1  # a fruit no class names
    assert is_sure(np.array([0.8, 0.7999, 0.9]), 0.8).tolist() == [True, False, True]
    assert not is_sure(np.array([1.0]), None).any()


def test_the_threshold_keeps_the_most_answers_at_the_precision_with_confidence():
    right, photos = np.zeros(BINS), np.zeros(BINS)
    # bin 990: 300 right of 300; 950: 300 of 310; 900: 150 of 200; 800: 100 of 100; 700: 0 of 100
    for b, r, n in [(990, 300, 300), (950, 300, 310), (900, 150, 200), (800, 100, 100), (700, 0, 100)]:
        right[b], photos[b] = r, n
    # At or above 0.95: 600 of 610 (98.4%); 0.9: 750 of 810 (92.6%); 0.8: 850 of 910 (93.4%); 0.7: 850 of 1010.
    assert lowest_threshold(right, photos, 0.95) == pytest.approx(0.95)
    assert lowest_threshold(right, photos, 0.9) == pytest.approx(0.8)
    assert lowest_threshold(right, photos, 0.995) is None  # 300 of 300 is not enough evidence of 99.5%
    # A few lucky photos are no evidence: 2 right of 2 never makes it sure, 100 of 100 does at 95%.
    few, many = np.zeros(BINS), np.zeros(BINS)
    few[900], many[900] = 2, 100
    assert lowest_threshold(few, few, 0.95) is None and lowest_threshold(many, many, 0.95) == pytest.approx(0.9)


def test_the_wilson_bound_is_below_the_share_and_nears_it_with_more_photos():
    bounds = wilson_lower(np.array([9.0, 90.0, 900.0]), np.array([10.0, 100.0, 1000.0]))
    assert (bounds < 0.9).all() and bounds[0] < bounds[1] < bounds[2]
    assert bounds[2] == pytest.approx(0.9, abs=0.02) and wilson_lower(np.array([0.0]), np.array([0.0]))[0] == 0.0


def _frame(spark, probabilities: np.ndarray, truth: list[str]):
    rows = [(Vectors.dense(p.tolist()), t) for p, t in zip(probabilities, truth, strict=True)]
    return spark.createDataFrame(rows, ["probability", "fruit"]).repartition(3)


def test_spark_fits_what_the_arrays_give(spark):
    """The Spark rules (aggregates only) choose the temperature and threshold the NumPy rules choose on the same
    photos; the coverage and precision they report are those of the arrays."""
    probabilities, truth = _drawn(1500, 2.0, seed=3)
    scored = _frame(spark, probabilities, truth)
    expected_t = TEMPERATURES[int(np.argmin(row_losses(probabilities, truth, MEMBERSHIP).sum(axis=0)))]
    assert fit_temperature(scored, MEMBERSHIP) == pytest.approx(expected_t)
    right, confidence, bins = answers_in_bins(probabilities, truth, MEMBERSHIP, expected_t)
    by_bin = np.bincount(bins, weights=right.astype(float), minlength=BINS)
    expected_threshold = lowest_threshold(by_bin, np.bincount(bins, minlength=BINS).astype(float), 0.9)
    assert expected_threshold is not None
    assert choose_threshold(scored, MEMBERSHIP, expected_t, 0.9) == pytest.approx(expected_threshold)
    calibration = calibrate(scored, LABELS, fruit, 0.9)
    assert calibration == Calibration(expected_t, expected_threshold, 0.9, 1500)

    held_out, held_truth = _drawn(800, 2.0, seed=4)
    right, confidence, _ = answers_in_bins(held_out, held_truth, MEMBERSHIP, expected_t)
    sure = is_sure(confidence, expected_threshold)
    assert at_threshold(_frame(spark, held_out, held_truth), MEMBERSHIP, calibration) == {
        "photos": 800,
        "coverage": round(sure.mean(), 4),
        "precision": round(right[sure].mean(), 4),
    }
    never = Calibration(expected_t, None, 0.9, 1500)
    assert at_threshold(_frame(spark, held_out, held_truth), MEMBERSHIP, never)["coverage"] == 0.0
