"""`fruits bench accuracy`: the operating point (input size, mirror averaging) chosen by measurement.

For each input size, every photo is embedded once, in one model call on [its mirror image, itself, a zero image] as
the pipeline's mirror averaging does, which gives both settings of that size: the photo's own embedding (mirror
averaging off) and the mean of the two (on), bit for bit what the pipeline computes. The embeddings are kept as
Parquet under the work folder and reused by every later run. Each setting then goes through the pipeline's own
PCA (the settings' variance target, at most `max_k` components) and classifier (penalty chosen by validation), fitted
on the training photos less a hold-out; each is evaluated on the evaluation split and on that hold-out, photos the
fits never saw. Model work per photo is the bare model's seconds per image at that size (measured in this run)
times the passes per photo. The cheapest setting reaching the accuracy target on the evaluation split is printed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, FloatType, StructField, StructType

from fruits_assets.bench.common import loadavg, sample_files
from fruits_assets.bench.featurize import bare_model
from spark_code.features.embeddings import cached_embedder, pad_batch, ship_weights, spread
from spark_code.models.classifier import evaluate, labels_of, score, train_classifier
from spark_code.models.pca import apply_pca, fit_pca
from spark_code.photos.image_files import read_image_files
from spark_code.photos.images import preprocess
from spark_code.photos.layout import discover_layout
from spark_code.photos.splits import EVALUATE, ROLE, TRAIN, resolve_roles, split_names, with_roles
from spark_code.settings import ModelSettings

HOLDOUT = "holdout"
"""The role of the training photos kept out of every fit (a hash of the path decides, the same for every setting)."""
_BOTH = StructType([StructField("plain", ArrayType(FloatType())), StructField("mirrored", ArrayType(FloatType()))])


def _both_udf(settings: ModelSettings):  # noqa: ANN202 - a pandas UDF
    """Each photo's embedding and its mirror image's, from the one model call mirror averaging makes."""
    plain_settings = replace(settings, flip_average=False)

    @pandas_udf(_BOTH)
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        model = cached_embedder(plain_settings)
        for contents in batches:
            plain, mirrored = [], []
            for start in range(0, len(contents), settings.batch_size):
                arrays = [
                    preprocess(bytes(c), settings.image_size) for c in contents[start : start + settings.batch_size]
                ]
                out = model.padded(pad_batch([a[:, ::-1] for a in arrays] + arrays))
                count = len(arrays)
                plain.extend(out[count : 2 * count])
                mirrored.extend(out[:count])
            yield pd.DataFrame({"plain": plain, "mirrored": mirrored})

    return embed.asNondeterministic()


def embeddings_of_size(spark: SparkSession, images_root: Path, settings: ModelSettings, work: Path) -> DataFrame:
    """path, label, split, plain, mirrored of every photo at this input size, computed once (kept under `work`)."""
    folder = work / f"embeddings-{settings.image_size}"
    if not (folder / "_SUCCESS").exists():
        layout = discover_layout(str(images_root))
        ship_weights(spark, settings)
        files = read_image_files(spark, layout, layout.classes)
        embedded = spread(files, files.count()).withColumn("both", _both_udf(settings)("content"))
        embedded.select("path", "label", "split", "both.plain", "both.mirrored").write.mode("overwrite").parquet(
            str(folder)
        )
    return spark.read.parquet(str(folder))


def with_holdout(rows: DataFrame, roles: Any, share: float) -> DataFrame:
    """The pipeline's roles, with `share` of the training photos of each class (by a hash of the path) as HOLDOUT."""
    held = (F.pmod(F.xxhash64("path"), F.lit(10_000)) / 10_000.0) < F.lit(share)
    roled = with_roles(rows, roles)
    return roled.withColumn(ROLE, F.when((F.col(ROLE) == TRAIN) & held, F.lit(HOLDOUT)).otherwise(F.col(ROLE)))


def evaluate_setting(rows: DataFrame, variance: float, max_k: int) -> dict[str, Any]:
    """The pipeline's PCA and classifier fitted on the TRAIN rows (`features`); accuracy on EVALUATE and HOLDOUT."""
    started = time.perf_counter()
    fit = fit_pca(rows.where(F.col(ROLE) == TRAIN), variance, None, max_k)
    reduced = apply_pca(fit.model, rows.drop(ROLE), "bench").join(rows.select("path", ROLE), "path").persist()
    trained = train_classifier(reduced)
    labels = labels_of(trained.model)
    found = {}
    for role in (EVALUATE, HOLDOUT):
        result = evaluate(score(trained.model, reduced.where(F.col(ROLE) == role).drop(ROLE)), labels)
        found[role] = result
    reduced.unpersist()
    return {
        "k": fit.k,
        "explained_variance": round(fit.explained_variance, 4),
        "reg_param": trained.reg_param,
        "test_accuracy": round(found[EVALUATE].accuracy, 5),
        "test_macro_f1": round(found[EVALUATE].macro_f1, 5),
        "test_errors": found[EVALUATE].images - found[EVALUATE].correct,
        "holdout_accuracy": round(found[HOLDOUT].accuracy, 5) if found[HOLDOUT].images else None,
        "holdout_photos": found[HOLDOUT].images,
        "fit_seconds": round(time.perf_counter() - started, 1),
    }


def bench_accuracy(
    spark: SparkSession,
    images_root: Path,
    settings: ModelSettings,
    sizes: list[int],
    work: Path,
    target: float = 0.993,
    max_k: int = 100,
    variance: float = 0.95,
    holdout: float = 0.2,
) -> dict[str, Any]:
    """The table of every (size, mirror averaging) setting and the cheapest one reaching `target`."""
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"loadavg_before": loadavg(), "target_test_accuracy": target, "max_k": max_k}
    sample = sample_files(images_root, settings.batch_size)
    rows = []
    for size in sizes:
        sized = replace(settings, image_size=size, flip_average=False)
        seconds_per_image = bare_model(sample, sized) / len(sample)
        embeddings = embeddings_of_size(spark, images_root, sized, work)
        roles = resolve_roles(split_names(embeddings), "", "", "", holdout)
        roled = with_holdout(embeddings, roles, holdout).persist()
        for flip in (False, True):
            # float32 sum, halved exactly: the pipeline's (plain + mirrored) / 2
            mean = F.zip_with("plain", "mirrored", lambda p, m: ((p + m) / 2).cast("float"))
            chosen = roled.withColumn("features", mean if flip else F.col("plain"))
            passes = 2 if flip else 1
            row = {"image_size": size, "flip_average": flip, "model_passes": passes}
            row["model_ms_per_photo"] = round(seconds_per_image * passes * 1000, 2)
            row |= evaluate_setting(chosen.select("path", "label", "split", "features", ROLE), variance, max_k)
            rows.append(row)
            print(row, flush=True)  # noqa: T201 - progress of a long benchmark
        roled.unpersist()
    reference = next((r for r in rows if r["image_size"] == 224 and r["flip_average"]), rows[-1])
    for row in rows:
        row["model_work_vs_224_mirrored"] = round(row["model_ms_per_photo"] / reference["model_ms_per_photo"], 3)
    reaching = [r for r in rows if r["test_accuracy"] >= target and r["k"] <= max_k]
    result["rows"] = rows
    result["cheapest_reaching_target"] = min(reaching, key=lambda r: r["model_ms_per_photo"]) if reaching else None
    result["loadavg_after"] = loadavg()
    return result
