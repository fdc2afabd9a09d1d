"""`fruits bench featurize` and `fruits bench scale` on 20 images: real figures, CSV rows, a PNG and a sound fit.

Each runs in a subprocess: the benches start and stop their own Spark applications (one SparkContext per process).
"""

import contextlib
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fruits_assets.bench import featurize as featurize_module
from fruits_assets.bench import ray_data
from fruits_assets.bench import scale as scale_module
from fruits_assets.bench.common import sample_files
from fruits_assets.bench.scale import ScalingFit, fit_scaling, plot_scaling
from spark_code.settings import ModelSettings
from tests.conftest import WEIGHTS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _fruits(*args: str, cwd) -> dict:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "fruits_assets.cli", "bench", *args, "--weights", str(WEIGHTS), "--alpha", "0.35"]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


OVERHEAD_S, COST_S = 12.0, 0.02
"""Known parameters of the model time = overhead + images x cost / workers, written out below, not the code's."""


def _timings(workers: list[int], images: list[int], noise_s: float, seed: int = 0) -> list[float]:
    noise = np.random.default_rng(seed).normal(0, noise_s, len(images))
    return [OVERHEAD_S + n * COST_S / w + e for n, w, e in zip(images, workers, noise, strict=True)]


def test_fit_recovers_known_overhead_and_cost_from_independent_data():
    workers = [1, 1, 1, 2, 2, 2, 4, 4, 4]
    images = [1000, 5000, 20000] * 3
    fit = fit_scaling(workers, images, _timings(workers, images, noise_s=0.5))
    assert fit.overhead_s == pytest.approx(OVERHEAD_S, abs=0.5)
    assert fit.cost_s_per_image == pytest.approx(COST_S, rel=0.005)
    exact = fit_scaling(workers, images, _timings(workers, images, noise_s=0.0))
    assert exact.overhead_s == pytest.approx(OVERHEAD_S, abs=1e-9)
    assert exact.cost_s_per_image == pytest.approx(COST_S, rel=1e-9)


def test_fit_with_one_worker_count_still_separates_overhead_from_cost():
    """Two sizes on one worker: the line through both points (the case of the CLI test below)."""
    fit = fit_scaling([1, 1], [10, 20], [5.0, 7.5])
    assert fit.overhead_s == pytest.approx(2.5) and fit.cost_s_per_image == pytest.approx(0.25)


def test_prediction_is_overhead_plus_images_times_cost_over_workers():
    assert ScalingFit(12.0, 0.02).predict(5000, 4) == pytest.approx(12.0 + 5000 * 0.02 / 4)


