"""Many classes (generated, three small photos each, no split folders): registered in one sensor tick, then the main
job end to end, evaluated on a hold-out, through `fruits bench many-classes`, whose 300-class figures are in
BENCHMARKS.md (durations are printed by the bench, never asserted here)."""

from fruits_assets.bench.many_classes import bench_many_classes
from fruits_assets.defs.partitions import fruit_class_partitions
from fruits_assets.main_job import persistent_instance
from spark_code.models.ml_models import published_notes

CLASSES = 20
FLOOR = 0.8


def test_many_classes_in_one_tick_and_one_run(tmp_path, spark):
    # three copies of one photo per class: a hold-out photo is one the classifier was trained on, so it names nearly
    # all of them, and a label mixed up anywhere among the classes shows
    result = bench_many_classes(tmp_path, CLASSES, {}, min_accuracy=FLOOR)
    assert result["registered"] and result["observed"] == CLASSES
    # what the daemon does with the tick; the session's instance may hold other tests' classes too
    partitions = set(persistent_instance().get_dynamic_partitions(fruit_class_partitions.name))
    assert {f"fruit {i:04d}" for i in range(CLASSES)} <= partitions
    assert result["success"], result["error"]
    assert result["images_featurized"] == 3 * CLASSES and result["images_rejected"] == 0
    assert result["evaluated_on"].startswith("hold-out") and result["evaluation_images"] > 0
    assert result["accuracy"] >= FLOOR  # chance is 1/20
    assert len(published_notes(str(tmp_path / "out" / "fruit_classifier"))["labels"]) == CLASSES
    assert result["rerun_steps"] == []
