"""Class discovery: a new class folder under the images root becomes a partition, without code change."""

from typing import Any

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor
from dagster_aws.s3 import S3Resource

from fruits_assets.partitions import fruit_class_partitions
from fruits_assets.resources import FruitsSettings
from spark_code.layout import LayoutError


def new_classes(known: list[str], settings: FruitsSettings, s3: Any = None) -> list[str]:
    """Classes under the images root that are not partitions yet, sorted (`s3`: a boto3 client for s3:// roots)."""
    existing = set(known)
    return [name for name in settings.layout(s3).classes if name not in existing]


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def fruit_class_sensor(
    context: SensorEvaluationContext, settings: FruitsSettings, s3: S3Resource
) -> SensorResult | SkipReason:
    """Register one `fruit_class` partition per class folder found under the images root (either layout)."""
    try:
        known = context.instance.get_dynamic_partitions(fruit_class_partitions.name)
        added = new_classes(known, settings, s3.get_client() if settings.images_root.startswith("s3://") else None)
    except LayoutError as exc:
        return SkipReason(str(exc))
    if not added:
        return SkipReason("no new class folder")
    context.log.info(f"registering {len(added)} new class(es): {', '.join(added[:10])}")
    return SensorResult(dynamic_partitions_requests=[fruit_class_partitions.build_add_request(added)])
