"""`fruits bench pca-refit`: what keeping the PCA costs in accuracy when new photos arrive, to choose the refit share.

On the embeddings of a finished main job (its output root), for each share s: the PCA is fitted on the training
photos less a share s of each class (chosen by a hash of the path: "the photos that arrived since the fit"), every
photo is projected with it, and the classifier is trained and evaluated exactly as the pipeline does. The row s=0 is
the PCA refitted on every photo. The accuracy lost at s is what the refit share s risks.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_code.classifier import evaluate, labels_of, score, train_classifier
from spark_code.parquet_store import read_classes
from spark_code.pca import apply_pca, fit_pca
from spark_code.publish import pointers
from spark_code.splits import EVALUATE, ROLE, TRAIN, resolve_roles, split_names, with_roles


def bench_pca_refit(spark: SparkSession, output_root: str, shares: list[float], max_k: int = 100) -> dict[str, Any]:
    base = f"{output_root.rstrip('/')}/image_embeddings"
    classes = sorted(unquote(part.split("=", 1)[1]) for part in pointers(base))
    embeddings = read_classes(spark, base, classes).persist()
    roles = resolve_roles(split_names(embeddings), "", "", "", 0.2)
    rows = with_roles(embeddings, roles).persist()
    results = []
    for share in [0.0, *shares]:
        started = time.perf_counter()
        arrived = (F.pmod(F.xxhash64("path"), F.lit(10_000)) / 10_000.0) < F.lit(share)
        fitted_on = rows.where((F.col(ROLE) == TRAIN) & ~arrived)
        fit = fit_pca(fitted_on, 0.95, None, max_k)
        reduced = apply_pca(fit.model, rows.drop(ROLE), "bench").persist()
        trained = train_classifier(with_roles(reduced, roles))
        predictions = score(trained.model, with_roles(reduced, roles).where(F.col(ROLE) == EVALUATE).drop(ROLE))
        result = evaluate(predictions, labels_of(trained.model))
        reduced.unpersist()
        results.append(
            {
                "share_not_in_fit": share,
                "fitted_on_photos": fit.training_rows,
                "k": fit.k,
                "accuracy": round(result.accuracy, 5),
                "macro_f1": round(result.macro_f1, 5),
                "evaluated_photos": result.images,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    embeddings.unpersist()
    rows.unpersist()
    refitted = results[0]["accuracy"]
    for row in results:
        row["accuracy_lost"] = round(refitted - row["accuracy"], 5)
    return {"classes": len(classes), "evaluated_on": roles.describe_evaluation(), "rows": results}
