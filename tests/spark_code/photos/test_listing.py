import os
import shutil

from spark_code.photos.layout import discover_layout, with_source
from spark_code.photos.listing import class_versions


def _write(path, data=b"photo"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_a_class_version_changes_with_its_files_and_only_with_them(tmp_path):
    for name in ("Kiwi", "Banana"):
        _write(tmp_path / "Training" / name / "a.jpg")
        _write(tmp_path / "Test" / name / "b.jpg")
    layout = discover_layout(str(tmp_path))
    first = class_versions(layout, ["Banana", "Kiwi"])
    assert first["Banana"] != first["Kiwi"]  # the names are part of it
    assert class_versions(layout, ["Banana", "Kiwi"]) == first

    _write(tmp_path / "Training" / "Kiwi" / ".DS_Store", b"hidden")
    _write(tmp_path / "Training" / "Kiwi" / "_SUCCESS", b"hidden")
    assert class_versions(layout, ["Kiwi"]) == {"Kiwi": first["Kiwi"]}

    changes = [
        lambda: _write(tmp_path / "Test" / "Kiwi" / "new.jpg"),  # added, in another split
        lambda: (tmp_path / "Test" / "Kiwi" / "new.jpg").unlink(),  # and deleted again: back to the first
        lambda: (tmp_path / "Training" / "Kiwi" / "a.jpg").rename(tmp_path / "Training" / "Kiwi" / "c.jpg"),
        lambda: _write(tmp_path / "Training" / "Kiwi" / "c.jpg", b"other bytes"),
        lambda: os.utime(tmp_path / "Training" / "Kiwi" / "c.jpg", ns=(1, 1)),  # touched
    ]
    seen = [first["Kiwi"]]
    for change in changes:
        change()
        seen.append(class_versions(layout, ["Kiwi"])["Kiwi"])
        assert class_versions(layout, ["Banana"]) == {"Banana": first["Banana"]}
    assert seen[2] == seen[0]
    assert len({seen[0], seen[1], *seen[3:]}) == 5


def test_the_same_files_under_another_root_are_other_data(tmp_path):
    """A copy that keeps names, sizes and times (`cp -p`, `rsync -a`) is still another images root."""
    _write(tmp_path / "one" / "Training" / "Kiwi" / "a.jpg")
    copy = shutil.copytree(tmp_path / "one", tmp_path / "two", copy_function=shutil.copy2)
    versions = [class_versions(discover_layout(str(root)), ["Kiwi"]) for root in (tmp_path / "one", copy)]
    assert versions[0] != versions[1]
    assert class_versions(discover_layout(f"{tmp_path}/two/"), ["Kiwi"]) == versions[1]  # same root, spelled apart


def test_a_feedback_photo_changes_its_class_version_and_only_it(tmp_path):
    for name in ("Kiwi", "Banana"):
        _write(tmp_path / "images" / "Training" / name / "a.jpg")
    plain = discover_layout(str(tmp_path / "images"))
    before = class_versions(plain, ["Banana", "Kiwi"])
    # A feedback area with nothing for a class yet leaves the versions as they are.
    _write(tmp_path / "feedback" / "Banana" / "x.jpg")
    with_banana = with_source(plain, "_feedback", str(tmp_path / "feedback"))
    after = class_versions(with_banana, ["Banana", "Kiwi"])
    assert after["Kiwi"] == before["Kiwi"] and after["Banana"] != before["Banana"]
    _write(tmp_path / "feedback" / "Kiwi" / "y.jpg")
    again = class_versions(with_source(plain, "_feedback", str(tmp_path / "feedback")), ["Banana", "Kiwi"])
    assert again["Banana"] == after["Banana"] and again["Kiwi"] != before["Kiwi"]


def test_s3_versions_come_from_the_listing_etags(aws):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="fruits", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket="fruits", Key="images/Kiwi/a.jpg", Body=b"one")
    s3.put_object(Bucket="fruits", Key="images/Kiwi/.hidden", Body=b"x")
    layout = discover_layout("s3://fruits/images", s3)
    first = class_versions(layout, ["Kiwi"], s3)
    assert class_versions(layout, ["Kiwi"], s3) == first
    s3.put_object(Bucket="fruits", Key="images/Kiwi/a.jpg", Body=b"two")  # same size, other bytes
    assert class_versions(layout, ["Kiwi"], s3) != first
