"""`fruits bench many-classes`: what a few hundred classes cost the platform's per-class work (the sensor's tick, one
main-job run over every partition, a rerun with nothing new), on generated classes of three tiny photos each, so the
model's work is negligible and what grows with the classes shows."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_classes(root: Path, classes: int, photos: int = 3) -> list[str]:
    """`classes` folders of `photos` copies of one 24x24 coloured disc on white (a colour per class)."""
    names = [f"fruit {i:04d}" for i in range(classes)]
    yy, xx = np.mgrid[0:24, 0:24]
    disc = (xx - 12) ** 2 + (yy - 12) ** 2 < 9.6**2
    for i, name in enumerate(names):
        pixels = np.full((24, 24, 3), 255, np.uint8)
        pixels[disc] = np.random.default_rng(i).integers(0, 200, 3, dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, "PNG")
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(photos):
            (root / name / f"{j}.png").write_bytes(buffer.getvalue())
    return names


def bench_many_classes(work_dir: Path, classes: int, overrides: dict, min_accuracy: float = 0.5) -> dict:
    """The sensor's tick over `classes` new class folders, the main job over all of them, and a rerun; seconds."""
    from dagster import build_sensor_context
    from dagster_aws.s3 import S3Resource

    from fruits_assets.defs.partitions import fruit_class_partitions
    from fruits_assets.defs.resources import FruitsSettings
    from fruits_assets.defs.sensors import fruit_class_sensor
    from fruits_assets.main_job import persistent_instance, run_main_job

    root = work_dir / "images"
    names = write_classes(root, classes)
    instance = persistent_instance()
    started = time.perf_counter()
    tick = fruit_class_sensor(
        build_sensor_context(instance=instance), settings=FruitsSettings(images_root=str(root)), s3=S3Resource()
    )
    tick_seconds = time.perf_counter() - started
    instance.add_dynamic_partitions(fruit_class_partitions.name, tick.dynamic_partitions_requests[0].partition_keys)
    settings = {**overrides, "images_root": str(root), "min_accuracy": min_accuracy}
    started = time.perf_counter()
    summary = run_main_job(settings, None, str(work_dir / "out"))
    run_seconds = time.perf_counter() - started
    started = time.perf_counter()
    again = run_main_job(settings, None, str(work_dir / "out"))
    return {
        "classes": len(names),
        "registered": list(tick.dynamic_partitions_requests[0].partition_keys) == names,
        "observed": len(tick.asset_events),
        "success": summary.success,
        "error": summary.error,
        "images_featurized": summary.images_featurized,
        "images_rejected": summary.images_rejected,
        "evaluated_on": summary.evaluated_on,
        "evaluation_images": summary.evaluation_images,
        "accuracy": summary.accuracy,
        "sensor_tick_s": round(tick_seconds, 2),
        "main_job_s": round(run_seconds, 1),
        "stage_seconds": summary.stage_seconds,
        "rerun_steps": again.steps,
        "rerun_s": round(time.perf_counter() - started, 2),
    }
