"""THE BASELINE of `fruits bench featurize`, not the project's code: featurization as a typical notebook writes it.

A pandas UDF that builds MobileNetV2 again for every partition, decodes with Pillow, calls `model.predict` on each
Arrow batch and leaves TensorFlow's thread pools at their defaults in every Spark task. It is what the project's
`spark_code.features.embeddings` is measured against, so it is kept as plain as the notebooks it stands for.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, FloatType

from spark_code.settings import RANDOM_WEIGHTS, ModelSettings


def naive_featurize(files: DataFrame, settings: ModelSettings) -> DataFrame:
    """path, label, content -> path, label, features, the notebook way."""
    weights = None if settings.weights == RANDOM_WEIGHTS else settings.weights
    size = settings.image_size

    @pandas_udf(ArrayType(FloatType()))
    def featurize(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import tensorflow as tf
        from PIL import Image

        model = tf.keras.applications.MobileNetV2(
            weights=weights, alpha=settings.alpha, include_top=False, pooling="avg", input_shape=(size, size, 3)
        )
        for contents in batches:
            images = np.stack(
                [np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((size, size))) for data in contents]
            ).astype(np.float32)
            inputs = tf.keras.applications.mobilenet_v2.preprocess_input(images)
            features = model.predict(inputs, verbose=0)
            if settings.flip_average:  # the same model work as the project's: the mirror image's embedding too
                features = (features + model.predict(inputs[:, :, ::-1], verbose=0)) / 2
            yield pd.Series(list(features))

    return files.select("path", "label", featurize("content").alias("features"))
