"""Retries: a transient failure of a Spark-backed step is retried and the run succeeds; settings that cannot work
fail the step once, at once, with a clear message."""

import threading
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, materialize

from fruits_assets.assets.features import image_embeddings
from fruits_assets.assets.ingestion import raw_images
from fruits_assets.partitions import fruit_class_partitions
from spark_code.parquet_store import read_classes
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
