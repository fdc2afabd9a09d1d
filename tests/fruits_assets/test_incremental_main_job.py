"""`fruits run` does only what is missing or stale, judged from the output root and the photos' listing."""

import shutil
from pathlib import Path

import pytest

from fruits_assets.defs.partitions import fruit_class_partitions
from fruits_assets.main_job import bridged_ranges, contiguous_ranges, persistent_instance, run_main_job
from spark_code.models.ml_models import VERSION, published_notes
from spark_code.storage.class_tables import published_stamps, read_arrow
from tests.conftest import REAL_CLASSES, copy_sample

FLOOR = 0.8
"""Three easy real classes, two test photos each: the classifier names at least 5 of the 6 (success includes the
accuracy check at this floor)."""


def _run(images, output_root, **options):
    full = options.pop("full", False)
    settings = {"images_root": str(images), "min_accuracy": FLOOR, **options}
    summary = run_main_job(settings, None, str(output_root), full)
    assert summary.success, summary.error
    assert summary.accuracy >= settings["min_accuracy"]
    return summary


def _ran(summary) -> list[str]:
    return [step.split(" (")[0] for step in summary.steps]


def _pca_version(output_root) -> str:
    return published_notes(f"{output_root}/pca_model")[VERSION]


def test_contiguous_ranges_follow_the_instance_order():
    ordered = ["Kiwi", "Banana", "Apple", "Mango", "Fig"]
    assert contiguous_ranges(ordered, ["Banana", "Apple", "Fig"]) == [("Banana", "Apple"), ("Fig", "Fig")]
    assert contiguous_ranges(ordered, []) == []
    assert contiguous_ranges(ordered, ordered) == [("Kiwi", "Fig")]


def test_ranges_are_bridged_where_redoing_the_classes_between_costs_less_than_a_run():
    ordered = ["A", "B", "C", "D", "E", "F"]
    photos = {"A": 10, "B": 300, "C": 10, "D": 5000, "E": 10, "F": 10}
    every = set(ordered)
    assert bridged_ranges(ordered, ["A", "C", "E"], photos, every, bridge=300) == [("A", "C"), ("E", "E")]
    assert bridged_ranges(ordered, ["A", "C", "E"], photos, every, bridge=5000) == [("A", "E")]
    assert bridged_ranges(ordered, ["A", "C", "E"], photos, every, bridge=299) == [("A", "A"), ("C", "C"), ("E", "E")]
    # a class this run did not list (fruits run --classes) is never redone
    assert bridged_ranges(ordered, ["A", "C"], photos, every - {"B"}, bridge=5000) == [("A", "A"), ("C", "C")]
    assert bridged_ranges(ordered, [], photos, every) == []


@pytest.fixture(scope="module")
def first_run(shared_root, tmp_path_factory):
    """3 classes of 6 training and 2 test photos, its first run's summary and output root, and a pristine copy of
    its photos (names, sizes and times kept)."""
    folder = tmp_path_factory.mktemp("incremental")
    images = copy_sample(shared_root, folder / "images", REAL_CLASSES, {"Training": 6, "Test": 2})
    pristine = shutil.copytree(images, folder / "pristine", copy_function=shutil.copy2)
    summary = _run(images, folder / "out")
    return images, pristine, summary, folder / "out"


@pytest.fixture
def images(first_run):
    """The first run's photos as it read them (a test before may have changed them): the first run's outputs are up
    to date with them."""
    images, pristine, _, _ = first_run
    shutil.rmtree(images)
    return Path(shutil.copytree(pristine, images, copy_function=shutil.copy2))


@pytest.fixture
def first(first_run, images, tmp_path):
    """The first run's summary, and a copy of its output root for this test."""
    _, _, summary, output_root = first_run
    return summary, Path(shutil.copytree(output_root, tmp_path / "out"))


def test_a_rerun_does_only_what_changed(images, first_run, shared_root, spark):
    """On the module's first run's own output root (the tests after this one copy it; it ends up to date with the
    photos again): the summary of a run with nothing to do comes from the runs the instance recorded for it."""
    _, _, first, out = first_run
    assert _ran(first) == ["every asset: 3 class(es)"] and first.images_embedded == 24
    pca = _pca_version(out)

    again = _run(images, out)
    assert again.steps == [] and again.images_embedded == 0
    assert again.images_featurized == 24 and again.accuracy == first.accuracy and again.pca_k == first.pca_k

    # One new training photo in the first and the last class of the instance's order (which the tests before this one
    # decide): below a refit share of 20%, the PCA is kept; only they are embedded and projected, in one run each
    # stage: the class between them, with few photos, is redone (from the store: no model call) and comes out as it
    # was. (Not photos a later test adds: the store would have them.)
    ordered = persistent_instance().get_dynamic_partitions(fruit_class_partitions.name)
    assert sorted(ordered) == REAL_CLASSES
    between = _rows(f"{out}/image_embeddings", "features", ordered[1])
    extras = [sorted((shared_root / "Training" / name).iterdir())[7] for name in (ordered[0], ordered[2])]
    for extra in extras:
        shutil.copy(extra, images / "Training" / extra.parent.name / extra.name)
    grown = _run(images, out, pca_refit_share=0.2)
    assert _ran(grown) == [
        "raw_images, image_embeddings: 3 class(es), 1 redone",
        "pca_model",
        "reduced_features: 3 class(es), 1 redone",
        "fruit_classifier, classifier_evaluation",
    ]
    assert grown.images_embedded == 2 and grown.images_featurized == 26
    assert _rows(f"{out}/image_embeddings", "features", ordered[1]) == between
    assert _pca_version(out) == pca and "kept PCA version" in grown.skipped["pca_model"]
    reduced = published_stamps(f"{out}/reduced_features")
    assert all(stamp["stamp"].endswith(pca) for stamp in reduced.values())

    # A refit share of 0 refits on any change; a deleted output is recomputed, whatever the instance remembers.
    for extra in extras:
        (images / "Training" / extra.parent.name / extra.name).unlink()
    shutil.rmtree(out / "classifier_evaluation")
    refit = _run(images, out, pca_refit_share=0.0)
    assert _pca_version(out) != pca and refit.images_embedded == 0 and refit.images_featurized == 24
    assert _ran(refit)[-2:] == ["reduced_features: 3 class(es)", "fruit_classifier, classifier_evaluation"]
    assert _run(images, out, pca_refit_share=0.0).steps == []


