"""`fruits bench pca-refit`: what keeping the PCA costs in accuracy when new photos arrive, to choose the refit share.

On the embeddings of a finished main job (its output root), for each share s: the PCA is fitted on the training
photos less a share s of each class (chosen by a hash of the path: "the photos that arrived since the fit"), every
photo is projected with it, and the classifier is trained and evaluated exactly as the pipeline does. The row s=0 is
the PCA refitted on every photo. The accuracy lost at s is what the refit share s risks. With `new_classes`, the
same for a PCA fitted without n whole classes (chosen by a hash of their names): what keeping the PCA when a class
appears would risk, overall and on those classes' photos.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_code.models.classifier import Evaluation, evaluate, labels_of, score, train_classifier
from spark_code.models.pca import apply_pca, fit_pca
from spark_code.photos.splits import EVALUATE, ROLE, TRAIN, resolve_roles, split_names, with_roles
from spark_code.storage.class_tables import WHOLE, published_stamps, read_classes


def _held_out_classes(classes: list[str], count: int) -> list[str]:
    """`count` classes chosen by a hash of their names: "the classes that arrived since the fit"."""
    return sorted(sorted(classes, key=lambda name: hashlib.sha256(name.encode()).hexdigest())[:count])


def _errors_on(result: Evaluation, classes: list[str]) -> int:
    """Test photos of these classes given another label."""
    return sum(count for (true, guess), count in result.confusion.items() if true in classes and true != guess)


def bench_pca_refit(
    spark: SparkSession, output_root: str, shares: list[float], new_classes: Sequence[int] = (), max_k: int = 100
) -> dict[str, Any]:
    """One row per case: the PCA refitted on every training photo, fitted without a share of each class's photos,
    or without whole classes. The first row's classifier searches its penalty; the others refit that penalty, as
    the pipeline does when the photos changed by less than the search share."""
    base = f"{output_root.rstrip('/')}/image_embeddings"
    classes = sorted(set(published_stamps(base)) - {WHOLE})
    embeddings = read_classes(spark, base, classes).persist()
    roles = resolve_roles(split_names(embeddings), "", "", "", 0.2)
    rows = with_roles(embeddings, roles).persist()
    cases = [("share", 0.0), *[("share", share) for share in shares], *[("classes", n) for n in new_classes]]
    results = []
    reg_param = None
    first = None
    for kind, amount in cases:
        started = time.perf_counter()
        held = _held_out_classes(classes, int(amount)) if kind == "classes" else []
        if kind == "share":
            arrived = (F.pmod(F.xxhash64("path"), F.lit(10_000)) / 10_000.0) < F.lit(amount)
        else:
            arrived = F.col("label").isin(held)
        fitted_on = rows.where((F.col(ROLE) == TRAIN) & ~arrived)
        fit = fit_pca(fitted_on, 0.95, None, max_k)
        reduced = apply_pca(fit.model, rows.drop(ROLE), "bench").persist()
        trained = train_classifier(with_roles(reduced, roles), kept_reg_param=reg_param)
        reg_param = trained.reg_param
        evaluated = with_roles(reduced, roles).where(F.col(ROLE) == EVALUATE).drop(ROLE)
        result = evaluate(score(trained.model, evaluated), labels_of(trained.model))
        row = {
            "share_not_in_fit" if kind == "share" else "classes_not_in_fit": amount,
            "fitted_on_photos": fit.training_rows,
            "k": fit.k,
            "reg_param": trained.reg_param,
            "accuracy": round(result.accuracy, 5),
            "errors": result.images - result.correct,
            "macro_f1": round(result.macro_f1, 5),
            "evaluated_photos": result.images,
        }
        if held:
            row |= {
                "new_classes": held,
                "errors_on_new_classes": _errors_on(result, held),
                "errors_on_new_classes_when_refitted": _errors_on(first, held),
            }
        first = first or result
        results.append(row | {"seconds": round(time.perf_counter() - started, 1)})
        reduced.unpersist()
    embeddings.unpersist()
    rows.unpersist()
    refitted = results[0]
    for row in results:
        row["accuracy_lost"] = round(refitted["accuracy"] - row["accuracy"], 5)
    return {"classes": len(classes), "evaluated_on": roles.describe_evaluation(), "rows": results}
