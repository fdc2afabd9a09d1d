"""Class discovery: a new class folder under the images root becomes a partition, without code change."""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from fruits_assets.partitions import fruit_class_partitions
from fruits_assets.resources import FruitsSettings
from spark_code.layout import LayoutError


def new_classes(known: list[str], settings: FruitsSettings) -> list[str]:
    """Classes under the images root that are not partitions yet, sorted."""
    existing = set(known)
    return [name for name in settings.layout().classes if name not in existing]


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def fruit_class_sensor(context: SensorEvaluationContext, settings: FruitsSettings) -> SensorResult | SkipReason:
    """Register one `fruit_class` partition per class folder found under `<images_root>/<split>/`."""
    try:
        added = new_classes(context.instance.get_dynamic_partitions(fruit_class_partitions.name), settings)
    except LayoutError as exc:
        return SkipReason(str(exc))
    if not added:
        return SkipReason("no new class folder")
    context.log.info(f"registering {len(added)} new class(es): {', '.join(added[:10])}")
    return SensorResult(dynamic_partitions_requests=[fruit_class_partitions.build_add_request(added)])
