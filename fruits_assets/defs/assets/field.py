"""The field: the classifier on photos of the app's world (a field root of its own), never trained on."""

from collections.abc import Iterator

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

from fruits_assets.defs.assets.common import SPARK_RETRY, StepLauncherParam, fresh_spark, skipped
from fruits_assets.defs.automation import AFTER_UPSTREAM_DECISIONS, code_version
from fruits_assets.defs.plots import confusion_matrix_plot
from fruits_assets.defs.resources import EmbeddingStore, FruitsSettings, PublishedOutputs
from fruits_assets.defs.staleness import COMPUTED_FROM, PUBLISHED_NOTES, field_stamp
from fruits_assets.defs.steps import asset_step
from spark_code.features.embedding_store import KEY, embedded_with_store, with_content_keys
from spark_code.features.embeddings import accepted
from spark_code.models.calibration import FruitMembership, at_threshold, calibrate
from spark_code.models.classifier import Evaluation, FruitScores, evaluate, labels_of, score
from spark_code.models.fruit_facts import fruit_of
from spark_code.models.ml_models import PCA_VERSION, VERSION, MismatchedModelsError, ModelArtifact, load_model
from spark_code.models.pca import apply_pca
from spark_code.photos.image_files import list_image_files, with_contents
from spark_code.photos.listing import class_versions
from spark_code.storage.class_tables import WHOLE

HALF = "_calibrates"
"""Which half of the field photos (by a hash of the path) the confidence is calibrated on; the other half says what
it gives on photos it was not fitted on."""

FIELD_CHECK = AssetCheckSpec(
    "field_fruit_accuracy",
    asset="field_evaluation",
    description="Fruit accuracy (any variety of the right fruit) on the field photos is at least the settings' "
    "min_field_fruit_accuracy. A warning: the studio photos the classifier learns from are not the app's world.",
)


def with_fruits(predictions: DataFrame, labels: list[str]) -> DataFrame:
    """Add `fruit` and `predicted_fruit`: the fruit of the true and of the predicted class."""
    fruits = F.create_map(*[F.lit(value) for label in sorted(set(labels)) for value in (label, fruit_of(label))])
    return predictions.withColumn("fruit", fruits[F.col("label")]).withColumn(
        "predicted_fruit", fruits[F.col("predicted")]
    )


def fruit_table(scores: FruitScores) -> str:
    rows = sorted(scores.per_fruit.items(), key=lambda item: (item[1][0] / item[1][1], item[0]))
    return "| fruit | right | photos | accuracy |\n|---|---|---|---|\n" + "\n".join(
        f"| {fruit} | {right} | {seen} | {right / seen:.3f} |" for fruit, (right, seen) in rows
    )


def by_split(predictions: DataFrame, labels: list[str]) -> dict[str, dict[str, float | int]]:
    """Photos, class and fruit accuracy of each split of the field root (only counts reach the driver)."""
    counts: dict[str, dict[tuple[str, str], int]] = {}
    for row in predictions.groupBy("split", "label", "predicted").count().collect():
        counts.setdefault(row["split"] or "(no split)", {})[(row["label"], row["predicted"])] = int(row["count"])
    found = {}
    for split, confusion in sorted(counts.items()):
        result = Evaluation.from_counts(confusion, labels)
        found[split] = {
            "photos": result.images,
            "accuracy": round(result.accuracy, 4),
            "fruit_accuracy": round(result.by_fruit(fruit_of).accuracy, 4),
        }
    return found


