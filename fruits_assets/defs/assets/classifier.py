"""The app's brain: the fruit classifier trained on the reduced features, and its evaluation."""

import json
from collections.abc import Iterator
from dataclasses import asdict

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetObservation,
    MetadataValue,
    Output,
    asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_assets.defs.assets.common import SPARK_RETRY, StepLauncherParam, fresh_spark, skipped, split_roles
from fruits_assets.defs.automation import AFTER_UPSTREAM_DECISIONS, code_version
from fruits_assets.defs.checks import (
    FEEDBACK_LABELS_CHECK,
    FEEDBACK_SENDERS_CHECK,
    check_feedback_labels,
    check_feedback_senders,
)
from fruits_assets.defs.io_managers import PUBLISHED_CLASSES_ONLY
from fruits_assets.defs.plots import confusion_matrix_plot
from fruits_assets.defs.resources import FruitsSettings, PublishedOutputs
from fruits_assets.defs.staleness import (
    COMPUTED_FROM,
    INPUTS,
    classifier_inputs,
    evaluation_stamp,
)
from fruits_assets.defs.steps import asset_step
from spark_code.models.classifier import (
    NotEnoughClassesError,
    evaluate,
    labels_of,
    score,
    train_classifier,
)
from spark_code.models.ml_models import PCA_VERSION, VERSION, MismatchedModelsError, ModelArtifact, published_notes
from spark_code.models.pca import classes_not_projected_by
from spark_code.models.penalty_search import SEARCH, search_reason
from spark_code.photos.splits import EVALUATE, FEEDBACK, ROLE, TRAIN, VALIDATE, rows_with_role, with_roles
from spark_code.storage.class_tables import WHOLE, input_stamps
from spark_code.storage.feedback import FeedbackStore

ACCURACY_CHECK = AssetCheckSpec(
    "accuracy_above_floor",
    asset="classifier_evaluation",
    description="Top-1 accuracy on the evaluation images is at least the settings' min_accuracy.",
)


def require_projected_by(reduced: DataFrame, version: str | None, which: str) -> None:
    """Refuse reduced features that another PCA projected (a run stopped between the PCA and its features)."""
    stale = classes_not_projected_by(reduced, version)
    if stale:
        raise MismatchedModelsError(
            f"reduced features of {', '.join(stale)} were not projected by {which} (version {version}): "
            "materialize reduced_features for every class again"
        )


@asset(
    group_name="models",
    io_manager_key="spark_model_io_manager",
    ins={"reduced_features": AssetIn(metadata={PUBLISHED_CLASSES_ONLY: True}), "pca_model": AssetIn()},
    kinds={"spark"},
    check_specs=[FEEDBACK_LABELS_CHECK, FEEDBACK_SENDERS_CHECK],
    retry_policy=SPARK_RETRY,
    output_required=False,
    automation_condition=AFTER_UPSTREAM_DECISIONS,
    code_version=code_version("fruit_classifier"),
)
@asset_step
def fruit_classifier(
    context: AssetExecutionContext,
    step_launcher: StepLauncherParam,
    reduced_features: DataFrame,
    pca_model: ModelArtifact,
    settings: FruitsSettings,
    pyspark: LazyPySparkResource,
    outputs: PublishedOutputs,
) -> Iterator[Output[ModelArtifact] | AssetObservation | AssetCheckResult]:
    """Logistic regression (Spark ML) on every class's PCA features, its penalty chosen on validation data; never
    published when degenerate. Warns of feedback photos their neighbours contradict and of senders flooding a class."""
    # Skipped (an observation with the reason) below two classes with training images.
    fresh_spark(pyspark, "fruit_classifier")
    pca_version = pca_model.notes.get(VERSION)
    inputs = classifier_inputs(input_stamps(reduced_features), settings)
    require_projected_by(reduced_features, pca_version, "the published PCA")
    roles = split_roles(settings, reduced_features)
    rows = with_roles(reduced_features, roles)
    from_feedback = F.sum((F.col("split") == FEEDBACK).cast("int")).alias("feedback")
    fitted_on = rows.where(F.col(ROLE).isin(TRAIN, VALIDATE)).groupBy("label").agg(F.count("*"), from_feedback)
    fitted_on = fitted_on.collect()  # one row per class
    training_rows = {row["label"]: row["count(1)"] for row in fitted_on}
    feedback = {row["label"]: row["feedback"] for row in fitted_on if row["feedback"]}
    records = FeedbackStore(settings.feedback_root).records() if settings.feedback_root else []
    yield check_feedback_labels(rows, sum(feedback.values()))
    yield check_feedback_senders(records, settings.feedback_sender_share)
    search_context = json.loads(json.dumps({"classifier": asdict(settings.classifier), "roles": asdict(roles)}))
    previous = published_notes(outputs.path("fruit_classifier"))
    reason = search_reason(previous, training_rows, search_context, settings.classifier_search_share)
    kept = None if reason else previous[SEARCH]["reg_param"]
    context.log.info(f"searching the penalty: {reason}" if reason else f"refitting the kept penalty {kept:g}")
    try:
        trained = train_classifier(rows, settings.classifier, kept)
    except NotEnoughClassesError as exc:
        yield skipped(context, "fruit_classifier", str(exc))
        return
    if trained.searched:
        search = {"training_rows": training_rows, "context": search_context, "reg_param": trained.reg_param}
        reason = reason or f"the kept penalty {kept:g} was refused ({'; '.join(trained.rejected)})"
    else:
        search, reason = previous[SEARCH], "none: the training photos changed little since the last search"
    labels = labels_of(trained.model)
    without_training = sorted({row[0] for row in reduced_features.select("label").distinct().collect()} - set(labels))
    context.log.info(
        f"regParam {trained.reg_param:g} ({trained.selection}); {trained.iterations} iterations, {len(labels)} classes"
    )
    if trained.rejected:
        context.log.warning("fell back from: " + "; ".join(trained.rejected))
    if without_training:
        context.log.warning(f"left out, no training image: {', '.join(without_training)}")
    notes = {
        **{key: pca_model.notes[key] for key in ("embedding", "k")},
        PCA_VERSION: pca_version,
        INPUTS: inputs,
        "labels": labels,
        "classifier": {"reg_param": trained.reg_param, "iterations": trained.iterations},
        SEARCH: search,
    }
    yield Output(
        ModelArtifact(trained.model, notes),
        metadata={
            "classes": MetadataValue.int(len(labels)),
            "k": MetadataValue.int(pca_model.notes["k"]),
            "reg_param": MetadataValue.float(trained.reg_param),
            "selection": MetadataValue.text(f"{trained.selection}, on {roles.describe_selection()}"),
            "validation_metric": MetadataValue.json({f"{k:g}": v for k, v in trained.validation_metric.items()}),
            "penalty_search": MetadataValue.text(reason),
            "fallback_from": MetadataValue.text("; ".join(trained.rejected) or "none"),
            "training_images": MetadataValue.text(roles.describe_training()),
            "training_accuracy": MetadataValue.float(trained.training_accuracy),
            "iterations": MetadataValue.int(trained.iterations),
            "classes_without_training_images": MetadataValue.json(without_training),
            "feedback_photos": MetadataValue.int(sum(feedback.values())),
            "feedback_photos_per_class": MetadataValue.json(feedback),
        },
    )


