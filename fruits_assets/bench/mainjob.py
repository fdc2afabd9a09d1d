"""`fruits bench mainjob`: the whole main job against the bare model's time on the same images, and the driver's
memory at two data sizes (it must stay flat: the driver never holds image data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fruits_assets.bench.common import loadavg
from fruits_assets.bench.featurize import bare_model
from spark_code.photos.layout import discover_layout
from spark_code.settings import ModelSettings

SAMPLE_INTERVAL_S = 0.5
BARE_SAMPLE = 640
"""Images the bare model is timed on; its rate gives the bare time of any image count."""


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def run_sampled(command: list[str]) -> dict[str, Any]:
    """Run `fruits run ... --json`; peak RSS of its Python driver and of the Spark JVM it starts, sampled."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak_python = peak_jvm = 0
    while process.poll() is None:
        peak_python = max(peak_python, _rss_kb(process.pid))
        peak_jvm = max(peak_jvm, sum(_rss_kb(child) for child in _children(process.pid)))
        time.sleep(SAMPLE_INTERVAL_S)
    output = process.stdout.read() if process.stdout else ""
    summary = json.loads(output.strip().splitlines()[-1]) if output.strip() else {}
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "success": process.returncode == 0 and summary.get("success", False),
        "images": summary.get("images_featurized", 0) + summary.get("images_rejected", 0),
        "driver_python_peak_rss_mb": round(peak_python / 1024, 1),
        "driver_jvm_peak_rss_mb": round(peak_jvm / 1024, 1),
        "summary": summary,
    }


def bench_main_job(images_root: Path, output_dir: Path, small_classes: int, settings: ModelSettings) -> dict[str, Any]:
    """Main job on the first `small_classes` classes and on all of them; the bare model's time for the same
    images; the ratios of the issue's targets (main/bare, driver peak RSS large/small)."""
    classes = discover_layout(str(images_root)).classes
    shutil.rmtree(output_dir, ignore_errors=True)  # first runs: nothing up to date, an empty embedding store
    (output_dir / "dagster_home").mkdir(parents=True)
    os.environ["DAGSTER_HOME"] = str((output_dir / "dagster_home").resolve())  # the runs' own instance
    fruits = [sys.executable, "-m", "fruits_assets.cli", "run", "--images-root", str(images_root), "--json"]
    fruits += ["--weights", settings.weights, "--alpha", str(settings.alpha), "--image-size", str(settings.image_size)]
    fruits += [] if settings.flip_average else ["--no-flip-average"]
    result: dict[str, Any] = {"loadavg_before": loadavg(), "classes": len(classes)}
    small = run_sampled([*fruits, "--output-root", str(output_dir / "small"), "--classes", *classes[:small_classes]])
    full = run_sampled([*fruits, "--output-root", str(output_dir / "full")])
    files = sorted(path for path in (images_root / "Training").glob("*/*") if path.is_file())[:BARE_SAMPLE]
    bare_s = bare_model(files, settings)
    bare_rate = len(files) / bare_s
    result |= {
        "small": small,
        "full": full,
        "bare_model_images_per_s": round(bare_rate, 1),
        "bare_seconds_for_full": round(full["images"] / bare_rate, 1),
        "main_job_over_bare": round(full["seconds"] / (full["images"] / bare_rate), 2),
        "full_stage_seconds": full["summary"].get("stage_seconds", {}),
        "driver_python_rss_full_over_small": round(
            full["driver_python_peak_rss_mb"] / max(small["driver_python_peak_rss_mb"], 1e-9), 2
        ),
        "driver_jvm_rss_full_over_small": round(
            full["driver_jvm_peak_rss_mb"] / max(small["driver_jvm_peak_rss_mb"], 1e-9), 2
        ),
        "loadavg_after": loadavg(),
    }
    return result
