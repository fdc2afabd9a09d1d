"""The resource set of each deployment, which DAGSTER_DEPLOYMENT picks: `local` (Spark in this process) or `prod`
(each asset step launched on EMR, images and outputs on S3)."""

from __future__ import annotations

import os

from dagster import EnvVar, ResourceDefinition
from dagster_aws.s3 import S3Resource

from fruits_assets.defs.io_managers import ClassTableIOManager, SparkModelIOManager
from fruits_assets.defs.prod_env import BUCKET_ENV
from fruits_assets.defs.resources import (
    OUTPUT_ROOT_ENV,
    EmbeddingStore,
    FruitsSettings,
    PublishedOutputs,
    local_spark,
    output_root_from_env,
    settings_from_env,
    with_changes,
)

DEPLOYMENT_ENV = "DAGSTER_DEPLOYMENT"
DEPLOYMENTS = ("local", "prod")


def _prod_resources(settings: FruitsSettings | None, output_root: str | None) -> dict[str, object]:
    """Each asset step on the EMR cluster (YARN), images and outputs on S3 (defaults under FRUITS_S3_BUCKET)."""
    from fruits_assets.defs import emr_resources  # dagster-aws's EMR launcher only for this deployment

    launcher = emr_resources.emr_step_launcher()
    defaults = emr_resources.prod_defaults(emr_resources.required_env(BUCKET_ENV))
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
        "class_parquet_io_manager": ClassTableIOManager(output_root=root, pyspark=pyspark),
        "spark_model_io_manager": SparkModelIOManager(output_root=root, pyspark=pyspark),
    }


def resources_for(
    deployment: str, settings: FruitsSettings | None = None, output_root: str | None = None
) -> dict[str, object]:
    """The resource set of a deployment, from the environment unless given.

    `local`: Spark in this process. `prod`: the same assets, each step launched on EMR.
    """
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"{DEPLOYMENT_ENV}={deployment!r} is not one of {', '.join(DEPLOYMENTS)}")
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
        "class_parquet_io_manager": ClassTableIOManager(output_root=root, pyspark=pyspark),
        "spark_model_io_manager": SparkModelIOManager(output_root=root, pyspark=pyspark),
    }


def deployment_resources() -> dict[str, object]:
    """The resource set of the deployment DAGSTER_DEPLOYMENT names (default `local`)."""
    return resources_for(os.environ.get(DEPLOYMENT_ENV, "local"))
