"""The one Definitions object of the platform; DAGSTER_DEPLOYMENT picks the resource set."""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, ResourceDefinition, load_assets_from_modules
from dagster_aws.s3 import S3Resource

from fruits_assets.assets import classifier, features, ingestion, models
from fruits_assets.automation import fruits_automation_sensor
from fruits_assets.io_managers import ClassParquetIOManager, SparkModelIOManager
from fruits_assets.resources import (
    OUTPUT_ROOT_ENV,
    EmbeddingStore,
    FruitsSettings,
    PublishedOutputs,
    local_spark,
    output_root_from_env,
    settings_from_env,
    with_changes,
)
from fruits_assets.sensors import fruit_class_sensor

DEPLOYMENTS = ("local", "prod")


def _prod_resources(settings: FruitsSettings | None, output_root: str | None) -> dict[str, object]:
    """Each asset step on the EMR cluster (YARN), images and outputs on S3 (defaults under FRUITS_S3_BUCKET)."""
    from fruits_assets.emr import resources as emr_resources

    launcher = emr_resources.emr_step_launcher()
    defaults = emr_resources.prod_defaults(emr_resources.required_env(emr_resources.BUCKET_ENV))
    root = output_root or (EnvVar(OUTPUT_ROOT_ENV) if OUTPUT_ROOT_ENV in os.environ else defaults[OUTPUT_ROOT_ENV])
    if settings is None:
        settings = settings_from_env()
        if not settings.images_root:
            settings = with_changes(settings, images_root=defaults["FRUITS_IMAGES_ROOT"])
    pyspark = emr_resources.yarn_spark()
    return {
        "settings": settings,
        "pyspark": pyspark,
        "step_launcher": launcher,
        "s3": emr_resources.s3_resource(),
        "embedding_store": EmbeddingStore(output_root=root),
        "outputs": PublishedOutputs(output_root=root),
        "class_parquet_io_manager": ClassParquetIOManager(output_root=root, pyspark=pyspark),
        "spark_model_io_manager": SparkModelIOManager(output_root=root, pyspark=pyspark),
    }


def resources_for(
    deployment: str, settings: FruitsSettings | None = None, output_root: str | None = None
) -> dict[str, object]:
    """The resource set of a deployment, from the environment unless given.

    `local`: Spark in this process. `prod`: the same assets, each step launched on EMR.
    """
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"DAGSTER_DEPLOYMENT={deployment!r} is not one of {', '.join(DEPLOYMENTS)}")
    if deployment == "prod":
        return _prod_resources(settings, output_root)
    pyspark = local_spark()
    root = output_root or output_root_from_env()
    return {
        "settings": settings or settings_from_env(),
        "pyspark": pyspark,
        "step_launcher": ResourceDefinition.none_resource(description="local: every step runs in this process"),
        "s3": S3Resource(),
        "embedding_store": EmbeddingStore(output_root=root),
        "outputs": PublishedOutputs(output_root=root),
        "class_parquet_io_manager": ClassParquetIOManager(output_root=root, pyspark=pyspark),
        "spark_model_io_manager": SparkModelIOManager(output_root=root, pyspark=pyspark),
    }


all_assets = load_assets_from_modules([ingestion, features, models, classifier])

defs = Definitions(
    assets=all_assets,
    sensors=[fruit_class_sensor, fruits_automation_sensor],
    resources=resources_for(os.environ.get("DAGSTER_DEPLOYMENT", "local")),
)
