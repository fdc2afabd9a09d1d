"""Dagster fixtures: resources pointed at small image folders and a temporary output root."""

from pathlib import Path

import pytest
from dagster import DagsterInstance

from fruits_assets.definitions import resources_for
from fruits_assets.partitions import fruit_class_partitions
from fruits_assets.resources import FruitsSettings
from tests.conftest import WEIGHTS


def make_resources(images_root: Path, output_root: Path, **settings: object) -> dict[str, object]:
    defaults = {"images_root": str(images_root), "model_weights": str(WEIGHTS), "model_alpha": 0.35}
    config = FruitsSettings(**{**defaults, **settings})
    return resources_for("local", settings=config, output_root=str(output_root))


def make_instance(classes: list[str]) -> DagsterInstance:
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(fruit_class_partitions.name, classes)
    return instance


@pytest.fixture
def output_root(tmp_path: Path) -> Path:
    return tmp_path / "out"
