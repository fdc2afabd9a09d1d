"""`fruits bench field --feedback`: what the photos the app's users confirm bring, and what taking them in costs.

One field split plays the users' confirmed photos (a feedback area, `<class>/<photo>`), another the photos the app
will receive, never trained on. Run 1 is the main job from nothing on the images root alone, evaluated on the held
split; run 2 takes the feedback area in on the same output root, as the next `fruits run` after users sent photos
does. Both in one invocation: the ratio of their wall times, never absolute times across machines.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from fruits_assets.bench.common import loadavg
from fruits_assets.bench.mainjob import run_sampled
from spark_code.photos.layout import join_uri
from spark_code.settings import ModelSettings

TARGETS = {"field_fruit_accuracy": 0.9, "test_accuracy": 0.993, "feedback_run_ratio": 0.3}
"""The feedback issue's targets: field fruit accuracy on the held split, the evaluation split's accuracy, and the
feedback run's wall time over the first run's, at most."""


def _figures(run: dict[str, Any], first_seconds: float) -> dict[str, Any]:
    summary = run["summary"]
    return {
        "seconds": run["seconds"],
        "ratio_to_first": round(run["seconds"] / first_seconds, 3),
        "success": run["success"],
        "error": summary.get("error"),
        "images_embedded": summary.get("images_embedded"),
        "feedback_photos": summary.get("feedback_photos"),
        "test_accuracy": summary.get("accuracy"),
        "evaluated_on": summary.get("evaluated_on"),
        "field_fruit_accuracy": summary.get("field_fruit_accuracy"),
        "field_class_accuracy": summary.get("field_accuracy"),
        "field_photos": summary.get("field_images"),
        "penalty": summary.get("classifier_reg_param"),
        "warnings": summary.get("warnings"),
        "dagster_runs": len(summary.get("steps") or []),
        "stage_seconds": summary.get("stage_seconds"),
    }


def bench_feedback(
    images_root: Path,
    field_root: str,
    feedback_split: str,
    held_split: str,
    work: Path,
    settings: ModelSettings,
    feedback_weight: float | None = None,
) -> dict[str, Any]:
    """The two runs, their figures side by side and the targets met."""
    feedback_root, held_root = join_uri(field_root, feedback_split), join_uri(field_root, held_split)
    for root in (feedback_root, held_root):
        if not os.path.isdir(root):
            raise ValueError(f"no split folder {root} (the field root must hold {feedback_split!r} and {held_split!r})")
    shutil.rmtree(work, ignore_errors=True)
    (work / "dagster_home").mkdir(parents=True)
    os.environ["DAGSTER_HOME"] = str((work / "dagster_home").resolve())  # the runs' own instance
    fruits = [sys.executable, "-m", "fruits_assets.cli", "run", "--images-root", str(images_root), "--json"]
    fruits += ["--output-root", str(work / "out"), "--field-root", held_root]
    fruits += ["--weights", settings.weights, "--alpha", str(settings.alpha), "--image-size", str(settings.image_size)]
    fruits += [] if settings.flip_average else ["--no-flip-average"]
    result: dict[str, Any] = {"loadavg_before": loadavg(), "feedback_root": feedback_root, "held_root": held_root}
    first = run_sampled(fruits)
    if not first["success"]:
        raise RuntimeError(f"the first run failed: {first['summary'].get('error') or 'see `fruits run` on its own'}")
    with_feedback = [*fruits, "--feedback-root", feedback_root]
    with_feedback += [] if feedback_weight is None else ["--feedback-weight", str(feedback_weight)]
    second = run_sampled(with_feedback)
    result["studio_only"] = _figures(first, first["seconds"])
    result["with_feedback"] = _figures(second, first["seconds"])
    after = result["with_feedback"]
    result["targets_met"] = {
        "field_fruit_accuracy_at_least_0.9": (after["field_fruit_accuracy"] or 0) >= TARGETS["field_fruit_accuracy"],
        "test_accuracy_at_least_0.993": (after["test_accuracy"] or 0) >= TARGETS["test_accuracy"],
        "feedback_run_at_most_0.3x": after["ratio_to_first"] <= TARGETS["feedback_run_ratio"],
    }
    result["loadavg_after"] = loadavg()
    return result
