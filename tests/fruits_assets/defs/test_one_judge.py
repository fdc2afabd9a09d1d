"""One judge of what a change of settings makes stale: for every setting, the planner (what `fruits run` recomputes,
on an output root of hand-made stamps) and the UI's code versions (what the automation shows stale) agree."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
from dagster import AssetKey

from fruits_assets.definitions import defs
from fruits_assets.defs.automation import code_version
from fruits_assets.defs.resources import FruitsSettings, with_changes
from fruits_assets.defs.staleness import (
    INPUTS,
    Staleness,
    classifier_inputs,
    evaluation_stamp,
    field_stamp,
    pca_context,
    reduced_stamps,
    stale,
)
from spark_code.models.ml_models import NOTES_FILE, VERSION
from spark_code.models.pca_refit import TRAINING_ROWS
from spark_code.photos.listing import class_versions
from spark_code.storage import storage
from spark_code.storage.class_tables import METADATA_KEY, PARTITION_COLUMN, STAMP_COLUMN, WHOLE
from tests.conftest import WEIGHTS
from tests.images_factory import GOOD_IMAGES, write_files

CLASSES = ["Apple", "Kiwi"]
ASSETS = (
    "raw_images",
    "image_embeddings",
    "rejected_images",
    "reduced_features",
    "pca_model",
    "fruit_classifier",
    "classifier_evaluation",
    "field_evaluation",
)
NOT_A_SETTING = {"images_root", "feedback_root"}
"""The photos' places: their changes reach the UI as the photos' data versions (the discovery sensor), not
settings."""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for split in ("Training", "Validation", "Test"):
        for name in CLASSES:
            write_files(root / split / name, dict(list(GOOD_IMAGES.items())[:2]))
    return root


def _settings(images: Path, **changes: object) -> FruitsSettings:
    """The test's settings; the images double as the field photos (the field root is a setting like any other)."""
    base = FruitsSettings(images_root=str(images), model_weights=str(WEIGHTS), model_alpha=0.35, field_root=str(images))
    return with_changes(base, **changes) if changes else base


