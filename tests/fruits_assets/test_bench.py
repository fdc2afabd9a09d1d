"""`fruits bench featurize` and `fruits bench scale` on 20 images: real figures, CSV rows, a PNG and a sound fit.

Each runs in a subprocess: the benches start and stop their own Spark applications (one SparkContext per process).
"""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np

from fruits_assets.bench_common import sample_files
from fruits_assets.bench_scale import ScalingFit, fit_scaling, plot_scaling
from tests.conftest import WEIGHTS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _fruits(*args: str, cwd) -> dict:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "fruits_assets.cli", "bench", *args, "--weights", str(WEIGHTS), "--alpha", "0.35"]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fit_recovers_known_overhead_and_cost():
    truth = ScalingFit(overhead_s=12.0, cost_s_per_image=0.02)
    workers, images = [1, 1, 1, 2, 2, 2], [1000, 5000, 20000, 1000, 5000, 20000]
    noise = np.random.default_rng(0).normal(0, 0.05, len(images))
    seconds = [truth.predict(n, w) + e for n, w, e in zip(images, workers, noise, strict=True)]
    fit = fit_scaling(workers, images, seconds)
    assert abs(fit.overhead_s - 12.0) < 0.2 and abs(fit.cost_s_per_image - 0.02) < 1e-4


def test_plot_is_a_png(tmp_path):
    rows = [{"workers": 1, "images": 10, "seconds": 3.0}, {"workers": 2, "images": 10, "seconds": 2.0}]
    plot_scaling(rows, ScalingFit(1.0, 0.2), tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes().startswith(PNG_SIGNATURE)


def test_sample_is_exact_and_stable(shared_root):
    first = sample_files(shared_root, 20)
    assert len(first) == 20 and first == sample_files(shared_root, 20)


def test_bench_featurize_prints_positive_figures(shared_root, tmp_path):
    result = _fruits("featurize", "--images-root", str(shared_root), "--images", "20", cwd=tmp_path)
    assert result["images"] == 20
    for key in (
        "bare_model_images_per_s",
        "decode_and_model_images_per_s",
        "spark_images_per_s",
        "spark_over_bare",
        "naive_images_per_s",
        "speedup_over_naive",
    ):
        assert result[key] > 0, key


def test_bench_scale_writes_csv_png_and_a_finite_fit(shared_root, tmp_path):
    result = _fruits(
        "scale",
        "--images-root",
        str(shared_root),
        "--workers",
        "1",
        "--sizes",
        "10",
        "20",
        "--out-dir",
        "out",
        cwd=tmp_path,
    )
    with open(tmp_path / "out" / "scaling.csv") as rows:
        runs = list(csv.DictReader(rows))
    assert [(r["workers"], r["images"]) for r in runs] == [("1", "10"), ("1", "20")]
    assert all(float(r["seconds"]) > 0 for r in runs)
    assert (tmp_path / "out" / "scaling.png").read_bytes().startswith(PNG_SIGNATURE)
    assert math.isfinite(result["overhead_s"]) and math.isfinite(result["cost_ms_per_image"])


def test_main_job_bench_samples_the_driver_and_its_child_processes():
    """`run_sampled` (used by `fruits bench mainjob`) on a driver that allocates 200 MB and starts a child holding
    300 MB: both peaks are seen, and the driver's last JSON line is read."""
    from fruits_assets.bench_mainjob import run_sampled

    child = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"
    driver = (
        "import json, subprocess, sys, time\n"
        "a = bytearray(200 * 2**20); a[::4096] = b'x' * len(a[::4096])\n"
        f"subprocess.run([sys.executable, '-c', {child!r}])\n"
        "print(json.dumps({'success': True, 'images_featurized': 7, 'images_rejected': 1}))\n"
    )
    result = run_sampled([sys.executable, "-c", driver])
    assert result["success"] and result["images"] == 8
    assert 200 <= result["driver_python_peak_rss_mb"] < 300
    assert 300 <= result["driver_jvm_peak_rss_mb"] < 400
