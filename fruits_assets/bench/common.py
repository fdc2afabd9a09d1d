"""What `fruits bench featurize` and `fruits bench scale` share: an exact-size image sample, a Spark session like
the pipeline's, and the project's featurization from image files to embeddings Parquet."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import requests
from pyspark.sql import SparkSession

from spark_code.features.embeddings import accepted, embed_images, ship_weights, spread
from spark_code.photos.image_files import read_image_files
from spark_code.photos.layout import discover_layout
from spark_code.settings import ModelSettings, one_blas_thread_here, spark_conf


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages: on a shared machine a figure means little without them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def wait_until_healthy(url: str, seconds: float = 180) -> None:
    """Wait for a `fruits serve` started by a bench to answer /healthz with 200 (it loads its model first)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"fruits serve did not become healthy in {seconds:.0f} s")


def sample_files(images_root: Path, count: int) -> list[Path]:
    """The first `count` images of `<root>/<split>/<class>/`, classes in order, so a size always means the same set."""
    files = [
        file
        for split in images_root.iterdir()
        if split.is_dir()
        for folder in split.iterdir()
        if folder.is_dir()
        for file in folder.iterdir()
        if file.is_file() and not file.name.startswith((".", "_"))
    ]
    if len(files) < count:
        raise ValueError(f"{images_root} holds {len(files)} images, fewer than the {count} asked for")
    return sorted(files, key=lambda f: (f.parent.name, f.parent.parent.name, f.name))[:count]


def sample_root(images_root: Path, count: int, target: Path) -> list[Path]:
    """An images root of exactly `count` images under `target`, hard-linked (copied across file systems).

    Benchmarks then read it through the pipeline's own `read_image_files`, and every stage sees the same files.
    """
    if target.exists():
        shutil.rmtree(target)
    linked = []
    for source in sample_files(images_root, count):
        destination = target / source.parent.parent.name / source.parent.name / source.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, destination)
        except OSError:
            shutil.copyfile(source, destination)
        linked.append(destination)
    return linked


def bench_session(
    master: str, batch_size: int, extra: dict[str, str] | None = None, pipeline_conf: bool = True
) -> SparkSession:
    """A Spark session with the pipeline's settings (or Spark's defaults, as a notebook has them); Python workers
    run this interpreter."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if pipeline_conf:
        one_blas_thread_here()
    builder = SparkSession.builder.master(master).appName("fruits-bench")
    conf = {
        **(spark_conf(batch_size, master) if pipeline_conf else {}),
        "spark.driver.memory": "2g",
        "spark.ui.showConsoleProgress": "false",
        **(extra or {}),
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def spark_featurize(spark: SparkSession, images_root: Path, settings: ModelSettings, output: str) -> int:
    """The project's featurization, read -> embeddings Parquet (by label, as the pipeline stores it); rows written."""
    layout = discover_layout(str(images_root))
    ship_weights(spark, settings)
    files = read_image_files(spark, layout, layout.classes)
    files = spread(files, files.count())  # over every core, as the pipeline spreads the photos it embeds
    accepted(embed_images(files, settings)).write.mode("overwrite").partitionBy("label").parquet(output)
    return spark.read.parquet(output).count()


def timed(function, *args) -> tuple[float, object]:  # noqa: ANN001 - any callable
    """Seconds taken by `function(*args)`, and its result."""
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result