def _delta_log(base: str, stamps: dict[str, str]) -> None:
    """What a table's writer commits, written by hand in Delta's log format: each class's file with its stamp and
    row count (a whole table's stamp in the commit's metadata), as spark_code.storage.class_tables reads them."""
    whole = list(stamps) == [WHOLE]
    partitions = [PARTITION_COLUMN] if whole else [PARTITION_COLUMN, STAMP_COLUMN]
    fields = [{"name": name, "type": "string", "nullable": True, "metadata": {}} for name in ["path", *partitions]]
    schema = json.dumps({"type": "struct", "fields": fields})
    metadata = {"whole": {"stamp": stamps[WHOLE], "notes": None}} if whole else {"empty": {}}
    actions = [
        {"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}},
        {"metaData": {"id": "t", "format": {"provider": "parquet", "options": {}}, "schemaString": schema}},
        {"metaData": {"partitionColumns": partitions, "configuration": {}, "createdTime": 0}},
        {"commitInfo": {"timestamp": 0, "operation": "WRITE", "userMetadata": json.dumps({METADATA_KEY: metadata})}},
    ]
    actions[1]["metaData"] |= actions.pop(2)["metaData"]
    for name, stamp in ({} if whole else stamps).items():
        values = {PARTITION_COLUMN: name, STAMP_COLUMN: stamp}
        file = {"path": f"{name}.parquet", "partitionValues": values, "size": 1, "modificationTime": 0}
        actions.append({"add": {**file, "dataChange": True, "stats": json.dumps({"numRecords": 2})}})
    storage.write_text(f"{base}/_delta_log/{0:020d}.json", "\n".join(map(json.dumps, actions)) + "\n")


def _publish(out: Path, asset: str, stamps: dict[str, str], notes: dict | None = None) -> None:
    """What a writer leaves: a table's log, or a model's version with its notes and its pointer."""
    base = f"{out}/{asset}"
    if notes is None:
        _delta_log(base, stamps)
        return
    storage.write_text(f"{base}/_versions/v1/{NOTES_FILE}", json.dumps({**notes, VERSION: "v1"}))
    storage.write_text(f"{base}/_current/all", "_versions/v1")


def _up_to_date_root(out: Path, settings: FruitsSettings) -> Path:
    """An output root of hand-made stamps, as a run with these settings publishes them."""
    planner = Staleness(str(out), settings, settings.layout(), CLASSES)
    _publish(out, "raw_images", planner.indexed)
    _publish(out, "image_embeddings", planner.embedded)
    _publish(out, "rejected_images", planner.embedded)
    roles = asdict(settings.roles(settings.layout().splits))
    training = {name: 2 for name in CLASSES}
    _publish(out, "pca_model", {}, {**pca_context(settings, roles), "classes": CLASSES, TRAINING_ROWS: training})
    reduced = reduced_stamps(planner.embedded, "v1")
    _publish(out, "reduced_features", reduced)
    _publish(out, "fruit_classifier", {}, {INPUTS: classifier_inputs(reduced, settings)})
    _publish(out, "classifier_evaluation", {"all": evaluation_stamp("v1", settings)})
    field = settings.field_layout()
    _publish(out, "field_evaluation", {"all": field_stamp("v1", class_versions(field, field.classes), settings)})
    return out


def _planner_stale(out: Path, settings: FruitsSettings) -> set[str]:
    state = Staleness(str(out), settings, settings.layout(), CLASSES)
    found = {
        asset
        for asset, expected in (
            ("raw_images", state.indexed),
            ("image_embeddings", state.embedded),
            ("rejected_images", state.embedded),
        )
        if stale(state.stamps(asset), expected)
    }
    found |= {"pca_model"} if state.pca_may_be_stale() else set()
    found |= {"reduced_features"} if state.stale_reduced() else set()
    found |= {"fruit_classifier"} if state.classifier_stale() else set()
    found |= {"field_evaluation"} if state.field_stale() else set()
    return found | ({"classifier_evaluation"} if state.evaluation_stale() else set())


def _with_downstream(assets: set[str]) -> set[str]:
    """The assets and everything downstream of them in the definitions' graph."""
    graph, found, todo = defs.resolve_asset_graph(), set(), [AssetKey(name) for name in assets]
    while todo:
        key = todo.pop()
        if key.to_user_string() not in found:
            found.add(key.to_user_string())
            todo.extend(graph.get(key).child_keys)
    return found


def _changed(name: str, value: object, tmp_path: Path) -> object:
    """Another valid value of a setting."""
    if name == "model_weights":
        other = tmp_path / "other-weights.h5"
        other.write_bytes(b"other weights")
        return str(other)
    if name == "field_root":
        return str(shutil.copytree(value, tmp_path / "other-field"))
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return round(value * 0.9, 6)
    return {
        "training_split": "Training",
        "validation_split": "Validation",
        "evaluation_split": "Test",
        "classifier_penalties": "1e-3,1e-5",
    }[name]


def test_a_fresh_hand_made_root_is_up_to_date(images, tmp_path):
    settings = _settings(images)
    assert _planner_stale(_up_to_date_root(tmp_path / "out", settings), settings) == set()


@pytest.mark.parametrize("name", sorted(set(FruitsSettings.model_fields) - NOT_A_SETTING))
def test_changing_a_setting_makes_the_same_assets_stale_for_the_planner_and_the_ui(images, tmp_path, name):
    base = _settings(images)
    out = _up_to_date_root(tmp_path / "out", base)
    changed = _settings(images, **{name: _changed(name, getattr(base, name), tmp_path)})
    ui = {asset for asset in ASSETS if code_version(asset, changed) != code_version(asset, base)}
    assert _with_downstream(_planner_stale(out, changed)) == _with_downstream(ui), name


def test_settings_that_change_no_output_make_nothing_stale(images, tmp_path):
    """The batch size, the policies that decide when to refit or search again, and the checks' limits."""
    base = _settings(images)
    out = _up_to_date_root(tmp_path / "out", base)
    for name in (
        "batch_size",
        "pca_refit_share",
        "classifier_search_share",
        "max_rejected_share",
        "reread_files",
        "feedback_sender_share",
    ):
        changed = _settings(images, **{name: _changed(name, getattr(base, name), tmp_path)})
        assert _planner_stale(out, changed) == set(), name
        assert all(code_version(asset, changed) == code_version(asset, base) for asset in ASSETS), name
