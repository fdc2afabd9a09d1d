"""The feedback area: photos the app's users confirmed or corrected, each stored once by content, with its label, who
sent it and when, on local disk or S3.

Layout, under the feedback root: `<class>/<sha256>.<ext>`, the photos (a `<root>/<class>/<photo>` images root that
the pipeline reads as a training source), and `_records/<sha256>.json`, one record per photo (hidden from Spark's
readers and from the layout's listing by its `_`). A record is written before its photo and removed after it: a
writer stopped midway leaves a record whose photo is missing (listed as such, and removable), never a photo nobody can
trace to its sender; each file is written whole or not at all (spark_code.storage.storage.write_bytes). The changes
of one process (the service's requests, on their threads) are made one at a time: a photo added to a class while its
last photo is deleted, or one photo sent twice at once with two labels, would otherwise lose the new photo or leave a
copy no record names.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from spark_code.photos.images import check_image
from spark_code.photos.layout import is_remote, join_uri, validate_class_name
from spark_code.storage import storage

RECORDS = "_records"
"""The records' folder under the feedback root."""
EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
    "MPO": "jpg",
    "HEIF": "heic",
    "AVIF": "avif",
}
"""File extension of each image format Pillow reports; any other format is stored as `.img`."""


@dataclass(frozen=True)
class FeedbackRecord:
    """One stored photo: its id (the SHA-256 of its bytes), the class a user gave it, who sent it and how (`upload`:
    the photo itself; `answer`: the id of an earlier answer), when (UTC, ISO 8601), its size and where it lies."""

    id: str
    label: str
    sender: str
    source: str
    received_at: str
    size_bytes: int
    path: str


class FeedbackNotFound(KeyError):
    """No stored photo has that id."""


CHANGES = threading.RLock()
"""Held by every change of a feedback area in this process (see the module's docstring)."""


class FeedbackStore:
    """The feedback area under one root (local path or s3://)."""

    def __init__(self, root: str) -> None:
        if not root:
            raise ValueError("no feedback root is set: set FRUITS_FEEDBACK_ROOT or pass --feedback-root")
        self.root = root.rstrip("/")

    def _record_uri(self, photo_id: str) -> str:
        return join_uri(self.root, RECORDS, f"{photo_id}.json")

    def add(self, data: bytes, label: str, sender: str, source: str = "upload") -> FeedbackRecord:
        """Store a photo with its label; the same photo again replaces its label (it moves to the new class) and its
        sender. Raises ImageDecodeError for bytes that are no image and LayoutError for a label that could not be a
        class folder, before anything is written."""
        validate_class_name(label)
        image_format = check_image(data)[2]
        photo_id = hashlib.sha256(data).hexdigest()
        name = f"{photo_id}.{EXTENSIONS.get(image_format, 'img')}"
        record = FeedbackRecord(
            id=photo_id,
            label=label,
            sender=sender,
            source=source,
            received_at=datetime.now(UTC).isoformat(timespec="seconds"),
            size_bytes=len(data),
            path=join_uri(self.root, label, name),
        )
        with CHANGES:
            previous = self.get(photo_id)
            storage.write_text(self._record_uri(photo_id), json.dumps(asdict(record)))
            storage.write_bytes(record.path, data)
            if previous is not None and previous.path != record.path:
                self._delete_photo(previous)
        return record

    def _delete_photo(self, record: FeedbackRecord) -> None:
        """Delete a record's photo, and its class folder once empty (an empty folder would still be a class)."""
        storage.delete(record.path)
        folder = record.path.rsplit("/", 1)[0]
        if not storage.list_names(folder):
            storage.delete(folder)

    def get(self, photo_id: str) -> FeedbackRecord | None:
        """The record of a photo id, or None."""
        text = storage.read_text(self._record_uri(photo_id)) if _is_id(photo_id) else None
        return FeedbackRecord(**json.loads(text)) if text else None

    def records(self) -> list[FeedbackRecord]:
        """Every record, oldest first."""
        names = [name for name in storage.list_names(join_uri(self.root, RECORDS)) if name.endswith(".json")]
        ids = [name.removesuffix(".json") for name in names]
        if is_remote(self.root):  # every training reads them all, for the classifier's sender check
            with ThreadPoolExecutor(storage.REMOTE_READERS) as pool:
                found = list(pool.map(self.get, ids))
        else:
            found = [self.get(photo_id) for photo_id in ids]
        return sorted((record for record in found if record is not None), key=lambda r: (r.received_at, r.id))

    def is_stored(self, record: FeedbackRecord) -> bool:
        """Whether the record's photo is there (a writer stopped between the two writes leaves it missing)."""
        return storage.exists(record.path)

    def listed(self) -> list[dict]:
        """Every record as a dict, oldest first, with `stored`: whether its photo is there (see is_stored)."""
        return [{**asdict(record), "stored": self.is_stored(record)} for record in self.records()]

    def remove(self, photo_id: str) -> FeedbackRecord:
        """Delete a stored photo, then its record; raises FeedbackNotFound for an unknown id."""
        with CHANGES:
            record = self.get(photo_id)
            if record is None:
                raise FeedbackNotFound(photo_id)
            self._delete_photo(record)
            storage.delete(self._record_uri(photo_id))
        return record

    def drop_sender(self, sender: str) -> list[FeedbackRecord]:
        """Delete every photo a sender sent; the records removed (one removed meanwhile by another writer is not)."""
        removed = []
        for record in self.records():
            if record.sender == sender:
                try:
                    removed.append(self.remove(record.id))
                except FeedbackNotFound:
                    continue
        return removed

    def full_id(self, given: str) -> str:
        """The id of the one stored photo whose id starts with `given` (as `fruits feedback list` shows them); raises
        FeedbackNotFound when none does, or more than one."""
        if _is_id(given):
            return given
        matches = [record.id for record in self.records() if given and record.id.startswith(given.lower())]
        if len(matches) == 1:
            return matches[0]
        shared = f" ({len(matches)} stored photos have an id starting so)" if matches else ""
        raise FeedbackNotFound(given + shared)


def _is_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