@asset(
    group_name="models",
    io_manager_key="class_parquet_io_manager",
    ins={"reduced_features": AssetIn(metadata={PUBLISHED_CLASSES_ONLY: True}), "fruit_classifier": AssetIn()},
    kinds={"spark"},
    check_specs=[ACCURACY_CHECK],
    retry_policy=SPARK_RETRY,
    output_required=False,
    automation_condition=AFTER_UPSTREAM_DECISIONS,
    code_version=code_version("classifier_evaluation"),
)
@asset_step
def classifier_evaluation(
    context: AssetExecutionContext,
    step_launcher: StepLauncherParam,
    reduced_features: DataFrame,
    fruit_classifier: ModelArtifact,
    settings: FruitsSettings,
    pyspark: LazyPySparkResource,
) -> Iterator[Output[DataFrame] | AssetCheckResult | AssetObservation]:
    """Each evaluation image's prediction (evaluation split, or a hold-out the classifier never saw); accuracy,
    macro F1, recall and confusions."""
    fresh_spark(pyspark, "classifier_evaluation")
    if PCA_VERSION in fruit_classifier.notes:
        require_projected_by(reduced_features, fruit_classifier.notes[PCA_VERSION], "the classifier's PCA")
    roles = split_roles(settings, reduced_features)
    stamp = evaluation_stamp(fruit_classifier.notes.get(VERSION), settings)
    images = rows_with_role(reduced_features, roles, EVALUATE).drop(ROLE)
    predictions = score(fruit_classifier.model, images).persist()
    labels = labels_of(fruit_classifier.model)
    result = evaluate(predictions, labels)
    if result.images == 0:
        yield skipped(context, "classifier_evaluation", f"no images to evaluate on ({roles.describe_evaluation()})")
        return
    context.log.info(
        f"accuracy {result.accuracy:.4f}, macro F1 {result.macro_f1:.4f} on {result.images} images, "
        f"{roles.describe_evaluation()}"
    )
    confused = "\n".join(f"| {t} | {p} | {n} |" for t, p, n in result.most_confused(10)) or "| - | - | 0 |"
    worst = sorted(result.recall.items(), key=lambda item: (item[1], item[0]))[:10]
    yield AssetCheckResult(
        check_name=ACCURACY_CHECK.name,
        asset_key=ACCURACY_CHECK.asset_key,
        passed=result.accuracy >= settings.min_accuracy,
        severity=AssetCheckSeverity.ERROR,
        metadata={"accuracy": result.accuracy, "floor": settings.min_accuracy},
    )
    yield Output(
        predictions,
        metadata={
            "accuracy": MetadataValue.float(result.accuracy),
            "macro_f1": MetadataValue.float(result.macro_f1),
            "images": MetadataValue.int(result.images),
            "evaluated_on": MetadataValue.text(roles.describe_evaluation()),
            "errors": MetadataValue.int(result.images - result.correct),
            "most_confused": MetadataValue.md("| true | predicted | images |\n|---|---|---|\n" + confused),
            "lowest_recall": MetadataValue.md(
                "| class | recall |\n|---|---|\n" + "\n".join(f"| {n} | {r:.4f} |" for n, r in worst)
            ),
            "recall_per_class": MetadataValue.json(result.recall),
            "confusion_matrix": confusion_matrix_plot(result.confusion, labels),
            COMPUTED_FROM: MetadataValue.json({WHOLE: stamp}),
        },
    )
