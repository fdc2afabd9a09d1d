"""A Spark driver in its own process for fault tests: materialize some assets for some classes, print a JSON line.

    python -m tests.materialize_driver IMAGES_ROOT OUTPUT_ROOT CLASS [CLASS ...] [--assets raw_images ...]
        [--hang-after-publishing ASSET MARKER_FILE]

With --hang-after-publishing, the driver writes MARKER_FILE once ASSET's output is published, then hangs, so that a
test can kill it at exactly that point (between two outputs of one step, for example).

The Dagster instance is DAGSTER_HOME's when set (event log and compute logs on disk), else an ephemeral one; Spark
is `fruits_assets.defs.resources.local_spark()` (FRUITS_SPARK_MASTER, FRUITS_SPARK_CONF).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from dagster import AssetKey, DagsterInstance, OutputContext, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from fruits_assets.definitions import resources_for
from fruits_assets.defs.assets.features import image_embeddings
from fruits_assets.defs.assets.ingestion import raw_images
from fruits_assets.defs.io_managers import ClassTableIOManager
from fruits_assets.defs.resources import FruitsSettings
from fruits_assets.main_job import use_classes

ASSETS = {"raw_images": [raw_images], "image_embeddings": [image_embeddings]}
KEYS = {"raw_images": ["raw_images"], "image_embeddings": ["image_embeddings", "rejected_images"]}


def _hang_after_publishing(asset: str, marker: str) -> None:
    """Make the class IO manager write `marker` and hang once it has published `asset` (this process only)."""
    publish = ClassTableIOManager.handle_output

    def handle_output(self: ClassTableIOManager, context: OutputContext, obj: object) -> None:
        publish(self, context, obj)
        if context.asset_key.path[-1] == asset:
            Path(marker).write_text("published")
            time.sleep(3600)

    ClassTableIOManager.handle_output = handle_output


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("images_root")
    parser.add_argument("output_root")
    parser.add_argument("classes", nargs="+")
    parser.add_argument("--assets", nargs="+", default=["raw_images", "image_embeddings"], choices=sorted(ASSETS))
    parser.add_argument("--hang-after-publishing", nargs=2, metavar=("ASSET", "MARKER_FILE"))
    args = parser.parse_args(argv)
    if args.hang_after_publishing:
        _hang_after_publishing(*args.hang_after_publishing)
    settings = FruitsSettings(
        images_root=args.images_root,
        model_weights=os.environ["FRUITS_MODEL_WEIGHTS"],
        model_alpha=float(os.environ.get("FRUITS_MODEL_ALPHA", "0.35")),
    )
    # On disk (DAGSTER_HOME) only when asked: drivers of one test may run side by side.
    on_disk = os.environ.get("FRUITS_DRIVER_ON_DISK") == "1"
    instance = DagsterInstance.get() if on_disk else DagsterInstance.ephemeral()
    wanted = set(args.classes)
    classes = [name for name in use_classes(instance, sorted(wanted), settings.layout()) if name in wanted]
    result = materialize(
        [asset for name in ASSETS for asset in ASSETS[name]],
        selection=[AssetKey(key) for name in args.assets for key in KEYS[name]],
        resources=resources_for("local", settings=settings, output_root=args.output_root),
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: classes[0], ASSET_PARTITION_RANGE_END_TAG: classes[-1]},
        raise_on_error=False,
    )
    metadata = {
        str(event.asset_key.to_user_string()): {
            key: value.value
            for key, value in event.event_specific_data.materialization.metadata.items()
            if isinstance(value.value, (int, float, str))
        }
        for event in result.get_asset_materialization_events()
    }
    checks = {check.check_name: check.passed for check in result.get_asset_check_evaluations()}
    print(json.dumps({"success": result.success, "run_id": result.run_id, "metadata": metadata, "checks": checks}))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
