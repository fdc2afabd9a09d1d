"""Features: MobileNetV2 embeddings (with the images they reject) and their PCA reduction, per class."""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Failure,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame

from fruits_assets.defs.assets.common import SINGLE_RUN, SPARK_RETRY, StepLauncherParam, fresh_spark, run_layout
from fruits_assets.defs.automation import AFTER_UPSTREAM_DECISIONS, CHANGED_UPSTREAM, code_version
from fruits_assets.defs.checks import (
    EMBEDDINGS_WIDTH_CHECK,
    NOTHING_LOST_CHECK,
    REDUCED_WIDTH_CHECK,
    REJECTED_SHARE_CHECK,
    check_embeddings_width,
    check_nothing_lost,
    check_reduced_width,
    check_rejected_share,
    refuse_when_blocked,
)
from fruits_assets.defs.partitions import fruit_class_partitions
from fruits_assets.defs.resources import EmbeddingStore, FruitsSettings
from fruits_assets.defs.staleness import COMPUTED_FROM, embedding_stamps, reduced_stamps
from fruits_assets.defs.steps import asset_step
from spark_code.features.embedding_store import KEY, embedded_with_store, settings_fingerprint
from spark_code.features.embeddings import accepted, rejected
from spark_code.models.ml_models import VERSION, ModelArtifact
from spark_code.models.pca import apply_pca, pca_k
from spark_code.photos.views import is_view, with_views
from spark_code.storage.class_tables import input_stamps


@multi_asset(
    outs={
        "image_embeddings": AssetOut(
            io_manager_key="class_parquet_io_manager",
            description="MobileNetV2 (ImageNet) pooled features of each image (and of its augmented training views, "
            "path `<photo>#view=<n>`): path, label, split, features[1280].",
            kinds={"spark", "tensorflow"},
            automation_condition=CHANGED_UPSTREAM,
            code_version=code_version("image_embeddings"),
        ),
        "rejected_images": AssetOut(
            io_manager_key="class_parquet_io_manager",
            description="Files that could not be decoded as images: path, label, split, reason.",
            kinds={"spark"},
            automation_condition=CHANGED_UPSTREAM,
            code_version=code_version("rejected_images"),
        ),
    },
    ins={"raw_images": AssetIn()},
    partitions_def=fruit_class_partitions,
    backfill_policy=SINGLE_RUN,
    group_name="features",
    check_specs=[EMBEDDINGS_WIDTH_CHECK, NOTHING_LOST_CHECK, REJECTED_SHARE_CHECK],
    retry_policy=SPARK_RETRY,
)
@asset_step
def image_embeddings(
    context: AssetExecutionContext,
    step_launcher: StepLauncherParam,
    raw_images: DataFrame,
    settings: FruitsSettings,
    pyspark: LazyPySparkResource,
    embedding_store: EmbeddingStore,
) -> Iterator[Output[DataFrame] | AssetCheckResult]:
    """Embed every indexed image of the run's classes whose content the embedding store lacks, and the augmented
    views of the training photos (settings.augment_views); undecodable files go to rejected_images, not to failure."""
    layout, _ = run_layout(context, settings)
    stamps = MetadataValue.json(embedding_stamps(input_stamps(raw_images), settings))
    fresh_spark(pyspark, "image_embeddings")
    model = settings.model
    if KEY not in raw_images.columns:
        raise Failure(
            description="raw_images of these classes was indexed before content hashes: materialize raw_images again",
            allow_retries=False,
        )
    training_split = settings.roles(layout.splits).training
    keyed = with_views(raw_images.select("path", "label", "split", KEY), training_split, settings.augment_views)
    embedded, embedded_now = embedded_with_store(
        keyed.persist(), model, embedding_store.base, "image_embeddings", context.log.info
    )
    viewed = f" (augmented views of the training photos included: {settings.augment_views} each)"
    context.log.info(
        f"{embedded_now} photo(s) embedded{viewed if settings.augment_views else ''}, the others' embeddings reused "
        "from the store"
    )
    embeddings = accepted(embedded)
    photos = embedded.where(~is_view())  # a view of a rejected photo is no file of its own
    yield from refuse_when_blocked(
        [
            check_nothing_lost(raw_images, photos),
            check_rejected_share(photos, settings.max_rejected_share),
            check_embeddings_width(embeddings),
        ]
    )
    views = embeddings.where(is_view()).count() if settings.augment_views else 0
    yield Output(
        embeddings,
        output_name="image_embeddings",
        metadata={
            "model_weights": MetadataValue.text(model.weights),
            "model_alpha": MetadataValue.float(model.alpha),
            "image_size": MetadataValue.int(model.image_size),
            "images_embedded": MetadataValue.int(embedded_now),
            "augmented_views": MetadataValue.int(views),
            "settings_fingerprint": MetadataValue.text(
                settings_fingerprint(model) or "none (random weights are never stored)"
            ),
            COMPUTED_FROM: stamps,
        },
    )
    yield Output(rejected(photos), output_name="rejected_images", metadata={COMPUTED_FROM: stamps})


@asset(
    partitions_def=fruit_class_partitions,
    backfill_policy=SINGLE_RUN,
    group_name="features",
    io_manager_key="class_parquet_io_manager",
    ins={"image_embeddings": AssetIn(), "pca_model": AssetIn()},
    kinds={"spark"},
    check_specs=[REDUCED_WIDTH_CHECK],
    retry_policy=SPARK_RETRY,
    automation_condition=AFTER_UPSTREAM_DECISIONS,
    code_version=code_version("reduced_features"),
)
@asset_step
def reduced_features(
    context: AssetExecutionContext,
    step_launcher: StepLauncherParam,
    image_embeddings: DataFrame,
    pca_model: ModelArtifact,
    settings: FruitsSettings,
    pyspark: LazyPySparkResource,
) -> Iterator[Output[DataFrame] | AssetCheckResult]:
    """Each image's embedding projected on the PCA components: path, label, split, pca_features[k], pca_version."""
    run_layout(context, settings)
    stamps = reduced_stamps(input_stamps(image_embeddings), pca_model.notes.get(VERSION))
    fresh_spark(pyspark, "reduced_features")
    k = pca_k(pca_model.model)
    context.log.info(f"projecting {len(context.partition_keys)} class(es) on {k} components")
    reduced = apply_pca(pca_model.model, image_embeddings, pca_model.notes.get(VERSION)).persist()
    yield from refuse_when_blocked([check_reduced_width(reduced, k)])
    yield Output(reduced, metadata={"k": MetadataValue.int(k), COMPUTED_FROM: MetadataValue.json(stamps)})
