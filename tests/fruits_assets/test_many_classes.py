"""A few hundred classes (generated, three small photos each, no split folders): registered in one sensor tick, then
the main job end to end, evaluated on a hold-out. The durations are printed (BENCHMARKS.md), never asserted."""

import time

from dagster import build_sensor_context
from dagster_aws.s3 import S3Resource

from fruits_assets.defs.partitions import fruit_class_partitions
from fruits_assets.defs.resources import FruitsSettings
from fruits_assets.defs.sensors import fruit_class_sensor
from fruits_assets.main_job import persistent_instance, run_main_job
from spark_code.models.ml_models import published_notes
from tests.images_factory import write_image

CLASSES = 300
FLOOR = 0.8


def test_a_few_hundred_classes_in_one_tick_and_one_run(tmp_path, spark, capsys):
    root = tmp_path / "images"
    names = [f"fruit {i:03d}" for i in range(CLASSES)]
    for i, name in enumerate(names):
        for j in range(3):
            # three copies of one photo per class: a hold-out photo is one the classifier was trained on, so it names
            # nearly all of them (0.956 measured), and a label mixed up anywhere among 300 classes shows
            write_image(root / name / f"{j}.png", size=(24, 24), seed=i)

    instance = persistent_instance()  # the instance the main job runs on, as `make ui` shares it
    started = time.perf_counter()
    context = build_sensor_context(instance=instance)
    tick = fruit_class_sensor(context, settings=FruitsSettings(images_root=str(root)), s3=S3Resource())
    tick_seconds = time.perf_counter() - started
    assert tick.dynamic_partitions_requests[0].partition_keys == names and len(tick.asset_events) == CLASSES
    instance.add_dynamic_partitions(fruit_class_partitions.name, tick.dynamic_partitions_requests[0].partition_keys)
    # what the daemon does with it; the session's instance may hold other tests' classes too
    assert set(names) <= set(instance.get_dynamic_partitions(fruit_class_partitions.name))

    started = time.perf_counter()
    summary = run_main_job({"images_root": str(root), "min_accuracy": FLOOR}, None, str(tmp_path / "out"))
    run_seconds = time.perf_counter() - started
    assert summary.success, summary.error
    assert summary.classes == CLASSES and summary.images_featurized == 3 * CLASSES and summary.images_rejected == 0
    assert summary.evaluated_on.startswith("hold-out") and summary.evaluation_images > 0
    assert summary.accuracy >= FLOOR  # chance is 1/300
    assert len(published_notes(str(tmp_path / "out" / "fruit_classifier"))["labels"]) == CLASSES

    started = time.perf_counter()
    again = run_main_job({"images_root": str(root), "min_accuracy": FLOOR}, None, str(tmp_path / "out"))
    assert again.success and again.steps == []
    with capsys.disabled():
        print(
            f"\n{CLASSES} classes: accuracy {summary.accuracy:.3f}, sensor tick {tick_seconds:.2f} s, "
            f"main job {run_seconds:.1f} s "
            f"({summary.steps}), rerun with nothing new {time.perf_counter() - started:.1f} s"
        )
