"""The main job: materialize every asset for a set of classes in one Dagster run, and summarize it.

This is the same asset graph the UI shows, run in-process on a throwaway Dagster instance: the classes are
registered as `fruit_class` partitions and all of them are materialized as one partition range (one Spark job
per stage instead of one per class).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from fruits_assets.assets.classifier import ACCURACY_CHECK, SKIPPED
from fruits_assets.assets.common import settings_problems
from fruits_assets.definitions import all_assets, resources_for
from fruits_assets.io_managers import output_path
from fruits_assets.partitions import fruit_class_partitions
from fruits_assets.resources import resolved_settings
from spark_code.layout import discover_layout
from spark_code.settings import chosen_output_root

OUTPUT_FOLDERS = (
    "raw_images",
    "image_embeddings",
    "rejected_images",
    "pca_model",
    "reduced_features",
    "fruit_classifier",
    "classifier_evaluation",
)


class InvalidSettingsError(ValueError):
    """Settings that cannot work (e.g. a missing weights file): refused before Spark starts."""


@dataclass
class RunSummary:
    """What a person wants to read after the main job."""

    success: bool
    classes: int
    images_indexed: int = 0
    images_featurized: int = 0
    images_embedded: int = 0
    """Photos the model ran on in this run (the others' embeddings came from the embedding store)."""
    images_rejected: int = 0
    pca_k: int | None = None
    pca_explained_variance: float | None = None
    training_images: str | None = None
    """Which images the PCA and classifier were fitted on."""
    classifier_reg_param: float | None = None
    classifier_selection: str | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    evaluated_on: str | None = None
    """Which images the classifier was evaluated on: an evaluation split, or a hold-out of training images."""
    evaluation_images: int | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    """Assets that had nothing to compute this time, with the reason (e.g. fewer than two classes)."""
    output_root: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    error: str | None = None
    quality_gate_failed: bool = False
    """Every step ran, but the classifier's accuracy is below the floor: a judgement on the model, not a crash."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """Metadata values of the asset's first materialization in the run (all partitions share them)."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == AssetKey(asset):
            return {key: value.value for key, value in materialization.metadata.items()}
    return {}


def _skipped(result: ExecuteInProcessResult) -> dict[str, str]:
    """Assets that recorded why they produced nothing (an observation with a SKIPPED reason)."""
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_OBSERVATION":
            observation = event.event_specific_data.asset_observation
            if SKIPPED in observation.metadata:
                found[observation.asset_key.to_user_string()] = observation.metadata[SKIPPED].value
    return found


def _first_error(result: ExecuteInProcessResult, failed_checks: set[str]) -> str | None:
    """The first failed step and why, in one line a person can act on."""
    for event in result.all_events:
        if not (event.is_step_failure and event.step_failure_data):
            continue
        data = event.step_failure_data
        if data.user_failure_data:  # a Failure raised on purpose: its description is written for a person
            return f"{event.step_key}: {data.user_failure_data.description}"
        if data.error and data.error.cls_name == "DagsterAssetCheckFailedError":
            return f"{event.step_key}: blocking check failed: {', '.join(sorted(failed_checks))}"
        if data.error:
            error = data.error
            while error.cause is not None:
                error = error.cause
            # Spark wraps Python worker errors with their traceback: the last line is the actual exception.
            lines = [line.strip() for line in error.message.splitlines() if line.strip()]
            return f"{event.step_key}: {lines[-1] if lines else error.cls_name}"
    return None


def run_main_job(
    settings_overrides: dict[str, Any], classes: list[str] | None = None, output_root: str | None = None
) -> RunSummary:
    """Materialize every asset, from raw images to the classifier's evaluation, for `classes` (default: all)."""
    effective = resolved_settings(settings_overrides)
    problems = settings_problems(effective)
    if problems:
        raise InvalidSettingsError("invalid settings: " + "; ".join(problems))
    root = chosen_output_root(output_root)
    layout = discover_layout(effective.images_root)
    selected = sorted(set(classes)) if classes else layout.classes
    layout.class_dirs(selected)  # unknown classes fail here, before Spark starts
    effective.roles(layout.splits)  # and split settings that do not fit the layout

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(fruit_class_partitions.name, selected)
    result = materialize(
        all_assets,
        resources=resources_for("local", settings=effective, output_root=root),
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: selected[0], ASSET_PARTITION_RANGE_END_TAG: selected[-1]},
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        raise_on_error=False,
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    failed_checks = {name for name, passed in checks.items() if not passed}
    pca = _metadata(result, "pca_model")
    classifier = _metadata(result, "fruit_classifier")
    evaluation = _metadata(result, "classifier_evaluation")
    return RunSummary(
        success=result.success and not failed_checks,
        classes=len(selected),
        images_indexed=_metadata(result, "raw_images").get("files_indexed", 0),
        images_featurized=_metadata(result, "image_embeddings").get("row_count", 0),
        images_embedded=_metadata(result, "image_embeddings").get("images_embedded", 0),
        images_rejected=_metadata(result, "rejected_images").get("row_count", 0),
        pca_k=pca.get("k"),
        pca_explained_variance=pca.get("explained_variance"),
        training_images=pca.get("training_images"),
        classifier_reg_param=classifier.get("reg_param"),
        classifier_selection=classifier.get("selection"),
        accuracy=evaluation.get("accuracy"),
        macro_f1=evaluation.get("macro_f1"),
        evaluated_on=evaluation.get("evaluated_on"),
        evaluation_images=evaluation.get("images"),
        skipped=_skipped(result),
        output_root=root,
        outputs={name: output_path(root, name) for name in OUTPUT_FOLDERS},
        checks=checks,
        error=_first_error(result, failed_checks),
        quality_gate_failed=result.success and failed_checks == {ACCURACY_CHECK.name},
    )
