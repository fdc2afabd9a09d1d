"""The app's brain: the fruit classifier trained on the reduced features, and its evaluation."""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_assets.assets.common import SPARK_RETRY, StepLauncherParam, fresh_spark
from fruits_assets.plots import confusion_matrix_plot
from fruits_assets.resources import FruitsSettings
from spark_code.classifier import ClassifierSettings, evaluate, labels_of, score, train_classifier
from spark_code.ml_models import ModelArtifact

ACCURACY_CHECK = AssetCheckSpec(
    "accuracy_above_floor",
    asset="classifier_evaluation",
    description="Top-1 accuracy on the evaluation split is at least the settings' min_accuracy.",
)


@asset(
    group_name="models",
    io_manager_key="spark_model_io_manager",
    ins={"reduced_features": AssetIn(), "pca_model": AssetIn()},
    kinds={"spark"},
    retry_policy=SPARK_RETRY,
)
def fruit_classifier(
    context: AssetExecutionContext,
    step_launcher: StepLauncherParam,
    reduced_features: DataFrame,
    pca_model: ModelArtifact,
    settings: FruitsSettings,
    pyspark: LazyPySparkResource,
) -> Output[ModelArtifact]:
    """Spark ML multinomial logistic regression on the training split of every class's PCA features."""
    fresh_spark(pyspark, "fruit_classifier")
    classifier_settings = ClassifierSettings()
    model = train_classifier(reduced_features, classifier_settings, settings.training_split)
    labels = labels_of(model)
    summary = model.stages[-1].summary
    context.log.info(f"trained on {summary.totalIterations} iterations, {len(labels)} classes")
    notes = {
        **{key: pca_model.notes[key] for key in ("embedding", "k")},
        "labels": labels,
        "classifier": classifier_settings.__dict__,
    }
    return Output(
        ModelArtifact(model, notes),
        metadata={
            "classes": MetadataValue.int(len(labels)),
            "k": MetadataValue.int(pca_model.notes["k"]),
            "training_accuracy": MetadataValue.float(float(summary.accuracy)),
            "iterations": MetadataValue.int(summary.totalIterations),
        },
    )


@asset(
    group_name="models",
    io_manager_key="class_parquet_io_manager",
    ins={"reduced_features": AssetIn(), "fruit_classifier": AssetIn()},
    kinds={"spark"},
    check_specs=[ACCURACY_CHECK],
    retry_policy=SPARK_RETRY,
)
def classifier_evaluation(
    context: AssetExecutionContext,
    step_launcher: StepLauncherParam,
    reduced_features: DataFrame,
    fruit_classifier: ModelArtifact,
    settings: FruitsSettings,
    pyspark: LazyPySparkResource,
) -> Iterator[Output[DataFrame] | AssetCheckResult]:
    """Each evaluation-split image's prediction; accuracy, macro F1, recall and confusions as metadata."""
    fresh_spark(pyspark, "classifier_evaluation")
    split = reduced_features.where(F.col("split") == settings.evaluation_split)
    predictions = score(fruit_classifier.model, split).persist()
    labels = labels_of(fruit_classifier.model)
    result = evaluate(predictions, labels)
    if result.images == 0:
        raise ValueError(f"no {settings.evaluation_split!r} images to evaluate the classifier on")
    context.log.info(f"accuracy {result.accuracy:.4f}, macro F1 {result.macro_f1:.4f} on {result.images} images")
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
            "errors": MetadataValue.int(result.images - result.correct),
            "most_confused": MetadataValue.md("| true | predicted | images |\n|---|---|---|\n" + confused),
            "lowest_recall": MetadataValue.md(
                "| class | recall |\n|---|---|\n" + "\n".join(f"| {n} | {r:.4f} |" for n, r in worst)
            ),
            "recall_per_class": MetadataValue.json(result.recall),
            "confusion_matrix": confusion_matrix_plot(result.confusion, labels),
        },
    )
