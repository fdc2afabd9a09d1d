"""Ingestion: the raw images of each fruit class, indexed and checked."""

from dagster import (
    AssetExecutionContext,
    DataVersion,
    DataVersionsByPartition,
    MetadataValue,
    Output,
    asset,
    observable_source_asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_assets.defs.assets.common import SINGLE_RUN, SPARK_RETRY, StepLauncherParam, fresh_spark, run_layout
from fruits_assets.defs.automation import CHANGED_UPSTREAM, code_version
from fruits_assets.defs.partitions import fruit_class_partitions
from fruits_assets.defs.plots import image_markdown, thumbnail_strip
from fruits_assets.defs.resources import FruitsSettings, PublishedOutputs
from fruits_assets.defs.staleness import COMPUTED_FROM, index_stamps
from fruits_assets.defs.steps import asset_step
from spark_code.photos.image_files import INDEX_COLUMNS, READ_NOW, list_image_files, reindex, with_contents
from spark_code.photos.listing import class_versions
from spark_code.storage.class_tables import published_stamps, read_classes

THUMBNAILS = 6
"""Images shown in the UI per materialization: enough to recognise the fruit, few enough to collect to the driver."""


def thumbnails(files: DataFrame) -> dict[str, MetadataValue]:
    """A strip of a few of the files as `thumbnails` metadata; nothing when none of them decodes."""
    paths = [(row["path"],) for row in files.select("path").limit(THUMBNAILS).collect()]
    # The contents of these paths alone, read whole: a limit above the reading UDF would stop its Python worker
    # mid-stream, and Spark then kills that worker (the next run's model would start in a new one).
    few = with_contents(files.sparkSession.createDataFrame(paths, "path string"))
    contents = [bytes(row["content"]) for row in few.select("content").collect()]
    strip = thumbnail_strip(contents)
    return {} if strip is None else {"thumbnails": image_markdown(strip, "sample images")}


def published_index(spark: SparkSession, base: str, classes: list[str]) -> DataFrame | None:
    """The published index rows of those of the classes that have one with every index column (older indexes lack
    the content hash): the files whose listing entry they still match are not read again."""
    published = published_stamps(base)
    written = [name for name in classes if name in published]
    if not written:
        return None
    rows = read_classes(spark, base, written)
    return rows if set(INDEX_COLUMNS) <= set(rows.columns) else None


@observable_source_asset(
    partitions_def=fruit_class_partitions,
    group_name="ingestion",
    required_resource_keys={"settings"},
    description="The photos of each class under the images root; data version: their listing (names, sizes, times).",
)
def class_photos(context) -> DataVersionsByPartition:  # noqa: ANN001 (an OpExecutionContext)
    """The data version of every registered class still under the images root (the discovery sensor records the
    same for changed classes every tick; Observe in the UI runs this)."""
    settings: FruitsSettings = context.resources.settings
    layout = settings.layout()
    known = context.instance.get_dynamic_partitions(fruit_class_partitions.name)
    present = [name for name in known if name in set(layout.classes)]
    return DataVersionsByPartition({name: DataVersion(v) for name, v in class_versions(layout, present).items()})


@asset(
    partitions_def=fruit_class_partitions,
    backfill_policy=SINGLE_RUN,
    group_name="ingestion",
    io_manager_key="class_parquet_io_manager",
    kinds={"spark"},
    retry_policy=SPARK_RETRY,
    deps=[class_photos],
    automation_condition=CHANGED_UPSTREAM,
    code_version=code_version("raw_images"),
)
@asset_step
def raw_images(
    context: AssetExecutionContext,
    step_launcher: StepLauncherParam,
    settings: FruitsSettings,
    pyspark: LazyPySparkResource,
    outputs: PublishedOutputs,
) -> Output[DataFrame]:
    """Index of a class's image files (path, label, split, size, modification time, content hash, and width, height,
    format from each header); only files whose listing entry changed are read."""
    layout, classes = run_layout(context, settings)
    versions = class_versions(layout, classes)  # listed before reading: a file added meanwhile makes it stale
    spark = fresh_spark(pyspark, "raw_images")
    previous = None if settings.reread_files else published_index(spark, outputs.path("raw_images"), classes)
    index = reindex(list_image_files(spark, layout, classes), previous).persist()
    totals = index.agg(
        F.count("*").alias("files"),
        F.count("error").alias("not_images"),
        F.sum("size_bytes").alias("bytes"),
        F.count_if(READ_NOW).alias("read"),
    ).first()
    index = index.drop(READ_NOW)
    context.log.info(f"{totals['read']} of {totals['files']} file(s) read; the others' listing entries are unchanged")
    return Output(
        index,
        metadata={
            "files_indexed": MetadataValue.int(totals["files"]),
            "files_read": MetadataValue.int(totals["read"]),
            "files_not_images": MetadataValue.int(totals["not_images"]),
            "total_bytes": MetadataValue.int(totals["bytes"] or 0),
            "images_root": MetadataValue.path(layout.root),
            COMPUTED_FROM: MetadataValue.json(index_stamps(versions)),
            **thumbnails(index),
        },
    )
