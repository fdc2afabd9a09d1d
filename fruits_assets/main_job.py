"""The main job: materialize what is missing or stale, for a set of classes, and summarize it.

This is the same asset graph the UI shows, run in-process on the persistent Dagster instance (DAGSTER_HOME, by
default `.dagster_home` in the current folder, which `make ui` uses too), so the UI lists its runs. What runs is
planned from the output root and the images' listing (fruits_assets.defs.staleness), never from the instance's history:
1. raw_images and image_embeddings for the classes whose photos or embedding settings changed (or whose outputs are
   missing); the embedding store spares the photos already embedded;
2. pca_model, when a class changed or came or went, or its settings changed; it refits by the rule of
   spark_code.models.pca_refit, else keeps the published PCA;
3. reduced_features for the classes not projected by the current PCA from their current embeddings;
4. fruit_classifier and classifier_evaluation when their inputs changed;
5. field_evaluation, with a field root, when the classifier or the field photos changed.
Each step with stale classes is one Dagster run over a partition range (one Spark job per stage, not per class);
with nothing stale, nothing runs. When every class is stale (no output yet, or new photos in each class) every asset
runs for every class in one run, sparing the start of three more (if the PCA is kept, the steps after it run next,
as above); `full=True` does so too and refits the PCA. The instance's `fruit_class` partitions become the run's
classes: the unpartitioned assets read them all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    EventLogEntry,
    ExecuteInProcessResult,
    SourceAsset,
    define_asset_job,
)
from dagster._core.definitions.materialize import EPHEMERAL_JOB_NAME
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._core.utils import make_new_run_id

from fruits_assets.definitions import all_assets, resources_for
from fruits_assets.defs.assets.classifier import ACCURACY_CHECK
from fruits_assets.defs.assets.common import SKIPPED, settings_problems
from fruits_assets.defs.assets.field import FIELD_CHECK
from fruits_assets.defs.io_managers import output_path
from fruits_assets.defs.local_spark import local_session
from fruits_assets.defs.partitions import fruit_class_partitions
from fruits_assets.defs.resources import resolved_settings, with_changes
from fruits_assets.defs.staleness import Staleness, published_classes
from spark_code.photos.layout import ImagesLayout
from spark_code.settings import chosen_output_root
from spark_code.storage.class_tables import WHOLE, published_stamps, withdraw_classes_except

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
    """Classes the models know: those of the run and every other one published under the output root."""
    classes_withdrawn: list[str] = field(default_factory=list)
    """Classes whose folder is gone from the images root: unpublished from every output by this run."""
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
    feedback_photos: int = 0
    """Photos of the feedback area the classifier was trained on (the app's users'), and per class."""
    feedback_photos_per_class: dict[str, int] = field(default_factory=dict)
    accuracy: float | None = None
    macro_f1: float | None = None
    evaluated_on: str | None = None
    """Which images the classifier was evaluated on: an evaluation split, or a hold-out of training images."""
    evaluation_images: int | None = None
    field_fruit_accuracy: float | None = None
    """On the field photos (photos of the app's world, never trained on): answers naming the right fruit."""
    field_accuracy: float | None = None
    field_images: int | None = None
    field_root: str | None = None
    field_per_fruit: dict[str, float] = field(default_factory=dict)
    """Fruit accuracy of each fruit of the field photos."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Assets that had nothing to compute this time, with the reason (e.g. fewer than two classes)."""
    output_root: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Checks that failed with a warning (the field's): reported, never a failed run."""
    error: str | None = None
    quality_gate_failed: bool = False
    """Every step ran, but the classifier's accuracy is below the floor: a judgement on the model, not a crash."""
    steps: list[str] = field(default_factory=list)
    """What ran, one line per Dagster run (empty: everything was up to date)."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each stage (Dagster step) that ran, from its start to its end, its output's write included."""
    run_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


INGESTION = ("raw_images", "image_embeddings", "rejected_images")
CLASS_OUTPUTS = (*INGESTION, "reduced_features")
CLASSIFIER = ("fruit_classifier", "classifier_evaluation")
FIELD = ("field_evaluation",)
REFIT_ALWAYS = {"pca_refit_share": 0.0, "classifier_search_share": 0.0, "reread_files": True}
"""--full: every photo read again, the PCA refitted and the classifier's penalty searched again, whatever changed."""


def _metadata(results: list[ExecuteInProcessResult], asset: str) -> dict[str, Any]:
    """Metadata values of the asset's last materialization in these runs (all partitions of a run share them)."""
    found: dict[str, Any] = {}
    for result in results:
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            if materialization.asset_key == AssetKey(asset):
                found = {key: value.value for key, value in materialization.metadata.items()}
    return found


def _published_metadata(instance: DagsterInstance, asset: str, path: str) -> dict[str, Any]:
    """Metadata of the instance's latest materialization of an asset, if it wrote to `path` (what is published
    there, when this run did not recompute it); else nothing."""
    event = instance.get_latest_materialization_event(AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return {}
    metadata = {key: value.value for key, value in event.asset_materialization.metadata.items()}
    return metadata if metadata.get("path") == path else {}


def _skipped(results: list[ExecuteInProcessResult]) -> dict[str, str]:
    """Assets that recorded why they produced nothing (an observation with a SKIPPED reason)."""
    found = {}
    for result in results:
        for event in result.all_events:
            if event.event_type_value == "ASSET_OBSERVATION":
                observation = event.event_specific_data.asset_observation
                if SKIPPED in observation.metadata:
                    found[observation.asset_key.to_user_string()] = observation.metadata[SKIPPED].value
    return found


def _stage_seconds(instance: DagsterInstance, results: list[ExecuteInProcessResult]) -> dict[str, float]:
    """Seconds from each step's start to its end (a retried step: from its first start to its last end), in the
    order the steps ran, from the runs' event logs."""
    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
    spans: dict[str, list[float]] = {}
    for result in results:
        for entry in instance.all_logs(result.run_id, of_type=kinds):
            span = spans.setdefault(entry.step_key or "", [entry.timestamp, entry.timestamp])
            span[0], span[1] = min(span[0], entry.timestamp), max(span[1], entry.timestamp)
    return {step: round(end - start, 1) for step, (start, end) in spans.items() if step}


def _first_error(result: ExecuteInProcessResult) -> str | None:
    """The first failed step and why, in one line a person can act on."""
    for event in result.all_events:
        if not (event.is_step_failure and event.step_failure_data):
            continue
        data = event.step_failure_data
        if data.user_failure_data:  # a Failure raised on purpose: its description is written for a person
            return f"{event.step_key}: {data.user_failure_data.description}"
        if data.error:
            error = data.error
            while error.cause is not None:
                error = error.cause
            # Spark wraps Python worker errors with their traceback: the last line is the actual exception.
            lines = [line.strip() for line in error.message.splitlines() if line.strip()]
            return f"{event.step_key}: {lines[-1] if lines else error.cls_name}"
    return None


DAGSTER_HOME_DEFAULT = ".dagster_home"
"""The persistent instance's folder when DAGSTER_HOME is not set (relative to the current folder)."""


_INSTANCES: dict[str, DagsterInstance] = {}


def persistent_instance() -> DagsterInstance:
    """The Dagster instance of DAGSTER_HOME, set to `.dagster_home` here (created) when unset; one per folder and
    process."""
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = os.path.abspath(DAGSTER_HOME_DEFAULT)
    home = os.environ["DAGSTER_HOME"]
    if home not in _INSTANCES:
        os.makedirs(home, exist_ok=True)
        _INSTANCES[home] = DagsterInstance.get()
    return _INSTANCES[home]


def use_classes(instance: DagsterInstance, classes: list[str], layout: ImagesLayout) -> list[str]:
    """Register `classes` as `fruit_class` partitions, and forget those whose folder is not under the images root
    (deleted classes, another root's): the discovery sensor of this root never adds them back. Partitions of other
    classes under the root stay (the sensor may have just added them): the models read only the classes published
    (fruits_assets.defs.io_managers). Returns the partitions in the instance's order, the order of partition ranges."""
    name = fruit_class_partitions.name
    known = instance.get_dynamic_partitions(name)
    for extra in sorted(set(known) - set(layout.classes)):
        instance.delete_dynamic_partition(name, extra)
    instance.add_dynamic_partitions(name, [c for c in classes if c not in set(known)])
    return instance.get_dynamic_partitions(name)


def withdraw_deleted_classes(root: str, layout: ImagesLayout) -> list[str]:
    """Unpublish, from every per-class output, the classes whose folder is gone from the images root."""
    present = set(layout.classes)
    bases = [output_path(root, asset) for asset in CLASS_OUTPUTS]
    if all(set(published_stamps(base)) - {WHOLE} <= present for base in bases):
        return []  # the usual case: read the tables' logs, start nothing
    spark = local_session()
    return sorted({name for base in bases for name in withdraw_classes_except(spark, base, present)})


def contiguous_ranges(ordered: list[str], chosen: list[str]) -> list[tuple[str, str]]:
    """The chosen keys as (first, last) runs of consecutive keys of `ordered`: one Dagster run each."""
    wanted = set(chosen)
    ranges: list[tuple[str, str]] = []
    start: str | None = None
    previous: str | None = None
    for key in ordered:
        if key in wanted and start is None:
            start = key
        if key not in wanted and start is not None:
            ranges.append((start, previous))
            start = None
        previous = key
    if start is not None:
        ranges.append((start, previous))
    return ranges


BRIDGE_PHOTOS = 6_000
"""Up-to-date photos a run redoes (from the embedding store: no model call) in the time another Dagster run takes to
start. Measured on the full sample taking in the field photos as feedback (BENCHMARKS.md): an ingestion run of one
class took 4.5-5 s, one of five 5.8 s, about 0.25 s per class of about 340 photos beyond the start."""


def bridged_ranges(
    ordered: list[str], chosen: list[str], photos: dict[str, int], may_redo: set[str], bridge: int = BRIDGE_PHOTOS
) -> list[tuple[str, str]]:
    """contiguous_ranges, two neighbouring ranges made one where the classes between them may be done again
    (`may_redo`: listed by this run) and hold at most `bridge` photos (`photos`: each class's, as published): redoing
    them costs less than another run's start, and they come out as they were."""
    merged: list[tuple[str, str]] = []
    for first, last in contiguous_ranges(ordered, chosen):
        if merged:
            gap = ordered[ordered.index(merged[-1][1]) + 1 : ordered.index(first)]
            if set(gap) <= may_redo and sum(photos.get(name, 0) for name in gap) <= bridge:
                merged[-1] = (merged[-1][0], last)
                continue
        merged.append((first, last))
    return merged


EventListener = Callable[[EventLogEntry], None]
"""Called with each event of the main job's runs as it happens (step started, log line, step succeeded...), on the
thread that logs it: it must be quick and never raise."""


def materialize_listened(
    assets: Sequence[AssetsDefinition | AssetSpec | SourceAsset],
    instance: DagsterInstance,
    listener: EventListener | None = None,
    selection: list[str] | None = None,
    resources: dict[str, object] | None = None,
    **execute: Any,
) -> ExecuteInProcessResult:
    """`dagster.materialize` (the same ephemeral asset job), with the run's id chosen beforehand so that `listener`
    hears the run's events as they happen, not only in the result."""
    job = define_asset_job(name=EPHEMERAL_JOB_NAME, selection=selection)
    defs = Definitions(jobs=[job], assets=assets, resources=resources)
    run_id = make_new_run_id()
    if listener is not None:
        instance.add_event_listener(run_id, listener)
    return defs.resolve_job_def(EPHEMERAL_JOB_NAME).execute_in_process(instance=instance, run_id=run_id, **execute)


class _Runner:
    """Runs asset selections on the instance, one Dagster run each, and keeps their results."""

    def __init__(
        self, instance: DagsterInstance, resources: dict[str, object], listener: EventListener | None = None
    ) -> None:
        self.instance = instance
        self.resources = resources
        self.listener = listener
        self.results: list[ExecuteInProcessResult] = []
        self.steps: list[str] = []

    @property
    def failed(self) -> bool:
        return any(not result.success for result in self.results)

    def run(self, assets: tuple[str, ...] | None, classes: tuple[str, str] | None, what: str) -> None:
        if self.failed:
            return
        tags = {"fruits/step": what}
        if classes:
            tags |= {ASSET_PARTITION_RANGE_START_TAG: classes[0], ASSET_PARTITION_RANGE_END_TAG: classes[1]}
        started = time.perf_counter()
        result = materialize_listened(
            all_assets,
            self.instance,
            self.listener,
            selection=list(assets) if assets else None,
            resources=self.resources,
            tags=tags,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            raise_on_error=False,
        )
        self.results.append(result)
        self.steps.append(f"{what} ({time.perf_counter() - started:.1f} s, run {result.run_id[:8]})")

    def run_classes(
        self, assets: tuple[str, ...], ordered: list[str], classes: list[str], what: str, state: Staleness
    ) -> None:
        """One run per range of stale classes (bridged_ranges); a run's name counts the up-to-date classes it
        redoes apart."""
        photos = {name: entry.get("rows", 0) for name, entry in state.stamps("raw_images").items()}
        for first, last in bridged_ranges(ordered, classes, photos, set(state.refreshed)):
            span = ordered[ordered.index(first) : ordered.index(last) + 1]
            redone = len(set(span) - set(classes))
            self.run(assets, (first, last), f"{what}: {len(span)} class(es)" + (f", {redone} redone" if redone else ""))


def run_main_job(
    settings_overrides: dict[str, Any],
    classes: list[str] | None = None,
    output_root: str | None = None,
    full: bool = False,
    listener: EventListener | None = None,
) -> RunSummary:
    """Materialize what is missing or stale, from raw images to the classifier's evaluation, for `classes`
    (default: all); `full` recomputes every asset of every class and refits the PCA. `listener` hears the runs'
    events as they happen (`fruits run`'s progress display)."""
    effective = resolved_settings(settings_overrides)
    problems = settings_problems(effective)
    if problems:
        raise InvalidSettingsError("invalid settings: " + "; ".join(problems))
    root = chosen_output_root(output_root)
    layout = effective.layout()
    selected = sorted(set(classes)) if classes else layout.classes
    layout.class_dirs(selected)  # unknown classes fail here, before Spark starts
    effective.roles(layout.splits)  # and split settings that do not fit the layout
    effective.field_layout()  # and a field root that is not there, or holds no class folder

    withdrawn = withdraw_deleted_classes(root, layout)
    # The models learn every class published, not only those refreshed now: a run over some classes never
    # shrinks what the app knows.
    trained = sorted(set(selected) | published_classes(root))
    instance = persistent_instance()
    ordered = use_classes(instance, trained, layout)
    state = Staleness(root, effective, layout, trained, refresh=selected)
    ingest = selected if full else [name for name in state.stale_ingestion() if name in set(selected)]
    settings = with_changes(effective, **REFIT_ALWAYS) if full else effective
    runner = _Runner(instance, resources_for("local", settings=settings, output_root=root), listener)
    field_step = FIELD if effective.field_root else ()
    if set(ingest) == set(ordered):  # every stage has work for every class
        every = OUTPUT_FOLDERS + field_step
        runner.run(every, (ordered[0], ordered[-1]), f"every asset: {len(ordered)} class(es)")
    else:
        runner.run_classes(INGESTION, ordered, ingest, "raw_images, image_embeddings", state)
        if ingest or full or state.pca_may_be_stale():
            runner.run(("pca_model",), None, "pca_model")
    # What is still stale: after one run for every asset, a PCA kept by its rule materialized nothing, so Dagster
    # skipped the steps after it; they project with the published PCA here.
    if not runner.failed:
        runner.run_classes(("reduced_features",), ordered, state.stale_reduced(), "reduced_features", state)
    if not runner.failed and state.classifier_stale():
        runner.run(CLASSIFIER + field_step, None, ", ".join(CLASSIFIER + field_step))
    elif not runner.failed and state.evaluation_stale():
        runner.run(("classifier_evaluation",), None, "classifier_evaluation")
    if not runner.failed and state.field_stale():  # new field photos, or the evaluation above left it stale
        runner.run(FIELD, None, "field_evaluation")
    return _summary(runner, instance, state, root, withdrawn)


def _summary(
    runner: _Runner, instance: DagsterInstance, state: Staleness, root: str, withdrawn: list[str]
) -> RunSummary:
    """The summary of what is published for the run's classes, and of what this run did."""
    results = runner.results
    evaluations = [e for result in results for e in result.get_asset_check_evaluations()]
    checks = {e.check_name: e.passed for e in evaluations}
    warned = {e.check_name for e in evaluations if e.severity == AssetCheckSeverity.WARN}

    def latest(asset: str) -> dict[str, Any]:
        return _metadata(results, asset) or _published_metadata(instance, asset, output_path(root, asset))

    pca, classifier, evaluation = latest("pca_model"), latest("fruit_classifier"), latest("classifier_evaluation")
    if ACCURACY_CHECK.name not in checks and evaluation.get("accuracy") is not None:
        # the published evaluation, not recomputed this time: its verdict under the current floor still holds
        checks[ACCURACY_CHECK.name] = evaluation["accuracy"] >= state.settings.min_accuracy
    field_run = latest("field_evaluation") if state.settings.field_root else {}
    if FIELD_CHECK.name not in checks and field_run.get("fruit_accuracy") is not None:
        # as the accuracy check above: the published field evaluation's verdict under the current floor
        checks[FIELD_CHECK.name] = field_run["fruit_accuracy"] >= state.settings.min_field_fruit_accuracy
        warned.add(FIELD_CHECK.name)
    failed_checks = {name for name, passed in checks.items() if not passed and name not in warned}
    failed = next((result for result in results if not result.success), None)
    success = failed is None and not failed_checks
    return RunSummary(
        success=success,
        classes=len(state.classes),
        classes_withdrawn=withdrawn,
        images_indexed=state.counts("raw_images"),
        images_featurized=state.counts("image_embeddings"),
        images_embedded=sum(_metadata([result], "image_embeddings").get("images_embedded", 0) for result in results),
        images_rejected=state.counts("rejected_images"),
        pca_k=pca.get("k"),
        pca_explained_variance=pca.get("explained_variance"),
        training_images=pca.get("training_images"),
        classifier_reg_param=classifier.get("reg_param"),
        classifier_selection=classifier.get("selection"),
        feedback_photos=classifier.get("feedback_photos", 0),
        feedback_photos_per_class=classifier.get("feedback_photos_per_class", {}),
        accuracy=evaluation.get("accuracy"),
        macro_f1=evaluation.get("macro_f1"),
        evaluated_on=evaluation.get("evaluated_on"),
        evaluation_images=evaluation.get("images"),
        field_fruit_accuracy=field_run.get("fruit_accuracy"),
        field_accuracy=field_run.get("accuracy"),
        field_images=field_run.get("images"),
        field_root=field_run.get("field_root"),
        field_per_fruit=field_run.get("fruit_accuracy_per_fruit", {}),
        skipped=_skipped(results),
        output_root=root,
        outputs={
            name: output_path(root, name) for name in OUTPUT_FOLDERS + (FIELD if state.settings.field_root else ())
        },
        checks=checks,
        warnings=sorted(name for name in warned if not checks[name]),
        error=_first_error(failed) if failed else None,
        quality_gate_failed=failed is None and failed_checks == {ACCURACY_CHECK.name},
        steps=runner.steps,
        stage_seconds=_stage_seconds(instance, results),
        run_ids=[result.run_id for result in results],
    )
