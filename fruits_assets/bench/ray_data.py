"""A USERS' ALTERNATIVE in `fruits bench featurize`, not the project's code: the featurization written as Ray Data's
batch-inference guide writes it.

The guide's shape: read the files into a Dataset, preprocess with `map_batches` (stateless tasks), then run the model
with `map_batches` over a pool of actors, one model per actor, each loaded once in its constructor, and write the
results. Here the preprocessing and the model are the project's own (`spark_code.photos.images.preprocess`, the padded
`Embedder`, mirror averaging as set), so that the comparison measures the engines, not the code they run. One actor
per core, each given one CPU and one TensorFlow thread, as the project's Spark tasks are; reading the files and
writing Parquet are I/O and ask for no CPU, else the actors holding every core would leave the reads none and the
pipeline would wait forever. Ray is installed by the `bench` extra only (`pip install '.[bench]'`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import ray

from spark_code.features.embeddings import cached_embedder
from spark_code.photos.images import preprocess
from spark_code.settings import ModelSettings


def ray_featurize(files: list[Path], settings: ModelSettings, output: Path) -> int:
    """Embed the files with Ray Data (local cluster of this machine's cores) into Parquet; rows written."""
    cores = os.cpu_count() or 1
    env = {"FRUITS_TF_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False

        def decode(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            images = np.stack([preprocess(bytes(data), settings.image_size) for data in batch["bytes"]])
            return {"path": batch["path"], "image": images}

        class Embed:
            """One MobileNetV2 per actor, built once."""

            def __init__(self) -> None:
                self.model = cached_embedder(settings)

            def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                return {"path": batch["path"], "features": self.model(batch["image"])}

        io_only = {"num_cpus": 0}
        dataset = ray.data.read_binary_files([str(file) for file in files], include_paths=True, ray_remote_args=io_only)
        dataset = dataset.map_batches(decode, batch_size=settings.batch_size)
        dataset = dataset.map_batches(Embed, concurrency=cores, num_cpus=1, batch_size=settings.batch_size)
        dataset.write_parquet(str(output), ray_remote_args=io_only)
        return ray.data.read_parquet(str(output)).count()
    finally:
        ray.shutdown()