def test_plot_is_a_png(tmp_path):
    rows = [{"workers": 1, "images": 10, "seconds": 3.0}, {"workers": 2, "images": 10, "seconds": 2.0}]
    plot_scaling(rows, ScalingFit(1.0, 0.2), tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes().startswith(PNG_SIGNATURE)


def test_sample_is_exact_and_stable(shared_root):
    first = sample_files(shared_root, 20)
    assert len(first) == 20 and first == sample_files(shared_root, 20)


def _rounded(value: float, decimals: int) -> tuple[float, float]:
    """The interval a figure printed as round(x, decimals) comes from."""
    half = 0.5 * 10.0**-decimals
    return value - half, value + half


def _ratio_allows(ratio: float, decimals: int, numerator: tuple[float, float], denominator: tuple[float, float]):
    """Whether `ratio` (rounded to `decimals`) can be numerator / denominator, each known within an interval."""
    low, high = _rounded(ratio, decimals)
    return numerator[0] / denominator[1] <= high + 1e-9 and numerator[1] / denominator[0] >= low - 1e-9


class _StoppedSession:
    def stop(self) -> None:
        pass


def test_featurize_figures_are_computed_from_their_timings(monkeypatch, tmp_path):
    """bench_featurize with every timing replaced by a known number of seconds: each figure exactly."""
    images = 20
    monkeypatch.setattr(
        featurize_module, "sample_root", lambda root, count, target: [Path(f"{i}.jpg") for i in range(count)]
    )
    monkeypatch.setattr(featurize_module, "bare_model", lambda files, settings: 2.0)
    monkeypatch.setattr(featurize_module, "decode_and_model", lambda files, settings: 4.0)
    monkeypatch.setattr(featurize_module, "bench_session", lambda master, batch: _StoppedSession())
    monkeypatch.setattr(featurize_module, "spark_featurize", lambda spark, root, settings, output: images)
    seconds = iter([1.5, 10.0, 25.0])  # the session's start, the Spark featurization, Ray Data's
    monkeypatch.setattr(featurize_module, "timed", lambda function, *args: (next(seconds), function(*args)))
    monkeypatch.setattr(featurize_module, "_naive", lambda root, settings, output, master: (30.0, images))
    monkeypatch.setattr(ray_data, "ray_featurize", lambda files, settings, output: images)
    result = featurize_module.bench_featurize(Path("unused"), images, ModelSettings(), work_dir=tmp_path)
    expected = {
        "bare_model_images_per_s": 10.0,
        "decode_and_model_images_per_s": 5.0,
        "spark_images_per_s": 2.0,
        "spark_seconds": 10.0,
        "spark_session_start_s": 1.5,
        "spark_over_bare": 0.2,
        "naive_images_per_s": 0.7,
        "naive_seconds": 30.0,
        "speedup_over_naive": 3.0,
        "ray_images_per_s": 0.8,
        "ray_seconds": 25.0,
        "speedup_over_ray": 2.5,
    }
    assert {key: result[key] for key in expected} == expected


@pytest.mark.slow
def test_bench_featurize_prints_figures_consistent_with_its_timings(shared_root, tmp_path):
    """The bench end to end without Ray Data's pattern (`--no-ray`): Ray's local cluster and actors took 18.6 of its
    36.6 s here, more than the suite can spend on a baseline. The Ray figures' arithmetic is tested above; Ray's own
    run only by `fruits bench featurize` itself."""
    images = 20
    args = ("--images-root", str(shared_root), "--images", str(images), "--no-ray")
    result = _fruits("featurize", *args, cwd=tmp_path)
    assert result["images"] == images and "ray_seconds" not in result
    spark_s, naive_s = _rounded(result["spark_seconds"], 1), _rounded(result["naive_seconds"], 1)
    assert spark_s[1] > 0 and naive_s[1] > 0 and result["spark_session_start_s"] >= 0
    assert _ratio_allows(result["spark_images_per_s"], 1, (images, images), spark_s)
    assert _ratio_allows(result["naive_images_per_s"], 1, (images, images), naive_s)
    assert _ratio_allows(result["speedup_over_naive"], 2, naive_s, spark_s)
    bare_per_s = _rounded(result["bare_model_images_per_s"], 1)
    bare_s = (images / bare_per_s[1], images / bare_per_s[0])
    assert _ratio_allows(result["spark_over_bare"], 3, bare_s, spark_s)
    # The bare model bounds Spark: on 20 images, starting Python workers and loading the model in them alone take
    # longer than the bare model's one batch.
    assert 0 < result["spark_over_bare"] < 1
    assert result["decode_and_model_images_per_s"] > 0


def test_scale_rows_and_fit_come_from_each_runs_timing(monkeypatch, tmp_path):
    """bench_scale with each run's time given by the model formula (known parameters, no noise): the CSV rows, the
    returned runs and the reported fit."""
    workers, sizes = [1, 2, 4], [100, 400, 1600]
    monkeypatch.setattr(scale_module, "sample_root", lambda root, count, target: [])
    monkeypatch.setattr(scale_module, "_master", lambda master, count, cores, log_dir: contextlib.nullcontext(count))

    def one_run(count: int, root: Path, settings: ModelSettings, output: str) -> tuple[float, int]:
        size = int(root.name.removeprefix("images-"))  # bench_scale's sample folder for that size
        return OVERHEAD_S + size * COST_S / count, size

    monkeypatch.setattr(scale_module, "_one_run", one_run)
    result = scale_module.bench_scale(
        Path("unused"), workers, sizes, ModelSettings(), tmp_path / "out", work_dir=tmp_path
    )
    assert result["overhead_s"] == pytest.approx(OVERHEAD_S, abs=0.01)
    assert result["cost_ms_per_image"] == pytest.approx(COST_S * 1000, abs=0.01)
    with open(tmp_path / "out" / "scaling.csv") as rows:
        runs = list(csv.DictReader(rows))
    expected = [(w, n, round(OVERHEAD_S + n * COST_S / w, 2)) for w in workers for n in sizes]
    assert [(int(r["workers"]), int(r["images"]), float(r["seconds"])) for r in runs] == expected
    assert [float(r["images_per_s"]) for r in runs] == [
        round(n / (OVERHEAD_S + n * COST_S / w), 1) for w, n, _ in expected
    ]
    assert [(r["workers"], r["images"], r["seconds"]) for r in result["runs"]] == expected


@pytest.mark.slow
def test_bench_scale_writes_csv_png_and_a_finite_fit(shared_root, tmp_path, cluster):
    """On the session's standalone cluster (`--master`, as on an existing cluster): each size is its own application."""
    workers = str(len(cluster.workers))
    result = _fruits(
        "scale",
        "--images-root",
        str(shared_root),
        "--master",
        cluster.master_url,
        "--workers",
        workers,
        "--sizes",
        "10",
        "20",
        "--out-dir",
        "out",
        cwd=tmp_path,
    )
    with open(tmp_path / "out" / "scaling.csv") as rows:
        runs = list(csv.DictReader(rows))
    assert [(r["workers"], r["images"]) for r in runs] == [(workers, "10"), (workers, "20")]
    seconds = [float(r["seconds"]) for r in runs]
    assert all(s > 0 for s in seconds)
    for row, secs in zip(runs, seconds, strict=True):
        assert _ratio_allows(float(row["images_per_s"]), 1, (int(row["images"]),) * 2, _rounded(secs, 2))
    assert (tmp_path / "out" / "scaling.png").read_bytes().startswith(PNG_SIGNATURE)
    assert math.isfinite(result["overhead_s"]) and math.isfinite(result["cost_ms_per_image"])
    # One worker count, two sizes: the reported fit is the line through the two measured points.
    fit = ScalingFit(result["overhead_s"], result["cost_ms_per_image"] / 1000)
    assert fit.predict(10, int(workers)) == pytest.approx(seconds[0], abs=0.02)
    assert fit.predict(20, int(workers)) == pytest.approx(seconds[1], abs=0.02)


@pytest.mark.slow
def test_main_job_bench_samples_the_driver_and_its_child_processes():
    """`run_sampled` (used by `fruits bench mainjob`) on a driver that allocates 200 MB and starts a child holding
    300 MB: both peaks are seen, and the driver's last JSON line is read."""
    from fruits_assets.bench.mainjob import run_sampled

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


def test_incremental_bench_holds_back_a_share_of_each_class_and_one_class(tmp_path):
    from fruits_assets.bench.incremental import add_later, distinct_new_contents, prepare
    from tests.images_factory import write_image

    source = tmp_path / "source"
    for name in ("Apple", "Banana", "Cherry"):
        for i in range(20):
            write_image(source / "Training" / name / f"{i:02d}.png", size=(8, 8), seed=i)
        write_image(source / "Test" / name / "t.png", size=(8, 8), seed=99)
    work = tmp_path / "work"
    held = prepare(source, work, classes=2, new_share=0.1)
    assert held == {"classes": 2, "new_class": "Cherry", "new_photos_in_existing_classes": 4}
    assert len(list((work / "images").rglob("*.png"))) == 2 * 18 + 2
    assert sorted(p.parent.name for p in (work / "later").rglob("*.png")).count("Cherry") == 21
    # Cherry's photos are the same bytes as Apple's and Banana's (same seeds): only the held-back ones are new.
    assert distinct_new_contents(work) == 2
    add_later(work)
    assert len(list((work / "images").rglob("*.png"))) == 3 * 21 and not list((work / "later").rglob("*.png"))


def test_the_emr_estimate_follows_its_formula():
    """Figures computed by hand from the documented formula: time = overhead + photos x per-photo seconds / vCPUs."""
    from fruits_assets.bench.emr_estimate import EmrAssumptions, Measured, estimate, peer_comparison

    measured = Measured(cost_ms=20.0, overhead_s=60.0, main_job_factor=1.5, touched_ms=2.0)
    assumptions = EmrAssumptions(vcpus_per_node=4, core_speed=2.0, s3_gets_per_s_per_vcpu=100.0)
    rows = {(r["photos"], r["core_nodes"]): r for r in estimate(measured, assumptions, (1e6,), (10,))["rows"]}
    # per photo: 20 ms x 1.5 / 2 = 15 ms of work + 2 GETs x 10 ms = 35 ms, over 40 vCPUs
    first = 60 + 1e6 * 0.035 / 40
    # 1% new photos at 35 ms (read and embedded), and every photo touched unread: 2 ms / 2 = 1 ms
    incremental = 60 + (1e4 * 0.035 + 1e6 * 0.001) / 40
    assert rows[(1_000_000, 10)] == {
        "photos": 1_000_000,
        "core_nodes": 10,
        "first_run_h": round(first / 3600, 2),
        "first_run_node_hours": round(first / 3600 * 11, 1),
        "incremental_h": round(incremental / 3600, 2),
        "incremental_node_hours": round(incremental / 3600 * 11, 1),
    }
    peer = peer_comparison(measured, assumptions)  # 3 nodes of 8 vCPUs
    assert peer["estimated_minutes"] == round((60 + 67_692 * 0.035 / 24) / 60, 1)
    assert peer["peer_photos_per_s"] == round(67_692 / (83 * 60), 1)


def test_pca_refit_bench_fits_without_a_share_of_photos_or_whole_classes(spark, trained_run):
    """`fruits bench pca-refit` on the small run's embeddings (3 classes, 10 training and 4 test photos each)."""
    from fruits_assets.bench.pca_refit import bench_pca_refit

    _, output_root = trained_run
    result = bench_pca_refit(spark, str(output_root), [0.5], [1])
    refitted, share, without_class = result["rows"]
    assert result["classes"] == 3 and refitted["fitted_on_photos"] == 30 and refitted["accuracy_lost"] == 0
    assert 0 < share["fitted_on_photos"] < 30 and share["share_not_in_fit"] == 0.5
    assert without_class["classes_not_in_fit"] == 1 and without_class["fitted_on_photos"] == 20
    assert len(without_class["new_classes"]) == 1 and 0 <= without_class["errors_on_new_classes"] <= 4
    assert 0 <= without_class["errors_on_new_classes_when_refitted"] <= refitted["errors"]
    assert share["reg_param"] == without_class["reg_param"] == refitted["reg_param"]  # the penalty kept, as run
    assert all(row["evaluated_photos"] == 12 for row in result["rows"])
