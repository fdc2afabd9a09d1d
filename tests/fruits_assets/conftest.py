"""Dagster fixtures: resources pointed at small image folders and a temporary output root."""

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from fruits_assets.bench.standalone_cluster import StandaloneCluster, standalone_cluster
from fruits_assets.definitions import resources_for
from fruits_assets.defs.partitions import fruit_class_partitions
from fruits_assets.defs.resources import FruitsSettings
from tests.conftest import WEIGHTS


def make_resources(images_root: Path, output_root: Path, **settings: object) -> dict[str, object]:
    defaults = {"images_root": str(images_root), "model_weights": str(WEIGHTS), "model_alpha": 0.35}
    config = FruitsSettings(**{**defaults, **settings})
    return resources_for("local", settings=config, output_root=str(output_root))


def make_instance(classes: list[str]) -> DagsterInstance:
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(fruit_class_partitions.name, classes)
    return instance


def materialize_for(
    images_root: Path,
    output_root: Path,
    classes: list[str],
    selection: list[str],
    every_class: bool = False,
    **settings: object,
) -> ExecuteInProcessResult:
    """Materialize the selected assets (not raising on failure) on an instance that knows `classes`: the
    partitioned ones for the first class (`every_class`: for all of them, in one run over their range, as the main
    job does), the others for every class."""
    from fruits_assets.definitions import all_assets

    partitioned = bool({"raw_images", "image_embeddings", "rejected_images", "reduced_features"} & set(selection))
    whole_range = {ASSET_PARTITION_RANGE_START_TAG: classes[0], ASSET_PARTITION_RANGE_END_TAG: classes[-1]}
    return materialize(
        all_assets,
        selection=[AssetKey(name) for name in selection],
        partition_key=classes[0] if partitioned and not every_class else None,
        tags=whole_range if partitioned and every_class else None,
        resources=make_resources(images_root, output_root, **settings),
        instance=make_instance(list(dict.fromkeys(classes))),
        raise_on_error=False,
    )


@pytest.fixture
def output_root(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> StandaloneCluster:
    """One Spark standalone cluster (master + 2 workers x 1 core on 127.0.0.1) for every test that needs one.

    A test that kills a worker starts it again before it ends."""
    with standalone_cluster(2, tmp_path_factory.mktemp("cluster"), cores_per_worker=1, memory_per_worker="2g") as c:
        yield c
