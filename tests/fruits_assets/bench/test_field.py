"""`fruits bench field`: the calibration on generated probabilities whose right answer is known, and the bench on
the session's trained run with real field photos."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from fruits_assets.bench.field import at_threshold, bench_field, field_photos, threshold_for
from fruits_assets.cli import main
from tests.conftest import SHARED

FIELD = SHARED / "data" / "field-photos"


def test_the_benchs_threshold_and_coverage_on_arrays():
    right = np.array([True, True, True, False, True, False, False])
    confidence = np.array([0.99, 0.95, 0.9, 0.9, 0.8, 0.7, 0.6])
    bins = (confidence * 1000).astype(int)
    # 200 photos of each: at or above 0.8, 800 of 1000 right; at or above 0.95, all 400.
    many_right, many_bins = np.repeat(right, 200), np.repeat(bins, 200)
    assert threshold_for(many_right, many_bins, 0.75) == pytest.approx(0.8)
    assert threshold_for(many_right, many_bins, 0.95) == pytest.approx(0.95)
    assert threshold_for(right, bins, 0.5) is None  # 7 photos are no evidence
    assert threshold_for(np.zeros(1400, bool), many_bins, 0.5) is None
    assert at_threshold(right, confidence, 0.8) == {"photos": 7, "confident": 5, "coverage": 0.7143, "precision": 0.8}
    assert at_threshold(right, confidence, None)["confident"] == 0


def _field_root(target: Path, per_class: int) -> Path:
    """A field root of real grocery-store photos of the trained run's fruits: two splits, and one file that is no
    photo."""
    for split in ("train", "val"):
        for label in ("Banana", "Kiwi", "Apple Red 1"):
            folder = target / split / label
            folder.mkdir(parents=True)
            for photo in sorted((FIELD / split / label).iterdir())[:per_class]:
                shutil.copy(photo, folder / photo.name)
    (target / "val" / "Kiwi" / "notes.jpg").write_text("not a photo")
    return target


def test_the_bench_scores_every_field_photo_by_class_and_by_fruit(trained_run, tmp_path, capsys):
    summary, output_root = trained_run
    root = _field_root(tmp_path / "field", per_class=4)
    assert {split: len(photos) for split, photos in field_photos(str(root)).items()} == {"train": 12, "val": 13}
    result = bench_field(str(output_root), str(root), "train", 0.95)
    assert result["classes"] == summary["classes"] == 3
    assert result["evaluation_split"]["class_accuracy"] == pytest.approx(summary["accuracy"], abs=1e-5)
    every, val = result["field"]["every photo"], result["field"]["val"]
    assert every["photos"] == 24 and every["rejected"] == 1 and val["photos"] == 12
    # No model class is an 'Apple Red 1', so by class every apple is wrong; by fruit an 'Apple Braeburn' answer is
    # right: fruit accuracy is never below class accuracy, and the per-fruit counts add up.
    assert every["fruit_accuracy"] >= every["class_accuracy"]
    assert sum(int(cell.split("/")[1]) for cell in every["per_fruit"].values()) == 24
    assert set(every["per_fruit"]) == {"Apple", "Banana", "Kiwi"}
    confidence = result["confidence"]
    assert confidence["calibrated_on"] == "train" and confidence["temperature"] > 0
    assert set(confidence["at_threshold"]) == {"train", "val"}
    train = confidence["at_threshold"]["train"]
    assert train["precision"] is None or train["precision"] >= 0.95

    code = main(["bench", "field", str(root), "--output-root", str(output_root), "--calibration-split", "x"])
    assert code == 2 and "no split 'x'" in capsys.readouterr().err


def test_the_benchs_photos_of_a_nested_field_root_are_labelled_by_the_class_depth(tmp_path):
    for key in ("val/Fruit/Apple/Granny-Smith/1.jpg", "val/Fruit/Apple/Golden/2.jpg", "val/Fruit/Kiwi/3.jpg"):
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"jpeg")
    leaves, fruits = field_photos(str(tmp_path)), field_photos(str(tmp_path), class_depth=2)
    assert sorted((uri.rsplit("/", 1)[-1], label) for uri, label in leaves["val"]) == [
        ("1.jpg", "Granny-Smith"),
        ("2.jpg", "Golden"),
        ("3.jpg", "Kiwi"),
    ]
    assert sorted((uri[len(str(tmp_path)) :], label) for uri, label in fruits["val"]) == [
        ("/val/Fruit/Apple/Golden/2.jpg", "Apple"),
        ("/val/Fruit/Apple/Granny-Smith/1.jpg", "Apple"),
        ("/val/Fruit/Kiwi/3.jpg", "Kiwi"),
    ]
