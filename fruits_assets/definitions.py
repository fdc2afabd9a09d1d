"""The one Definitions object of the platform; DAGSTER_DEPLOYMENT picks the resource set."""

from __future__ import annotations

import os

from dagster import Definitions, load_assets_from_modules

from fruits_assets.assets import classifier, features, ingestion, models
from fruits_assets.io_managers import ClassParquetIOManager, SparkModelIOManager
from fruits_assets.resources import FruitsSettings, local_spark, output_root_from_env, settings_from_env
from fruits_assets.sensors import fruit_class_sensor

DEPLOYMENTS = ("local",)


def resources_for(
    deployment: str, settings: FruitsSettings | None = None, output_root: str | None = None
) -> dict[str, object]:
    """The resource set of a deployment (`local`: Spark in this process), from the environment unless given."""
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"DAGSTER_DEPLOYMENT={deployment!r} is not one of {', '.join(DEPLOYMENTS)}")
    pyspark = local_spark()
    root = output_root or output_root_from_env()
    return {
        "settings": settings or settings_from_env(),
        "pyspark": pyspark,
        "class_parquet_io_manager": ClassParquetIOManager(output_root=root, pyspark=pyspark),
        "spark_model_io_manager": SparkModelIOManager(output_root=root, pyspark=pyspark),
    }


all_assets = load_assets_from_modules([ingestion, features, models, classifier])

defs = Definitions(
    assets=all_assets,
    sensors=[fruit_class_sensor],
    resources=resources_for(os.environ.get("DAGSTER_DEPLOYMENT", "local")),
)
