"""Class discovery: a new class folder under the images root becomes a partition, without code change, and each
class's photos get a data version from their listing, so that changed photos show (and run) as such."""

from __future__ import annotations

import json

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster_aws.s3 import S3Resource

from fruits_assets.defs.partitions import fruit_class_partitions
from fruits_assets.defs.resources import FruitsSettings
from spark_code.photos.layout import LayoutError
from spark_code.photos.listing import class_versions

PHOTOS_ASSET = "class_photos"


def photo_observations(versions: dict[str, str], seen: dict[str, str]) -> list[AssetObservation]:
    """An observation of `class_photos` for each class whose data version is not the one last recorded."""
    return [
        AssetObservation(asset_key=PHOTOS_ASSET, partition=name, tags={DATA_VERSION_TAG: version})
        for name, version in sorted(versions.items())
        if seen.get(name) != version
    ]


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def fruit_class_sensor(
    context: SensorEvaluationContext, settings: FruitsSettings, s3: S3Resource
) -> SensorResult | SkipReason:
    """Register one `fruit_class` partition per class folder found under the images root (either layout), and
    record the data version of each class whose photos changed (the cursor keeps the last ones)."""
    client = s3.get_client() if settings.images_root.startswith("s3://") else None
    try:
        layout = settings.layout(client)
        known = context.instance.get_dynamic_partitions(fruit_class_partitions.name)
        added = [name for name in layout.classes if name not in set(known)]
        versions = class_versions(layout, layout.classes, client)
    except LayoutError as exc:
        return SkipReason(str(exc))
    seen = json.loads(context.cursor) if context.cursor else {}
    observations = photo_observations(versions, seen)
    if not added and not observations:
        return SkipReason("no new class folder and no changed photos")
    if added:
        context.log.info(f"registering {len(added)} new class(es): {', '.join(added[:10])}")
    if observations:
        context.log.info(f"photos changed in {len(observations)} class(es)")
    return SensorResult(
        dynamic_partitions_requests=[fruit_class_partitions.build_add_request(added)] if added else [],
        asset_events=observations,
        cursor=json.dumps(versions),
    )