def _rows(folder: str, column: str, label: str | None = None) -> dict[str, list[float]]:
    table = read_arrow(folder).to_pylist()
    assert len({row["path"] for row in table}) == len(table)
    return {row["path"]: row[column] for row in table if label in (None, row["label"])}


def test_another_output_root_or_images_root_is_never_taken_as_up_to_date(images, first, tmp_path, spark):
    summary, out = first
    elsewhere = _run(images, tmp_path / "elsewhere")
    assert _ran(elsewhere) == ["every asset: 3 class(es)"]
    assert elsewhere.images_embedded == 24  # each output root has its own embedding store
    # Two runs from scratch on the same photos give identical embeddings, PCA and reduced features, bit for bit.
    assert elsewhere.pca_k == summary.pca_k
    for asset, column in (("image_embeddings", "features"), ("reduced_features", "pca_features")):
        before, after = _rows(f"{out}/{asset}", column), _rows(elsewhere.outputs[asset], column)
        assert len(before) == 24 and before == after, f"{asset} differ between runs"

    # Another images root, a copy that keeps names, sizes and times (`cp -p`): every class is stale and runs again,
    # every asset in one run; the embedding store spares the model, since the bytes are the same. The PCA, fitted on
    # as many photos of the same classes, is kept: the steps after it, skipped in that run, project with it next.
    pca = _pca_version(out)
    others = shutil.copytree(images, tmp_path / "others", copy_function=shutil.copy2)
    moved = _run(others, out)
    assert _ran(moved) == [
        "every asset: 3 class(es)",
        "reduced_features: 3 class(es)",
        "fruit_classifier, classifier_evaluation",
    ]
    assert moved.images_embedded == 0 and moved.accuracy is not None
    assert _pca_version(out) == pca and "kept PCA version" in moved.skipped["pca_model"]
    assert _run(others, out).steps == []

    # --full reads every photo again and refits the PCA, in one run, even where nothing changed.
    full = _run(images, out, full=True)
    assert _ran(full) == ["every asset: 3 class(es)"] and full.images_embedded == 0
    assert _pca_version(out) != pca and "pca_model" not in full.skipped
    assert _run(images, out).steps == []


def test_a_class_without_training_photos_does_not_make_every_rerun_refit(shared_root, tmp_path, spark):
    images = copy_sample(shared_root, tmp_path / "images", REAL_CLASSES[:2], {"Training": 4, "Test": 1})
    copy_sample(shared_root, images, ["Kiwi"], {"Test": 2})  # Kiwi: evaluation photos only
    out = tmp_path / "out"
    _run(images, out, min_accuracy=0.5)  # the two Kiwi photos cannot be named; the two others are
    assert published_notes(f"{out}/pca_model")["classes"] == sorted([*REAL_CLASSES[:2], "Kiwi"])
    assert _run(images, out, min_accuracy=0.5).steps == []


def test_a_run_over_some_classes_trains_on_every_published_class(images, first, shared_root, spark):
    """`fruits run --classes Kiwi` refreshes Kiwi and never shrinks what the app knows; a deleted class folder is
    unpublished everywhere and leaves the models."""
    from dagster import DagsterInstance

    from fruits_assets.defs.partitions import fruit_class_partitions

    first, out = first
    extra = sorted((shared_root / "Training" / "Kiwi").iterdir())[6]
    shutil.copy(extra, images / "Training" / "Kiwi" / extra.name)
    some = run_main_job({"images_root": str(images), "min_accuracy": FLOOR}, ["Kiwi"], str(out))
    assert some.success, some.error
    assert _ran(some)[0] == "raw_images, image_embeddings: 1 class(es)" and some.images_embedded == 1
    assert some.classes == 3 and some.images_featurized == first.images_featurized + 1
    assert published_notes(f"{out}/fruit_classifier")["labels"] == sorted(REAL_CLASSES)
    assert set(DagsterInstance.get().get_dynamic_partitions(fruit_class_partitions.name)) >= set(REAL_CLASSES)

    shutil.rmtree(images / "Training" / "Banana")
    shutil.rmtree(images / "Test" / "Banana")
    gone = run_main_job({"images_root": str(images), "min_accuracy": FLOOR}, ["Kiwi"], str(out))
    assert gone.success, gone.error
    assert gone.classes_withdrawn == ["Banana"] and gone.classes == 2
    for asset in ("raw_images", "image_embeddings", "rejected_images", "reduced_features"):
        assert "Banana" not in published_stamps(f"{out}/{asset}")
        assert "Banana" not in set(read_arrow(f"{out}/{asset}").column("label").to_pylist())
    assert published_notes(f"{out}/fruit_classifier")["labels"] == sorted(set(REAL_CLASSES) - {"Banana"})
    assert "Banana" not in DagsterInstance.get().get_dynamic_partitions(fruit_class_partitions.name)
