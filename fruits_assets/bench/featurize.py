"""`fruits bench featurize`: the project's Spark featurization against the bare model that bounds it, and against
the naive notebook pattern, in one run on the same images, weights, input size and batch size."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fruits_assets.bench.common import bench_session, loadavg, sample_root, spark_featurize, timed
from fruits_assets.bench.naive import naive_featurize
from spark_code.features.embeddings import cached_embedder, embed_contents, pad_batch
from spark_code.photos.image_files import read_image_files
from spark_code.photos.images import preprocess
from spark_code.photos.layout import discover_layout
from spark_code.settings import ModelSettings

WARMUP_CALLS = 2
"""Model calls before any timing: the first traces the function, the second still allocates."""


def bare_model(files: list[Path], settings: ModelSettings) -> float:
    """(a) Seconds for the model alone on len(files) images: one decoded batch, fed again and again.

    The same `tf.function` as the pipeline (batches padded as the pipeline pads them), in this process with
    TensorFlow's default threads.
    """
    embed = cached_embedder(settings)
    size = settings.batch_size
    arrays = [preprocess(file.read_bytes(), settings.image_size) for file in files[:size]]
    batch = pad_batch(arrays)
    for _ in range(WARMUP_CALLS):
        embed.padded(batch)
    full, rest = divmod(len(files), size)
    last = pad_batch(arrays[:rest]) if rest else None
    seconds, _ = timed(lambda: [embed.padded(batch) for _ in range(full)] + ([embed.padded(last)] if rest else []))
    return seconds


def decode_and_model(files: list[Path], settings: ModelSettings) -> float:
    """(b) Seconds to read, decode and embed the files batch by batch, with the pipeline's own batch function."""
    size = settings.batch_size

    def run() -> None:
        for start in range(0, len(files), size):
            _, errors = embed_contents([file.read_bytes() for file in files[start : start + size]], settings)
            if any(errors):
                raise ValueError(f"images the benchmark cannot decode: {[e for e in errors if e]}")

    seconds, _ = timed(run)
    return seconds


def _naive(images_root: Path, settings: ModelSettings, output: str, master: str) -> tuple[float, int]:
    """The baseline in a Spark application of its own, so its Python workers inherit nothing from the project's,
    with Spark's default settings as a notebook has them (4 MB open cost per file, Arrow batches of 10,000 rows)."""
    spark = bench_session(master, settings.batch_size, pipeline_conf=False)
    try:
        layout = discover_layout(str(images_root))

        def run() -> int:
            files = read_image_files(spark, layout, layout.classes)
            naive_featurize(files, settings).write.mode("overwrite").partitionBy("label").parquet(output)
            return spark.read.parquet(output).count()

        return timed(run)
    finally:
        spark.stop()


def bench_featurize(
    images_root: Path,
    images: int,
    settings: ModelSettings,
    work_dir: Path | None = None,
    master: str = "local[*]",
    naive: bool = True,
    ray: bool = True,
) -> dict[str, Any]:
    """Images/s of (a) the bare model, (b) decoding + model in one process, (c) the project's Spark featurization
    end to end and, unless switched off, of the naive notebook pattern and of Ray Data's batch-inference pattern;
    (c)/(a) and the project's speed-up over each. Without a work_dir the samples and outputs go to a temporary folder
    that is removed afterwards."""
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="fruits-bench-featurize-") as temporary:
            return bench_featurize(images_root, images, settings, Path(temporary), master, naive, ray)
    work = Path(work_dir)
    files = sample_root(images_root, images, work / "images")
    result: dict[str, Any] = {
        "images": images,
        "alpha": settings.alpha,
        "weights": settings.weights,
        "image_size": settings.image_size,
        "batch_size": settings.batch_size,
        "master": master,
        "loadavg_before": loadavg(),
    }
    bare_s = bare_model(files, settings)
    decode_s = decode_and_model(files, settings)
    start_s, spark = timed(bench_session, master, settings.batch_size)
    try:
        spark_s, rows = timed(spark_featurize, spark, work / "images", settings, str(work / "embeddings"))
    finally:
        spark.stop()
    if rows != images:
        raise RuntimeError(f"the Spark featurization wrote {rows} embeddings for {images} images")
    result |= {
        "bare_model_images_per_s": round(images / bare_s, 1),
        "decode_and_model_images_per_s": round(images / decode_s, 1),
        "spark_images_per_s": round(images / spark_s, 1),
        "spark_seconds": round(spark_s, 1),
        "spark_session_start_s": round(start_s, 1),
        "spark_over_bare": round(bare_s / spark_s, 3),
    }
    if naive:
        naive_s, naive_rows = _naive(work / "images", settings, str(work / "naive"), master)
        if naive_rows != images:
            raise RuntimeError(f"the naive featurization wrote {naive_rows} embeddings for {images} images")
        result |= {
            "naive_images_per_s": round(images / naive_s, 1),
            "naive_seconds": round(naive_s, 1),
            "speedup_over_naive": round(naive_s / spark_s, 2),
        }
    if ray:
        result |= _ray(files, settings, work / "ray", spark_s)
    result["loadavg_after"] = loadavg()
    return result


def _ray(files: list[Path], settings: ModelSettings, output: Path, spark_s: float) -> dict[str, Any]:
    """Ray Data's pattern on the same files and settings (the `bench` extra installs Ray), or why it did not run."""
    try:
        from fruits_assets.bench.ray_data import ray_featurize
    except ImportError as exc:
        return {"ray": f"not run: {exc} (pip install '.[bench]')"}
    ray_s, rows = timed(ray_featurize, files, settings, output)
    if rows != len(files):
        raise RuntimeError(f"the Ray Data featurization wrote {rows} embeddings for {len(files)} images")
    return {
        "ray_images_per_s": round(len(files) / ray_s, 1),
        "ray_seconds": round(ray_s, 1),
        "speedup_over_ray": round(ray_s / spark_s, 2),
    }
