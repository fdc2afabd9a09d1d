"""MobileNetV2 embeddings of images as a Spark transform: one model per Python worker, batched inference."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from pyspark import Accumulator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from spark_code.photos.augment import augmented
from spark_code.photos.images import ImageDecodeError, preprocess
from spark_code.photos.layout import is_remote, local_path
from spark_code.photos.views import VIEW
from spark_code.settings import RANDOM_WEIGHTS, ModelSettings

_EMBED_SCHEMA = StructType([StructField("features", ArrayType(FloatType())), StructField("error", StringType())])


class Embedder:
    """MobileNetV2 as one traced function, fed batches that end with one zero image.

    The kernels compute the last image of a batch slightly differently (~1e-6) from the others. One zero image after
    every batch makes each real image's features independent of the batch size, so a photo embedded alone at predict
    time gets exactly the features it got in a training batch.
    """

    def __init__(self, infer: Callable) -> None:
        self._infer = infer

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.padded(pad_batch(list(batch)))

    def padded(self, batch: np.ndarray) -> np.ndarray:
        """Features of all but the last (zero) image of a batch made by `pad_batch`: no copy of the batch."""
        return self._infer(batch).numpy()


def pad_batch(arrays: list[np.ndarray]) -> np.ndarray:
    """The images stacked into one float32 array, followed by one zero image (one copy, no concatenation)."""
    batch = np.zeros((len(arrays) + 1, *arrays[0].shape), np.float32)
    for row, array in enumerate(arrays):
        batch[row] = array
    return batch


_EMBEDDERS: dict[ModelSettings, Embedder] = {}
"""Models built in this Python process, kept for its lifetime (Spark reuses Python workers across tasks)."""


def ship_weights(spark: SparkSession, settings: ModelSettings) -> None:
    """Send a weights file to every executor once (local path or s3:// URI); "imagenet" and random need nothing."""
    if settings.weights in ("imagenet", RANDOM_WEIGHTS):
        return
    if not is_remote(settings.weights) and not os.path.isfile(local_path(settings.weights)):
        raise FileNotFoundError(f"MobileNetV2 weights file not found: {settings.weights}")
    spark.sparkContext.addFile(settings.weights if is_remote(settings.weights) else os.path.abspath(settings.weights))


def _resolve_weights(weights: str) -> str | None:
    """On an executor, the local copy of a shipped weights file; on the driver or locally, the file itself."""
    if weights == RANDOM_WEIGHTS:
        return None
    if weights == "imagenet":
        return weights
    from pyspark import SparkFiles

    try:
        shipped = SparkFiles.get(os.path.basename(weights))
    except Exception:  # noqa: BLE001 - no SparkContext/SparkFiles root outside Spark
        shipped = ""
    if shipped and os.path.exists(shipped):
        return shipped
    if os.path.exists(weights):
        return weights
    raise FileNotFoundError(f"MobileNetV2 weights file not found: {weights}")


def _tf_threads() -> int:
    """Threads for one TensorFlow instance: the cores Spark gave this task, so workers do not oversubscribe."""
    if os.environ.get("FRUITS_TF_THREADS"):
        return int(os.environ["FRUITS_TF_THREADS"])
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, int(context.cpus())) if context is not None else 0  # 0: TensorFlow's own default


