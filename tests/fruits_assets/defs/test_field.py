"""The field evaluation: the trained classifier on real grocery-store photos (a field root of their own), by class
and by fruit, run by `fruits run` only when the classifier or the field photos changed."""

import json
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pytest
from dagster import AssetKey

from fruits_assets.app.models_watch import ModelWatcher
from fruits_assets.cli import main
from fruits_assets.cli.run import summary_lines
from fruits_assets.defs.resources import FruitsSettings
from fruits_assets.defs.staleness import field_stamp
from fruits_assets.main_job import persistent_instance
from spark_code.models.fruit_facts import fruit_of
from spark_code.storage.class_tables import read_arrow
from tests.conftest import SHARED

FIELD = SHARED / "data" / "field-photos"


def test_the_field_stamp_follows_the_classifier_the_photos_and_the_settings():
    settings = FruitsSettings(field_root="/field")
    listing = {"Banana": "a", "Kiwi": "b"}
    stamp = field_stamp("v1", listing, settings)
    assert stamp.startswith("v1:") and stamp == field_stamp("v1", dict(reversed(listing.items())), settings)
    assert stamp != field_stamp("v2", listing, settings)
    assert stamp != field_stamp("v1", {**listing, "Kiwi": "c"}, settings)
    assert stamp != field_stamp("v1", listing, FruitsSettings(field_root="/field", min_field_fruit_accuracy=0.9))
    assert stamp != field_stamp("v1", listing, FruitsSettings(field_root="/other"))


NESTED = {"Banana": "Fruit/Banana", "Kiwi": "Fruit/Kiwi", "Apple Red 1": "Fruit/Apple/Royal-Gala"}
"""Where the field root files each shared class: a nested tree like the GroceryStoreDataset's, read at class depth 2
(`Fruit/Apple/Royal-Gala/` is the class Apple)."""


def _field_root(target: Path) -> Path:
    """Real grocery-store photos of the trained run's fruits in two splits, in a nested tree ('Apple' is no class of
    the model: by class always wrong, by fruit right when it says any apple), and one file that is no photo."""
    for split in ("train", "val"):
        for label, nested in NESTED.items():
            folder = target / split / nested
            folder.mkdir(parents=True)
            for photo in sorted((FIELD / split / label).iterdir())[:3]:
                shutil.copy(photo, folder / photo.name)
    (target / "val" / NESTED["Kiwi"] / "notes.jpg").write_text("not a photo")
    return target


def _run(*args: str, capsys) -> tuple[int, dict]:
    code = main(["run", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_field_photos_are_evaluated_by_fruit_once_per_classifier_and_photos(small_root, trained_copy, tmp_path, capsys):
    field = _field_root(tmp_path / "field")
    base = ["--images-root", str(small_root), "--output-root", str(trained_copy), "--field-root", str(field)]
    base += ["--field-class-depth", "2"]
    code, summary = _run(*base, capsys=capsys)
    assert code == 0 and [step.split(" (")[0] for step in summary["steps"]] == ["field_evaluation"]
    table = read_arrow(summary["outputs"]["field_evaluation"])
    assert table.num_rows == summary["field_images"] == 18  # the file that is no photo is left out
    assert set(table.column("split").to_pylist()) == {"train", "val"}
    assert set(table.column("label").to_pylist()) == {"Apple", "Banana", "Kiwi"}
    right = pc.equal(table["fruit"], table["predicted_fruit"])
    assert summary["field_fruit_accuracy"] == pytest.approx(pc.mean(right.cast("int8")).as_py())
    assert summary["field_accuracy"] == pytest.approx(
        pc.mean(pc.equal(table["label"], table["predicted"]).cast("int8")).as_py()
    )
    assert table.column("fruit").to_pylist() == [fruit_of(label) for label in table.column("label").to_pylist()]
    assert summary["field_accuracy"] <= summary["field_fruit_accuracy"]
    assert set(summary["field_per_fruit"]) == {"Apple", "Banana", "Kiwi"}
    event = persistent_instance().get_latest_materialization_event(AssetKey("field_evaluation"))
    metadata = {key: value.value for key, value in event.asset_materialization.metadata.items()}
    assert metadata["images_embedded"] == 18 and metadata["images_rejected"] == 1
    assert set(metadata["per_split"]) == {"train", "val"} and metadata["per_split"]["val"]["photos"] == 9
    # The confidence is calibrated on one half of the photos and measured on the other: the halves make the whole.
    calibration = metadata["calibration"]
    assert calibration["photos"] + calibration["held_out"]["photos"] == 18 and calibration["temperature"] > 0
    assert calibration["threshold"] is None or 0 <= calibration["threshold"] <= 1

    # `fruits predict` answers with that confidence: the fruit's calibrated probability, sure at the threshold only.
    photo = str(next((field / "val" / NESTED["Banana"]).iterdir()))
    assert main(["predict", photo, "--output-root", str(trained_copy), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert 0 < answer["confidence"] <= 1
    threshold = calibration["threshold"]
    assert answer["confident"] is (threshold is not None and answer["confidence"] >= threshold)
    assert main(["predict", photo, "--output-root", str(trained_copy)]) == 0
    assert ("not sure" in capsys.readouterr().out) is not answer["confident"]

    # Nothing changed: nothing runs. A floor no accuracy reaches makes it stale and its check warns: the run still
    # succeeds (exit 0), and the summary says so.
    assert _run(*base, capsys=capsys)[1]["steps"] == []
    code, summary = _run(*base, "--min-field-fruit-accuracy", "1.0", capsys=capsys)
    assert summary["field_fruit_accuracy"] < 1.0  # a 3-class studio model does not name every field photo
    assert code == 0 and summary["success"] and summary["warnings"] == ["field_fruit_accuracy"]
    assert summary["checks"]["field_fruit_accuracy"] is False
    lines = "\n".join(summary_lines(summary, 1.0))
    assert "warning:" in lines and "failed check:" not in lines

    # One new field photo: only the field evaluation runs again, and the model runs on that photo alone.
    new = sorted((FIELD / "val" / "Banana").iterdir())[-1]
    shutil.copy(new, field / "val" / NESTED["Banana"] / new.name)
    code, summary = _run(*base, capsys=capsys)
    assert code == 0 and [step.split(" (")[0] for step in summary["steps"]] == ["field_evaluation"]
    assert summary["field_images"] == 19
    event = persistent_instance().get_latest_materialization_event(AssetKey("field_evaluation"))
    assert event.asset_materialization.metadata["images_embedded"].value == 1

    # The service tells how its model does in the field: the figures of the field evaluation of that model.
    watcher = ModelWatcher(str(trained_copy))
    assert watcher.refresh() is True
    assert watcher.current.confidence is not None  # the service's answers carry it too
    field_figures = watcher.current.info["field"]
    assert field_figures["photos"] == 19
    assert field_figures["fruit_accuracy"] == pytest.approx(summary["field_fruit_accuracy"], abs=1e-4)
    assert field_figures["accuracy"] == pytest.approx(summary["field_accuracy"], abs=1e-4)
