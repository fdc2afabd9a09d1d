"""Each stage stamps its output with what it read: a photo that arrives between two stages leaves every later stage
stale, never marked up to date while it misses the photo."""

import shutil
from pathlib import Path

import pytest

from fruits_assets.defs.resources import FruitsSettings
from fruits_assets.defs.staleness import Staleness, stale
from spark_code.storage.class_tables import input_stamps, published_stamps, read_classes
from tests.conftest import WEIGHTS, copy_sample
from tests.fruits_assets.conftest import materialize_for

CLASSES = ["Banana", "Kiwi"]
INGESTION = ["raw_images", "image_embeddings", "rejected_images"]


def _state(root: Path, out: Path) -> Staleness:
    settings = FruitsSettings(images_root=str(root), model_weights=str(WEIGHTS), model_alpha=0.35, pca_k=2)
    return Staleness(str(out), settings, settings.layout(), CLASSES)


def _add_photo(root: Path, name: str, count: list[int]) -> None:
    """Another photo of the class (a copy of one of its own, under a new name)."""
    folder = root / "Training" / name
    count[0] += 1
    shutil.copy(sorted(folder.iterdir())[0], folder / f"arrived-{count[0]}.jpg")


def _run(root: Path, out: Path, classes: list[str], selection: list[str], every_class: bool = False) -> None:
    assert materialize_for(root, out, classes, selection, every_class, pca_k=2).success


@pytest.mark.slow
def test_a_photo_added_between_two_stages_leaves_the_later_stage_stale(small_root, tmp_path):
    """Each stage over both classes in one run, as the main job runs them."""
    root = copy_sample(small_root, tmp_path / "images", CLASSES, {"Training": 4})
    out, added = tmp_path / "out", [0]
    _run(root, out, CLASSES, ["raw_images"], every_class=True)
    _add_photo(root, "Kiwi", added)  # after the index, before the embeddings
    _run(root, out, CLASSES, INGESTION[1:], every_class=True)
    state = _state(root, out)
    assert stale(state.stamps("image_embeddings"), state.embedded) == ["Kiwi"]

    _run(root, out, CLASSES, INGESTION, every_class=True)
    _run(root, out, CLASSES, ["pca_model"])
    _add_photo(root, "Kiwi", added)  # after the embeddings, before the projection
    _run(root, out, CLASSES, ["reduced_features"], every_class=True)
    state = _state(root, out)
    assert state.stale_reduced() == ["Kiwi"]

    _run(root, out, CLASSES, INGESTION, every_class=True)
    _run(root, out, CLASSES, ["pca_model"])
    _run(root, out, CLASSES, ["reduced_features"], every_class=True)
    assert _state(root, out).stale_reduced() == []
    _add_photo(root, "Banana", added)  # after the projection, before the classifier
    _run(root, out, CLASSES, ["fruit_classifier"])
    assert _state(root, out).classifier_stale()


def test_a_read_carries_the_stamps_published_with_its_rows(small_root, tmp_path, spark):
    root = copy_sample(small_root, tmp_path / "images", ["Kiwi"], {"Training": 2})
    out = tmp_path / "out"
    _run(root, out, ["Kiwi"], ["raw_images"])
    base = str(out / "raw_images")
    rows = read_classes(spark, base, ["Kiwi"])
    assert input_stamps(rows) == {"Kiwi": published_stamps(base)["Kiwi"]["stamp"]}
