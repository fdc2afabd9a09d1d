"""The one Definitions object of the platform: it merges what the code location in `defs/` holds (the assets of
each stage, the sensors, the resource set DAGSTER_DEPLOYMENT picks) and defines nothing itself."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules

from fruits_assets.defs.assets import classifier, features, field, ingestion, models
from fruits_assets.defs.automation import fruits_automation_sensor
from fruits_assets.defs.deployments import DEPLOYMENTS, deployment_resources, resources_for
from fruits_assets.defs.sensors import fruit_class_sensor

__all__ = ["DEPLOYMENTS", "all_assets", "defs", "resources_for"]

all_assets = load_assets_from_modules([ingestion, features, models, classifier, field])

defs = Definitions(
    assets=all_assets,
    sensors=[fruit_class_sensor, fruits_automation_sensor],
    resources=deployment_resources(),
)