def build_embedder(settings: ModelSettings) -> Embedder:
    """Build MobileNetV2 (ImageNet weights, average pooling, 1280 outputs), mirror averaging included, as one traced
    function."""
    import tensorflow as tf

    threads = _tf_threads()
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised in this process: keep its settings
            pass
    model = tf.keras.applications.MobileNetV2(
        weights=_resolve_weights(settings.weights),
        alpha=settings.alpha,
        include_top=False,
        pooling="avg",
        input_shape=(settings.image_size, settings.image_size, 3),
    )
    size = settings.image_size

    def embed(padded: tf.Tensor) -> tf.Tensor:
        """Features of the images of a batch that ends with one zero image (see Embedder)."""
        if not settings.flip_average:
            return model(padded, training=False)[:-1]
        images = padded[:-1]
        count = tf.shape(images)[0]
        # One call on [mirrored images, images, zero image]: the batch still ends with the zero image, and a photo
        # alone costs 3 images, not 4.
        out = model(tf.concat([tf.reverse(images, axis=[2]), padded], axis=0), training=False)
        return (out[count : 2 * count] + out[:count]) / 2

    infer = tf.function(embed, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    return Embedder(infer)


def cached_embedder(settings: ModelSettings) -> Embedder:
    """The embedder for these settings, built at most once per process."""
    if settings not in _EMBEDDERS:
        _EMBEDDERS[settings] = build_embedder(settings)
    return _EMBEDDERS[settings]


def embed_contents(
    contents: list[bytes], settings: ModelSettings, views: list[int] | None = None
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Features (or None) and rejection reasons (or None) for a batch of encoded images, each as it is or, where
    `views` gives a number n >= 1, its n-th augmented view (spark_code.photos.augment)."""
    arrays: list[np.ndarray] = []
    positions: list[int] = []
    errors: list[str | None] = [None] * len(contents)
    for i, data in enumerate(contents):
        view = views[i] if views is not None else 0
        try:
            if view:
                arrays.append(augmented(bytes(data), view, settings.image_size))
            else:
                arrays.append(preprocess(bytes(data), settings.image_size))
            positions.append(i)
        except ImageDecodeError as exc:  # the file's own fault; anything else (memory, a codec, a bug) fails
            errors[i] = str(exc)
    features: list[np.ndarray | None] = [None] * len(contents)
    if arrays:
        out = cached_embedder(settings).padded(pad_batch(arrays))
        for row, i in enumerate(positions):
            features[i] = out[row]
    return features, errors


def _embed_udf(settings: ModelSettings, counter: Accumulator | None):  # noqa: ANN202 - a pandas UDF
    """The model as a UDF, marked non-deterministic so the optimizer never evaluates it twice: otherwise a filter
    on `error` (as in `accepted`) is pushed below the projection and runs the whole model once more for it."""

    @pandas_udf(_EMBED_SCHEMA)
    def embed(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        size = settings.batch_size
        for contents, views in batches:
            chunks = [
                embed_contents(list(contents[i : i + size]), settings, list(views[i : i + size]))
                for i in range(0, len(contents), size)
            ]
            if counter is not None:
                counter.add(sum(f is not None for features, _ in chunks for f in features))
            yield pd.DataFrame(
                {
                    "features": [f for features, _ in chunks for f in features],
                    "error": [e for _, errors in chunks for e in errors],
                }
            )

    return embed.asNondeterministic()


def embed_images(
    files: DataFrame,
    settings: ModelSettings,
    keep: tuple[str, ...] = ("path", "label", "split"),
    counter: Accumulator | None = None,
) -> DataFrame:
    """<keep>, content (+ VIEW) -> <keep>, features (array<float>, null if rejected), error (the rejection reason,
    else null): of a row with a VIEW n >= 1, its n-th augmented view's. Keep `content_hash` alone to fill the
    embedding store. `counter` (a Spark accumulator) counts the photos the model ran on, as tasks finish (retried
    tasks count again: it counts the model's work, not distinct photos)."""
    view = F.col(VIEW) if VIEW in files.columns else F.lit(0)
    embedded = files.withColumn("_embedding", _embed_udf(settings, counter)("content", view))
    return embedded.select(
        *keep,
        F.col("_embedding.features").alias("features"),
        F.col("_embedding.error").alias("error"),
    )


PHOTOS_PER_TASK = 512
"""Photos per embedding task: enough to amortise a task's start, few enough that every core gets work and that
progress is reported in small steps. The Spark setting PHOTOS_PER_TASK_CONF overrides it (e.g. smaller tasks, so
that a lost executor costs less work to redo)."""
PHOTOS_PER_TASK_CONF = "spark.fruits.photosPerTask"


def spread(files: DataFrame, rows: int) -> DataFrame:
    """The files to embed in tasks of about PHOTOS_PER_TASK, at least one per core and a multiple of the cores: a
    join or deduplication before it leaves them in as few partitions as their bytes fill (one, for 30 MB of photos),
    and the model would run on one core."""
    spark = files.sparkSession
    cores = spark.sparkContext.defaultParallelism
    per_task = int(spark.conf.get(PHOTOS_PER_TASK_CONF, str(PHOTOS_PER_TASK)))
    if per_task < 1:
        raise ValueError(f"{PHOTOS_PER_TASK_CONF} must be at least 1, got {per_task}")
    tasks = max(1, math.ceil(rows / per_task / cores)) * cores
    return files.repartition(tasks)


def accepted(embedded: DataFrame) -> DataFrame:
    """The embeddings contract: path, label, split, features."""
    return embedded.where(F.col("error").isNull()).select("path", "label", "split", "features")


def rejected(embedded: DataFrame) -> DataFrame:
    """The rejected-images contract: path, label, split, reason."""
    return embedded.where(F.col("error").isNotNull()).select("path", "label", "split", F.col("error").alias("reason"))
