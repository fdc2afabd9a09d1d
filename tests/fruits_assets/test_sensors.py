from dagster import DagsterInstance, SkipReason, build_sensor_context

from fruits_assets.partitions import fruit_class_partitions
from fruits_assets.resources import FruitsSettings
from fruits_assets.sensors import fruit_class_sensor


def test_class_folders_become_partitions_and_new_ones_are_added(small_root, tmp_path):
    root = tmp_path / "images"
    (root / "Training" / "Kiwi").mkdir(parents=True)
    (root / "Test" / "Banana").mkdir(parents=True)
    instance = DagsterInstance.ephemeral()
    settings = FruitsSettings(images_root=str(root))

    result = fruit_class_sensor(build_sensor_context(instance=instance), settings=settings)
    assert result.dynamic_partitions_requests[0].partition_keys == ["Banana", "Kiwi"]
    instance.add_dynamic_partitions(fruit_class_partitions.name, ["Banana", "Kiwi"])

    assert isinstance(fruit_class_sensor(build_sensor_context(instance=instance), settings=settings), SkipReason)
    (root / "Training" / "Mango Red").mkdir()
    result = fruit_class_sensor(build_sensor_context(instance=instance), settings=settings)
    assert result.dynamic_partitions_requests[0].partition_keys == ["Mango Red"]


def test_a_bad_root_skips_with_the_reason(tmp_path):
    result = fruit_class_sensor(
        build_sensor_context(instance=DagsterInstance.ephemeral()),
        settings=FruitsSettings(images_root=str(tmp_path / "missing")),
    )
    assert isinstance(result, SkipReason) and "does not exist" in result.skip_message