@asset(
    group_name="models",
    io_manager_key="class_parquet_io_manager",
    ins={"fruit_classifier": AssetIn()},
    kinds={"spark", "tensorflow"},
    check_specs=[FIELD_CHECK],
    retry_policy=SPARK_RETRY,
    output_required=False,
    automation_condition=AFTER_UPSTREAM_DECISIONS,
    code_version=code_version("field_evaluation"),
)
@asset_step
def field_evaluation(
    context: AssetExecutionContext,
    step_launcher: StepLauncherParam,
    fruit_classifier: ModelArtifact,
    settings: FruitsSettings,
    pyspark: LazyPySparkResource,
    embedding_store: EmbeddingStore,
    outputs: PublishedOutputs,
) -> Iterator[Output[DataFrame] | AssetCheckResult | AssetObservation]:
    """Each field photo's prediction (path, label, split, predicted, confidence, fruit, predicted_fruit): accuracy by
    class and by fruit; the app's confidence calibrated on half of the photos, measured on the other half."""
    # The photos are embedded through the embedding store (once each); the calibration (spark_code.models.calibration)
    # is published with the rows. (The docstring is the UI's description: kept short for its catalog.)
    layout = settings.field_layout()
    if layout is None:
        yield skipped(context, "field_evaluation", "no field root is set (FRUITS_FIELD_ROOT, fruits run --field-root)")
        return
    listing = class_versions(layout, layout.classes)  # listed before reading: a photo added meanwhile makes it stale
    stamp = field_stamp(fruit_classifier.notes.get(VERSION), listing, settings)
    spark = fresh_spark(pyspark, "field_evaluation")
    files = with_content_keys(with_contents(list_image_files(spark, layout, layout.classes)))
    keyed = files.select("path", "label", "split", KEY).persist()
    embedded, embedded_now = embedded_with_store(
        keyed, settings.model, embedding_store.base, "field_evaluation", context.log.info
    )
    # The PCA is read as published, not as an input: the classifier is what is evaluated (a PCA the refit rule kept
    # must not start an evaluation of a classifier about to be trained again), and it names its PCA.
    pca_model = load_model(spark, outputs.path("pca_model"))
    pca_version = pca_model.notes.get(VERSION)
    if fruit_classifier.notes.get(PCA_VERSION, pca_version) != pca_version:
        raise MismatchedModelsError(
            f"the classifier was trained on PCA {fruit_classifier.notes[PCA_VERSION]}, the published PCA is "
            f"{pca_version}: materialize fruit_classifier again"
        )
    reduced = apply_pca(pca_model.model, accepted(embedded), pca_version)
    labels = labels_of(fruit_classifier.model)
    scored = with_fruits(score(fruit_classifier.model, reduced, keep_probability=True), labels + layout.classes)
    scored = scored.withColumn(HALF, F.xxhash64("path") % 2 == 0).persist()
    predictions = scored.drop("probability", HALF)
    result = evaluate(predictions, labels)
    rejected = embedded.where(F.col("error").isNotNull()).count()
    if result.images == 0:
        yield skipped(context, "field_evaluation", f"no field photo decodes under {layout.root}")
        return
    fruit = result.by_fruit(fruit_of)
    context.log.info(
        f"field photos: fruit accuracy {fruit.accuracy:.4f}, class accuracy {result.accuracy:.4f} on "
        f"{result.images} photos of {layout.root} ({embedded_now} embedded now)"
    )
    yield AssetCheckResult(
        check_name=FIELD_CHECK.name,
        asset_key=FIELD_CHECK.asset_key,
        passed=fruit.accuracy >= settings.min_field_fruit_accuracy,
        severity=AssetCheckSeverity.WARN,
        metadata={"fruit_accuracy": fruit.accuracy, "floor": settings.min_field_fruit_accuracy},
    )
    fruits = sorted({name for pair in fruit.confusion for name in pair})
    calibration = calibrate(scored.where(F.col(HALF)), labels, fruit_of)
    held_out = at_threshold(scored.where(~F.col(HALF)), FruitMembership(labels, fruit_of), calibration)
    context.log.info(
        f"calibration: temperature {calibration.temperature:.3g}, threshold {calibration.threshold}; on the other "
        f"half of the photos: coverage {held_out['coverage']}, precision {held_out['precision']}"
    )
    yield Output(
        predictions,
        metadata={
            "calibration": MetadataValue.json({**calibration.as_notes(), "held_out": held_out}),
            PUBLISHED_NOTES: MetadataValue.json(
                {"classifier_version": fruit_classifier.notes.get(VERSION), "calibration": calibration.as_notes()}
            ),
            "fruit_accuracy": MetadataValue.float(fruit.accuracy),
            "accuracy": MetadataValue.float(result.accuracy),
            "images": MetadataValue.int(result.images),
            "images_rejected": MetadataValue.int(rejected),
            "images_embedded": MetadataValue.int(embedded_now),
            "field_root": MetadataValue.path(layout.root),
            "per_fruit": MetadataValue.md(fruit_table(fruit)),
            "fruit_accuracy_per_fruit": MetadataValue.json(
                {name: round(right / seen, 4) for name, (right, seen) in fruit.per_fruit.items()}
            ),
            "per_split": MetadataValue.json(by_split(predictions, labels)),
            "most_common_answers": MetadataValue.json(
                [
                    [row["predicted"], row["count"]]
                    for row in predictions.groupBy("predicted").count().orderBy(F.desc("count"), "predicted").take(5)
                ]
            ),
            "confusion_by_fruit": confusion_matrix_plot(fruit.confusion, fruits),
            COMPUTED_FROM: MetadataValue.json({WHOLE: stamp}),
        },
    )
