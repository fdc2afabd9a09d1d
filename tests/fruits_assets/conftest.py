"""Dagster fixtures: resources pointed at small image folders and a temporary output root."""

from pathlib import Path

import pytest
from dagster import DagsterInstance

from fruits_assets.bench.standalone_cluster import StandaloneCluster, standalone_cluster
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


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> StandaloneCluster:
    """One Spark standalone cluster (master + 2 workers x 1 core on 127.0.0.1) for every test that needs one.

    A test that kills a worker starts it again before it ends."""
    with standalone_cluster(2, tmp_path_factory.mktemp("cluster"), cores_per_worker=1, memory_per_worker="2g") as c:
        yield c
