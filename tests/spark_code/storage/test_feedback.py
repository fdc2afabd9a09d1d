"""The feedback area on local disk and on S3: each photo once by content with its label and sender, relabelled in
place, removed with its record, a sender's photos dropped together; nothing written for bad input; a writer stopped
between the record and the photo leaves a record whose photo is missing, and no part of a photo."""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from spark_code.photos.images import ImageDecodeError
from spark_code.photos.layout import LayoutError, discover_layout
from spark_code.storage import storage
from spark_code.storage.feedback import RECORDS, FeedbackNotFound, FeedbackStore
from tests.images_factory import GOOD_IMAGES, encoded, fruit_like


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


def _distinct_photos(count: int) -> list[bytes]:
    return [encoded(fruit_like((24, 24), seed=seed), "PNG") for seed in range(count)]


def test_a_photo_added_while_its_class_loses_its_last_photo_is_kept(tmp_path, monkeypatch):
    """The service's requests run on threads: a delete of a class's last photo (which deletes the emptied class
    folder) beside an add to that class. A listing whose answer is 20 ms old (as S3's can be) widens the gap: without
    the store's lock the new photo was deleted with the folder, or its write failed."""
    list_names = storage.list_names
    monkeypatch.setattr(storage, "list_names", lambda uri: (list_names(uri), time.sleep(0.02))[0])
    store = FeedbackStore(str(tmp_path / "feedback"))
    photos = _distinct_photos(16)
    with ThreadPoolExecutor(2) as pool:
        for last, new in zip(photos[::2], photos[1::2], strict=True):
            kept = store.add(last, "Kiwi", "a")
            removing = pool.submit(store.remove, kept.id)
            added = pool.submit(store.add, new, "Kiwi", "b").result()
            removing.result()
            assert store.is_stored(added) and store.get(added.id) == added
            store.remove(added.id)


def test_one_photo_sent_twice_at_once_with_two_labels_lies_in_one_class(tmp_path, monkeypatch):
    """Both requests looked for the photo's record before either wrote it (a read whose answer is 20 ms old widens
    the gap): without the store's lock both wrote their photo, and the copy whose record lost stayed, untraceable."""
    read_text = storage.read_text
    monkeypatch.setattr(storage, "read_text", lambda uri: (read_text(uri), time.sleep(0.02))[0])
    store = FeedbackStore(str(tmp_path / "feedback"))
    with ThreadPoolExecutor(2) as pool:
        for photo in _distinct_photos(10):
            for future in [pool.submit(store.add, photo, label, label) for label in ("Kiwi", "Banana")]:
                future.result()
            (record,) = [r for r in store.records() if r.size_bytes == len(photo)]
            copies = [name for name in _files(store.root) if not name.startswith(RECORDS) and record.id in name]
            assert copies == [f"{record.label}/{record.id}.png"]
            store.remove(record.id)


def test_a_sender_dropped_while_another_writer_removes_one_of_its_photos(tmp_path, monkeypatch):
    store = FeedbackStore(str(tmp_path / "feedback"))
    a, b = (store.add(photo, "Kiwi", "flooder") for photo in _distinct_photos(2))
    listed = store.records()
    store.remove(a.id)  # by the service, after drop-sender listed the records
    monkeypatch.setattr(store, "records", lambda: listed)
    assert store.drop_sender("flooder") == [b]
    monkeypatch.undo()
    assert store.records() == []


def test_a_photo_is_named_by_the_start_of_its_id_when_one_photo_has_it(tmp_path):
    store = FeedbackStore(str(tmp_path / "feedback"))
    records = [store.add(photo, "Kiwi", "a") for photo in _distinct_photos(17)]
    assert store.full_id(records[0].id[:12]) == records[0].id == store.full_id(records[0].id)
    # 17 ids of 16 possible first digits: two start alike
    shared = next(r.id[0] for r in records if sum(o.id[0] == r.id[0] for o in records) > 1)
    with pytest.raises(FeedbackNotFound, match="stored photos have an id starting so"):
        store.full_id(shared)
    with pytest.raises(FeedbackNotFound):
        store.full_id("")
    with pytest.raises(FeedbackNotFound):
        store.full_id("not hex")
