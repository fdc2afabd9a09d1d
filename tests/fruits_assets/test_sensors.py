import boto3
from dagster import DagsterInstance, SkipReason, build_sensor_context
from dagster_aws.s3 import S3Resource

from fruits_assets.partitions import fruit_class_partitions
from fruits_assets.resources import FruitsSettings
from fruits_assets.sensors import fruit_class_sensor


def test_class_folders_become_partitions_and_new_ones_are_added(small_root, tmp_path):
    root = tmp_path / "images"
    (root / "Training" / "Kiwi").mkdir(parents=True)
    (root / "Test" / "Banana").mkdir(parents=True)
    instance = DagsterInstance.ephemeral()
    settings = FruitsSettings(images_root=str(root))

    result = fruit_class_sensor(build_sensor_context(instance=instance), settings=settings, s3=S3Resource())
    assert result.dynamic_partitions_requests[0].partition_keys == ["Banana", "Kiwi"]
    instance.add_dynamic_partitions(fruit_class_partitions.name, ["Banana", "Kiwi"])

    assert isinstance(
        fruit_class_sensor(build_sensor_context(instance=instance), settings=settings, s3=S3Resource()), SkipReason
    )
    (root / "Training" / "Mango Red").mkdir()
    result = fruit_class_sensor(build_sensor_context(instance=instance), settings=settings, s3=S3Resource())
    assert result.dynamic_partitions_requests[0].partition_keys == ["Mango Red"]


def test_a_bad_root_skips_with_the_reason(tmp_path):
    result = fruit_class_sensor(
        build_sensor_context(instance=DagsterInstance.ephemeral()),
        settings=FruitsSettings(images_root=str(tmp_path / "missing")),
        s3=S3Resource(),
    )
    assert isinstance(result, SkipReason) and "does not exist" in result.skip_message


def test_classes_under_an_s3_root_are_listed_through_the_s3_resource(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="fruits-images", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for key in ("images/Training/Kiwi/1.jpg", "images/Test/Apple Red 2/2.jpg", "images/Training/.hidden/3.jpg"):
        s3.put_object(Bucket="fruits-images", Key=key, Body=b"jpeg")
    settings = FruitsSettings(images_root="s3://fruits-images/images")
    result = fruit_class_sensor(
        build_sensor_context(instance=DagsterInstance.ephemeral()), settings=settings, s3=S3Resource()
    )
    assert result.dynamic_partitions_requests[0].partition_keys == ["Apple Red 2", "Kiwi"]
