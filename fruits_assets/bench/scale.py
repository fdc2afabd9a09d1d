"""`fruits bench scale`: the featurization's wall time against data size and worker count, on a Spark standalone
cluster started on 127.0.0.1 (or an existing cluster's master URL, e.g. EMR's), with a fit of
time = overhead + images x cost / workers, written as a CSV and a PNG plot."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from fruits_assets.bench.common import bench_session, loadavg, sample_root, spark_featurize, timed  # noqa: E402
from fruits_assets.bench.standalone_cluster import standalone_cluster  # noqa: E402
from spark_code.settings import ModelSettings  # noqa: E402

CSV_COLUMNS = ["workers", "images", "seconds", "images_per_s", "loadavg"]


@dataclass(frozen=True)
class ScalingFit:
    """time = overhead_s + images * cost_s_per_image / workers, least squares over every run."""

    overhead_s: float
    cost_s_per_image: float

    def predict(self, images: float, workers: float) -> float:
        return self.overhead_s + images * self.cost_s_per_image / workers


def fit_scaling(workers: list[int], images: list[int], seconds: list[float]) -> ScalingFit:
    """Fixed overhead and per-image cost (for one worker) from measured wall times."""
    design = np.column_stack([np.ones(len(seconds)), np.asarray(images, float) / np.asarray(workers, float)])
    (overhead, cost), *_ = np.linalg.lstsq(design, np.asarray(seconds, float), rcond=None)
    return ScalingFit(float(overhead), float(cost))


@contextmanager
def _master(master: str | None, workers: int, cores_per_worker: int, log_dir: Path) -> Iterator[str]:
    """The given master URL as is, or a fresh local standalone cluster with `workers` workers."""
    if master:
        yield master
        return
    with standalone_cluster(workers, log_dir, cores_per_worker=cores_per_worker) as cluster:
        yield cluster.master_url


def _one_run(master_url: str, images_root: Path, settings: ModelSettings, output: str) -> tuple[float, int]:
    """Wall time of one featurization as its own application: session start, executors and model loads included."""

    def run() -> int:
        spark = bench_session(master_url, settings.batch_size, {"spark.executor.memory": "1g"})
        try:
            return spark_featurize(spark, images_root, settings, output)
        finally:
            spark.stop()

    return timed(run)


def plot_scaling(rows: list[dict[str, float]], fit: ScalingFit, png: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    largest = max(row["images"] for row in rows)
    for count in sorted({row["workers"] for row in rows}):
        mine = [row for row in rows if row["workers"] == count]
        points = ax.plot([r["images"] for r in mine], [r["seconds"] for r in mine], "o", label=f"{count} worker(s)")
        sizes = np.linspace(0, largest, 50)
        ax.plot(sizes, [fit.predict(s, count) for s in sizes], "-", color=points[0].get_color())
    ax.set_xlabel("images")
    ax.set_ylabel("wall time (s)")
    ax.set_title(f"fit: {fit.overhead_s:.1f} s + images x {fit.cost_s_per_image * 1000:.1f} ms / workers")
    ax.legend()
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)


def bench_scale(
    images_root: Path,
    workers: list[int],
    sizes: list[int],
    settings: ModelSettings,
    out_dir: Path,
    master: str | None = None,
    cores_per_worker: int = 1,
    work_dir: Path | None = None,
) -> dict[str, object]:
    """Featurize each size on each worker count; write scaling.csv and scaling.png under out_dir; return the fit.

    The samples and embeddings go under work_dir (default: a temporary folder, removed afterwards), which every
    executor must see.
    """
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="fruits-bench-scale-") as temporary:
            return bench_scale(
                images_root, workers, sizes, settings, out_dir, master, cores_per_worker, Path(temporary)
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir)
    roots = {size: work / f"images-{size}" for size in sizes}
    for size, root in roots.items():
        sample_root(images_root, size, root)
    rows = []
    for count in workers:
        with _master(master, count, cores_per_worker, work / f"cluster-{count}") as url:
            for size in sizes:
                load = loadavg()
                seconds, written = _one_run(url, roots[size], settings, str(work / f"embeddings-{count}-{size}"))
                if written != size:
                    raise RuntimeError(f"{written} embeddings written for {size} images")
                rows.append(
                    {
                        "workers": count,
                        "images": size,
                        "seconds": round(seconds, 2),
                        "images_per_s": round(size / seconds, 1),
                        "loadavg": load,
                    }
                )
    fit = fit_scaling([r["workers"] for r in rows], [r["images"] for r in rows], [r["seconds"] for r in rows])
    with (out_dir / "scaling.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot_scaling(rows, fit, out_dir / "scaling.png")
    return {
        "runs": rows,
        "overhead_s": round(fit.overhead_s, 2),
        "cost_ms_per_image": round(fit.cost_s_per_image * 1000, 2),
        "csv": str(out_dir / "scaling.csv"),
        "png": str(out_dir / "scaling.png"),
    }
