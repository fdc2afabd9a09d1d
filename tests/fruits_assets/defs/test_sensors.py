import boto3
import pytest
from dagster import DagsterInstance, SkipReason, build_sensor_context
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster_aws.s3 import S3Resource

from fruits_assets.defs.partitions import fruit_class_partitions
from fruits_assets.defs.resources import FruitsSettings
from fruits_assets.defs.sensors import fruit_class_sensor
from tests.images_factory import write_image


def _tick(instance: DagsterInstance, settings: FruitsSettings, cursor: str | None = None):
    return fruit_class_sensor(
        build_sensor_context(instance=instance, cursor=cursor), settings=settings, s3=S3Resource()
    )


def _observed(result) -> dict[str, str]:
    return {event.partition: event.tags[DATA_VERSION_TAG] for event in result.asset_events}


def test_class_folders_become_partitions_and_new_ones_are_added(tmp_path):
    root = tmp_path / "images"
    (root / "Training" / "Kiwi").mkdir(parents=True)
    (root / "Test" / "Banana").mkdir(parents=True)
    instance = DagsterInstance.ephemeral()
    settings = FruitsSettings(images_root=str(root))

    result = _tick(instance, settings)
    assert result.dynamic_partitions_requests[0].partition_keys == ["Banana", "Kiwi"]
    instance.add_dynamic_partitions(fruit_class_partitions.name, ["Banana", "Kiwi"])

    assert isinstance(_tick(instance, settings, result.cursor), SkipReason)
    (root / "Training" / "Mango Red").mkdir()
    result = _tick(instance, settings, result.cursor)
    assert result.dynamic_partitions_requests[0].partition_keys == ["Mango Red"]
    assert list(_observed(result)) == ["Mango Red"]


@pytest.mark.slow
def test_changed_photos_get_a_new_data_version_and_nothing_else_does(tmp_path):
    root = tmp_path / "images"
    for name in ("Kiwi", "Banana"):
        write_image(root / "Training" / name / "a.png", seed=1)
    instance = DagsterInstance.ephemeral()
    settings = FruitsSettings(images_root=str(root))
    first = _tick(instance, settings)
    assert set(_observed(first)) == {"Banana", "Kiwi"}
    instance.add_dynamic_partitions(fruit_class_partitions.name, ["Banana", "Kiwi"])

    write_image(root / "Training" / "Kiwi" / "b.png", seed=2)  # a new photo
    second = _tick(instance, settings, first.cursor)
    assert list(_observed(second)) == ["Kiwi"] and not second.dynamic_partitions_requests
    assert _observed(second)["Kiwi"] != _observed(first)["Kiwi"]

    (root / "Training" / "Kiwi" / "b.png").unlink()  # deleted again: back to the first listing
    third = _tick(instance, settings, second.cursor)
    assert _observed(third) == {"Kiwi": _observed(first)["Kiwi"]}
    (root / "Training" / "Banana" / ".DS_Store").write_bytes(b"hidden")  # hidden files are not photos
    assert isinstance(_tick(instance, settings, third.cursor), SkipReason)


def test_a_bad_root_skips_with_the_reason(tmp_path):
    result = _tick(DagsterInstance.ephemeral(), FruitsSettings(images_root=str(tmp_path / "missing")))
    assert isinstance(result, SkipReason) and "does not exist" in result.skip_message


def test_classes_under_an_s3_root_are_listed_through_the_s3_resource(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="fruits-images", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for key in ("images/Training/Kiwi/1.jpg", "images/Test/Apple Red 2/2.jpg", "images/Training/.hidden/3.jpg"):
        s3.put_object(Bucket="fruits-images", Key=key, Body=b"jpeg")
    settings = FruitsSettings(images_root="s3://fruits-images/images")
    instance = DagsterInstance.ephemeral()
    first = _tick(instance, settings)
    assert first.dynamic_partitions_requests[0].partition_keys == ["Apple Red 2", "Kiwi"]
    instance.add_dynamic_partitions(fruit_class_partitions.name, ["Apple Red 2", "Kiwi"])

    s3.put_object(Bucket="fruits-images", Key="images/Training/Kiwi/1.jpg", Body=b"other jpeg")  # new ETag
    second = _tick(instance, settings, first.cursor)
    assert list(_observed(second)) == ["Kiwi"]
