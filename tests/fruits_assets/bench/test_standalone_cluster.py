"""The same assets on a real distributed engine: a Spark standalone cluster (master + 2 workers on 127.0.0.1)."""

import os
import subprocess
import sys

import numpy as np

from spark_code.storage.parquet_store import read_classes
from tests.conftest import WEIGHTS

CLASS = "Kiwi"

MATERIALIZE = """
import sys
from dagster import materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from fruits_assets.defs.assets.features import image_embeddings
from fruits_assets.defs.assets.ingestion import raw_images
from fruits_assets.definitions import resources_for
from tests.fruits_assets.conftest import make_instance

cls = sys.argv[1]
result = materialize(
    [raw_images, image_embeddings],
    resources=resources_for("local"),
    instance=make_instance([cls]),
    tags={ASSET_PARTITION_RANGE_START_TAG: cls, ASSET_PARTITION_RANGE_END_TAG: cls},
)
context = __import__("pyspark").SparkContext.getOrCreate()
print("master", result.success and context.master, context.applicationId)
"""


def test_embeddings_on_a_standalone_cluster_equal_local_ones(cluster, trained_run, small_root, tmp_path, spark):
    _, local_output = trained_run
    output_root = tmp_path / "out"
    env = {
        **os.environ,
        "FRUITS_SPARK_MASTER": cluster.master_url,
        "FRUITS_SPARK_DRIVER_MEMORY": "1g",
        # as local sessions get: 4 shuffle partitions per core, Delta's log read in a task per core
        "FRUITS_SPARK_CONF": '{"spark.sql.shuffle.partitions": "8", "spark.databricks.delta.snapshotPartitions": "2"}',
        "FRUITS_IMAGES_ROOT": str(small_root),
        "FRUITS_OUTPUT_ROOT": str(output_root),
        "FRUITS_MODEL_WEIGHTS": str(WEIGHTS),
        "FRUITS_MODEL_ALPHA": "0.35",
    }
    done = subprocess.run(
        [sys.executable, "-c", MATERIALIZE, CLASS], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    master, app = done.stdout.strip().splitlines()[-1].split()[1:]
    assert master == cluster.master_url
    executors = list(cluster.log_dir.glob(f"worker-*/{app}/*/stderr"))
    assert len({path.parts[-4] for path in executors}) == 2, "both workers ran executors"

    columns = ["path", "features"]
    on_cluster = read_classes(spark, str(output_root / "image_embeddings"), [CLASS]).select(columns).toPandas()
    local = read_classes(spark, str(local_output / "image_embeddings"), [CLASS]).select(columns).toPandas()
    on_cluster, local = on_cluster.sort_values("path").reset_index(), local.sort_values("path").reset_index()
    assert len(on_cluster) == len(local) == 14
    assert list(on_cluster["path"]) == list(local["path"])
    assert np.array_equal(np.stack(on_cluster["features"]), np.stack(local["features"]))
