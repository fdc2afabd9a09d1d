"""Retries: a transient failure of a Spark-backed step is retried and the run succeeds; settings that cannot work,
data a step cannot use and upstream outputs never materialized fail the step once, at once, with a clear message."""

import threading
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, materialize

from fruits_assets.definitions import all_assets
from fruits_assets.defs.assets.features import image_embeddings
from fruits_assets.defs.assets.ingestion import raw_images
from fruits_assets.defs.partitions import fruit_class_partitions
from spark_code.storage.class_tables import read_classes
from tests.conftest import copy_sample
from tests.fruits_assets.conftest import make_instance, make_resources

EMBEDDING_STEPS = [AssetKey("raw_images"), AssetKey("image_embeddings"), AssetKey("rejected_images")]
RETRY_EVENTS = {DagsterEventType.STEP_UP_FOR_RETRY, DagsterEventType.STEP_RESTARTED}


def _events(instance: DagsterInstance, run_id: str) -> list:
    return [record.dagster_event for record in instance.all_logs(run_id) if record.dagster_event]


def _unblock_on_retry(instance: DagsterInstance, blocker: Path, done: threading.Event) -> None:
    """Remove the blocking file as soon as the run reports a step up for retry (the retry waits 5 s)."""
    while not done.wait(0.05):
        for run in instance.get_runs():
            if any(e.event_type == DagsterEventType.STEP_UP_FOR_RETRY for e in _events(instance, run.run_id)):
                blocker.unlink()
                return


def test_a_step_whose_output_cannot_be_written_is_retried_and_succeeds(small_root, output_root, tmp_path, spark):
    """A file sits where raw_images' output folder goes (a storage failure) until the first attempt has failed."""
    (tmp_path / "dagster").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster"))
    instance.add_dynamic_partitions(fruit_class_partitions.name, ["Kiwi"])
    output_root.mkdir()
    blocker = output_root / "raw_images"
    blocker.write_text("not a folder")
    done = threading.Event()
    watcher = threading.Thread(target=_unblock_on_retry, args=(instance, blocker, done), daemon=True)
    watcher.start()
    try:
        result = materialize(
            [raw_images],
            partition_key="Kiwi",
            resources=make_resources(small_root, output_root),
            instance=instance,
            raise_on_error=False,
        )
    finally:
        done.set()
        watcher.join()
    events = _events(instance, result.run_id)
    assert result.success
    assert [e.event_type for e in events].count(DagsterEventType.STEP_UP_FOR_RETRY) == 1
    assert [e.event_type for e in events].count(DagsterEventType.STEP_RESTARTED) == 1
    assert read_classes(spark, str(output_root / "raw_images"), ["Kiwi"]).count() == 14
    instance.dispose()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model_weights": "/nonexistent/weights.h5"}, "MobileNetV2 weights file not found: /nonexistent/weights.h5"),
        ({"model_alpha": 0.4}, "model_alpha 0.4 is not one of 0.35, 0.5"),
        ({"pca_variance": 1.5}, "pca_variance 1.5 must be in (0, 1]"),
    ],
)
def test_settings_that_cannot_work_fail_once_without_retries(small_root, output_root, settings, message):
    result = materialize(
        [raw_images, image_embeddings],
        selection=EMBEDDING_STEPS,
        partition_key="Kiwi",
        resources=make_resources(small_root, output_root, **settings),
        instance=make_instance(["Kiwi"]),
        raise_on_error=False,
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["raw_images"]
    assert message in failures[0].step_failure_data.user_failure_data.description
    assert not [e for e in result.all_events if e.event_type in RETRY_EVENTS]
    assert not output_root.exists()


@pytest.fixture(scope="module")
def kiwi_embedded(small_root, tmp_path_factory) -> Path:
    """An output root where only Kiwi's embeddings were materialized."""
    output_root = tmp_path_factory.mktemp("kiwi-only") / "out"
    result = materialize(
        all_assets,
        selection=EMBEDDING_STEPS,
        partition_key="Kiwi",
        resources=make_resources(small_root, output_root),
        instance=make_instance(["Kiwi"]),
    )
    assert result.success
    return output_root


def _failed_once_without_retries(result) -> str:
    assert not result.success
    assert not [e for e in result.all_events if e.event_type in RETRY_EVENTS]
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1
    return failures[0].step_failure_data.user_failure_data.description


@pytest.mark.slow
def test_an_unpartitioned_asset_reading_a_class_never_materialized_fails_at_once(small_root, kiwi_embedded):
    """pca_model reads the registered classes' embeddings that are published (a class registered but not yet
    materialized is left out, with a warning); the only one, Banana, was never embedded. Before: a plain
    MissingClassError, retried twice (5 s, then 15 s) before the same failure."""
    result = materialize(
        all_assets,
        selection=[AssetKey("pca_model")],
        resources=make_resources(small_root, kiwi_embedded),
        instance=make_instance(["Banana"]),
        raise_on_error=False,
    )
    message = _failed_once_without_retries(result)
    assert "no data for class(es) 'Banana'" in message and "materialize them first" in message


@pytest.mark.slow
def test_a_model_never_materialized_fails_its_readers_at_once(small_root, kiwi_embedded):
    result = materialize(
        all_assets,
        selection=[AssetKey("reduced_features")],
        partition_key="Kiwi",
        resources=make_resources(small_root, kiwi_embedded),
        instance=make_instance(["Kiwi"]),
        raise_on_error=False,
    )
    message = _failed_once_without_retries(result)
    assert message.startswith("no saved model under") and "pca_model: materialize it first" in message


@pytest.mark.slow
def test_too_few_training_images_for_a_pca_fail_at_once(tmp_path, small_root, kiwi_embedded):
    """One class with a single training photo: a data problem, not a transient one."""
    root = copy_sample(small_root, tmp_path / "one", ["Kiwi"], {"Training": 1})
    output_root = tmp_path / "out"
    result = materialize(
        all_assets,
        selection=[*EMBEDDING_STEPS, AssetKey("pca_model")],
        partition_key="Kiwi",
        resources=make_resources(root, output_root),
        instance=make_instance(["Kiwi"]),
        raise_on_error=False,
    )
    assert _failed_once_without_retries(result) == "PCA needs at least 2 training embeddings, found 1"
