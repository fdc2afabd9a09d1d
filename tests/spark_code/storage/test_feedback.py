"""The feedback area on local disk and on S3: each photo once by content with its label and sender, relabelled in
place, removed with its record, a sender's photos dropped together; nothing written for bad input; a writer stopped
between the record and the photo leaves a record whose photo is missing, and no part of a photo."""

import json
import os

import boto3
import pytest

from spark_code.photos.images import ImageDecodeError
from spark_code.photos.layout import LayoutError, discover_layout
from spark_code.storage import storage
from spark_code.storage.feedback import RECORDS, FeedbackNotFound, FeedbackStore
from tests.images_factory import GOOD_IMAGES


def _files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return FeedbackStore(str(tmp_path / "feedback"))
    request.getfixturevalue("aws")
    boto3.client("s3").create_bucket(Bucket="fruits-fb", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return FeedbackStore("s3://fruits-fb/feedback")


def test_a_photo_is_stored_once_by_content_with_its_label_and_sender(store):
    jpeg, png = GOOD_IMAGES["rgb.jpg"], GOOD_IMAGES["alpha.png"]
    first = store.add(jpeg, "Kiwi", "user-1")
    assert first.path.endswith(f"/Kiwi/{first.id}.jpg") and first.size_bytes == len(jpeg)
    assert store.add(jpeg, "Kiwi", "user-1").id == first.id and len(store.records()) == 1
    other = store.add(png, "Banana", "user-2", source="answer")
    assert other.path.endswith(".png") and other.source == "answer"
    assert {(r.label, r.sender) for r in store.records()} == {("Kiwi", "user-1"), ("Banana", "user-2")}
    assert all(store.is_stored(r) for r in store.records())
    # The feedback root is an images root of its own: <root>/<class>/<photo>, the records hidden.
    assert discover_layout(store.root).classes == ["Banana", "Kiwi"]
    # The same photo with another label moves to that class.
    moved = store.add(jpeg, "Apple Braeburn", "user-3")
    assert store.get(first.id) == moved and store.is_stored(moved) and not storage.exists(first.path)
    assert discover_layout(store.root).classes == ["Apple Braeburn", "Banana"]


def test_remove_and_drop_a_sender(store):
    a = store.add(GOOD_IMAGES["rgb.jpg"], "Kiwi", "flooder")
    b = store.add(GOOD_IMAGES["alpha.png"], "Kiwi", "flooder")
    c = store.add(GOOD_IMAGES["grayscale.jpg"], "Banana", "someone")
    assert store.remove(c.id) == c and not storage.exists(c.path) and store.get(c.id) is None
    with pytest.raises(FeedbackNotFound):
        store.remove(c.id)
    assert sorted(r.id for r in store.drop_sender("flooder")) == sorted([a.id, b.id])
    assert store.records() == [] and not any(storage.exists(r.path) for r in (a, b))


def test_bad_input_writes_nothing(tmp_path):
    store = FeedbackStore(str(tmp_path / "feedback"))
    with pytest.raises(ImageDecodeError):
        store.add(b"not a photo", "Kiwi", "user")
    for label in ("", "..", "a/b", "_hidden"):
        with pytest.raises(LayoutError):
            store.add(GOOD_IMAGES["rgb.jpg"], label, "user")
    assert not (tmp_path / "feedback").exists()
    with pytest.raises(ValueError, match="FRUITS_FEEDBACK_ROOT"):
        FeedbackStore("")


def test_a_writer_stopped_before_the_photo_leaves_a_record_to_remove_and_no_part(tmp_path, monkeypatch):
    store = FeedbackStore(str(tmp_path / "feedback"))
    kept = store.add(GOOD_IMAGES["rgb.jpg"], "Kiwi", "user")
    real = storage.write_bytes

    def stopped(uri: str, data: bytes) -> None:
        if not uri.endswith(".json"):
            raise KeyboardInterrupt  # the process stopped while the photo was being written
        real(uri, data)

    monkeypatch.setattr(storage, "write_bytes", stopped)
    with pytest.raises(KeyboardInterrupt):
        store.add(GOOD_IMAGES["alpha.png"], "Banana", "user")
    monkeypatch.setattr(storage, "write_bytes", real)
    records = {r.label: r for r in store.records()}
    assert store.is_stored(records["Kiwi"]) and not store.is_stored(records["Banana"])
    assert _files(tmp_path / "feedback") == sorted(
        [f"Kiwi/{kept.id}.jpg", f"{RECORDS}/{kept.id}.json", f"{RECORDS}/{records['Banana'].id}.json"]
    )
    store.remove(records["Banana"].id)
    assert [r.id for r in store.records()] == [kept.id]
    assert json.loads((tmp_path / "feedback" / RECORDS / f"{kept.id}.json").read_text())["label"] == "Kiwi"
