"""The main job on dataset shapes other than the shared sample's, each made from a few of its photos: other layouts,
split names, class counts, class sizes and class names."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from fruits_assets.cli import main
from fruits_assets.cli.run import summary_lines
from spark_code.models.ml_models import NOTES_FILE
from spark_code.storage.class_tables import read_arrow
from spark_code.storage.publish import current

EVERY_CHECK = {
    "embeddings_are_1280_wide_without_nan": True,
    "every_indexed_file_is_embedded_or_rejected": True,
    "rejected_share_within_limit": True,
    "reduced_width_equals_k": True,
    "feedback_photos_look_like_their_class": True,
    "no_sender_floods_a_class": True,
    "accuracy_above_floor": True,
}


@pytest.fixture(scope="module")
def photos(shared_root):
    """The first photos of a class of the shared sample, from its Training then its Test split."""

    def pick(fruit: str, count: int, start: int = 0) -> list[Path]:
        files = sorted((shared_root / "Training" / fruit).iterdir()) + sorted((shared_root / "Test" / fruit).iterdir())
        assert len(files) >= start + count, fruit
        return files[start : start + count]

    return pick


def make_root(root: Path, folders: dict[str, list[Path]]) -> Path:
    for folder, files in folders.items():
        target = root / folder
        target.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copy(file, target / file.name)
    return root


def run(images_root: Path, output_root: Path, *options: str) -> tuple[int, dict]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["run", "--images-root", str(images_root), "--output-root", str(output_root), "--json", *options])
    return code, json.loads(stdout.getvalue())


def classifier_labels(output_root: Path) -> list[str]:
    published = current(str(output_root / "fruit_classifier"))
    assert published is not None, "no classifier published"
    return json.loads((Path(published) / NOTES_FILE).read_text())["labels"]


@pytest.mark.slow
def test_no_split_folders_and_user_written_class_names(photos, tmp_path):
    names = {"apple_braeburn_1": "Apple Braeburn", "Kiwi fruit é": "Kiwi", "007": "Banana"}
    root = make_root(tmp_path / "images", {name: photos(fruit, 6) for name, fruit in names.items()})
    code, summary = run(root, tmp_path / "out")
    assert code == 0, summary
    assert summary["success"] and summary["checks"] == EVERY_CHECK
    assert summary["images_featurized"] == 18
    assert "hold-out of 20% of the images (no split folders)" in summary["evaluated_on"]
    assert summary["training_images"] == "the images (no split folders) less the evaluation hold-out"
    assert summary["evaluation_images"] >= 3 and summary["accuracy"] == 1.0
    raw = read_arrow(summary["outputs"]["raw_images"])
    assert set(raw.column("split").to_pylist()) == {""}
    assert sorted(set(raw.column("label").to_pylist())) == sorted(names)
    assert classifier_labels(tmp_path / "out") == sorted(names)
    evaluated = read_arrow(summary["outputs"]["classifier_evaluation"]).column("path").to_pylist()
    reduced = read_arrow(summary["outputs"]["reduced_features"])
    assert len(evaluated) == summary["evaluation_images"] < reduced.num_rows


@pytest.mark.slow
@pytest.mark.usefixtures("default_penalties")
def test_training_split_only_is_evaluated_on_a_holdout_the_classifier_never_saw(photos, tmp_path):
    """With two augmented views of each training photo: the views train (a held-out photo's views are dropped), and
    the photos, not their views, are evaluated."""
    root = make_root(tmp_path / "images", {f"Training/{f}": photos(f, 6) for f in ("Banana", "Kiwi", "Lemon")})
    code, summary = run(root, tmp_path / "out", "--augment-views", "2")
    assert code == 0, summary
    assert summary["evaluated_on"].startswith("hold-out of 20% of split 'Training'")
    selection = summary["classifier_selection"]
    assert selection.startswith("fitted on half of the training photos, scored by logLoss on the other half")
    assert selection.endswith("on split 'Training' less the evaluation hold-out")
    assert summary["accuracy"] == 1.0 and summary["checks"] == EVERY_CHECK
    # 18 photos and 2 views of each, every one embedded once.
    assert summary["images_embedded"] == summary["images_featurized"] == 54
    paths = read_arrow(summary["outputs"]["image_embeddings"]).column("path").to_pylist()
    photos = [path for path in paths if "#view=" not in path]
    assert len(photos) == 18 and sorted(paths) == sorted(photos + [f"{p}#view={n}" for p in photos for n in (1, 2)])
    # A hold-out: some of the split's photos, not all of them, and none of their views.
    evaluated = set(read_arrow(summary["outputs"]["classifier_evaluation"]).column("path").to_pylist())
    assert len(evaluated) == summary["evaluation_images"] and evaluated < set(photos)
    assert run(root, tmp_path / "out", "--augment-views", "2")[1]["steps"] == []


@pytest.mark.slow
@pytest.mark.usefixtures("default_penalties")
def test_a_validation_split_chooses_the_penalty(photos, tmp_path):
    """Split names other than Fruits-360's (the names each role is found by: tests/spark_code/photos/test_splits.py)."""
    train, val, test = "train", "val", "test"
    folders = {}
    for fruit in ("Banana", "Kiwi", "Lemon"):
        folders[f"{train}/{fruit}"] = photos(fruit, 5)
        folders[f"{val}/{fruit}"] = photos(fruit, 2, start=5)
        folders[f"{test}/{fruit}"] = photos(fruit, 2, start=7)
    code, summary = run(make_root(tmp_path / "images", folders), tmp_path / "out")
    assert code == 0, summary
    assert summary["classifier_selection"].startswith("fitted on the training split")
    assert f"split '{val}'" in summary["classifier_selection"]
    assert summary["evaluated_on"] == f"split '{test}'" and summary["evaluation_images"] == 6
    assert summary["training_images"] == f"split '{train}'"
    assert summary["accuracy"] == 1.0


@pytest.mark.slow
def test_one_class_produces_features_and_skips_the_classifier(photos, tmp_path):
    root = make_root(tmp_path / "images", {"Kiwi": photos("Kiwi", 4)})
    code, summary = run(root, tmp_path / "out")
    assert code == 0, summary
    assert summary["success"]
    assert summary["skipped"] == {"fruit_classifier": "1 class(es) with training images: a classifier needs at least 2"}
    assert summary["accuracy"] is None and summary["classifier_reg_param"] is None
    # 4 photos less the hold-out (at least one stays): k is capped by the training images, not by the settings.
    assert 1 <= summary["pca_k"] <= 3
    assert read_arrow(summary["outputs"]["reduced_features"]).num_rows == 4
    assert current(str(tmp_path / "out" / "fruit_classifier")) is None
    text = "\n".join(summary_lines(summary, summary["seconds"]))
    assert "fruit_classifier skipped: 1 class(es) with training images: a classifier needs at least 2" in text


@pytest.mark.slow
def test_two_classes_one_of_a_single_photo_three_hundred_times_smaller_than_the_other(photos, tmp_path):
    """The smallest classifier (two classes), a class of one photo, and classes 300:1 apart, in one run."""
    folders = {"Apple Braeburn": photos("Apple Braeburn", 300), "Banana": photos("Banana", 1)}
    code, summary = run(make_root(tmp_path / "images", folders), tmp_path / "out")
    assert code == 0, summary
    assert classifier_labels(tmp_path / "out") == ["Apple Braeburn", "Banana"]
    assert summary["checks"] == EVERY_CHECK


def test_a_split_setting_that_does_not_fit_is_one_clear_line(photos, tmp_path, capsys):
    root = make_root(tmp_path / "images", {"Training/Kiwi": photos("Kiwi", 2)})
    code = main(["run", "--images-root", str(root), "--output-root", str(tmp_path / "out"), "--evaluation-split", "x"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "fruits: error: evaluation split 'x' not found among the splits ['Training']"
    )


def test_a_root_with_neither_layout_names_both(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "photo.jpg").write_bytes(b"not a folder of classes")
    code = main(["run", "--images-root", str(tmp_path / "images"), "--output-root", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "<root>/<split>/<class>/<image> or <root>/<class>/<image>" in err
