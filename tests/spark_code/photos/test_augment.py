"""Augmented views: what a view does to a studio photo (made by the test), that it is a function of the bytes and
the view number only, and the views as rows (their paths, keys and roles)."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from spark_code.photos.augment import augmented, augmented_rgb, view_key
from spark_code.photos.image_files import CONTENT_KEY
from spark_code.photos.images import ImageDecodeError, preprocess
from spark_code.photos.splits import EVALUATE, ROLE, TRAIN, SplitRoles, with_roles
from spark_code.photos.views import VIEW, is_view, photo_path, view_number, with_views
from tests.images_factory import encoded, fruit_like

STUDIO = encoded(fruit_like((100, 100), seed=3), "JPEG", quality=95)
"""A coloured disc on white, as Fruits-360 shoots a fruit."""


def _white_share(rgb: np.ndarray) -> float:
    return float((rgb.min(axis=2) >= 230).mean())


def test_a_view_is_a_function_of_the_bytes_and_its_number():
    first = augmented(STUDIO, 1, 96)
    assert first.shape == (96, 96, 3) and first.dtype == np.float32
    assert first.min() >= -1 and first.max() <= 1
    assert np.array_equal(first, augmented(STUDIO, 1, 96))
    assert not np.array_equal(first, augmented(STUDIO, 2, 96))
    other = encoded(fruit_like((100, 100), seed=4), "JPEG", quality=95)
    assert not np.array_equal(first, augmented(other, 1, 96))
    assert not np.array_equal(first, preprocess(STUDIO, 96))


def test_views_replace_the_studio_background_and_keep_the_fruit():
    original = (preprocess(STUDIO, 96) + 1) * 127.5
    assert _white_share(original) > 0.4
    views = [np.asarray(augmented_rgb(STUDIO, view, 96)) for view in range(1, 21)]
    # The white studio background is gone from every view; the disc's colour is still there in most of them.
    assert max(_white_share(view) for view in views) < 0.05
    disc = original[48, 48]
    near = [np.abs(view.reshape(-1, 3) - disc).sum(axis=1).min() < 60 for view in views]
    assert sum(near) >= 15


def test_a_photo_without_a_white_background_is_not_composited():
    rng = np.random.default_rng(0)
    scene = encoded(Image.fromarray(rng.integers(0, 200, (80, 120, 3), dtype=np.uint8), "RGB"), "PNG")
    view = np.asarray(augmented_rgb(scene, 1, 64)).astype(float)
    assert view.shape == (64, 64, 3) and _white_share(view) < 0.05


def test_a_file_that_is_no_photo_is_refused_as_the_photo_would_be():
    with pytest.raises(ImageDecodeError):
        augmented(b"not a photo", 1, 96)


def _keyed(spark, split_of: dict[str, str]):
    rows = [
        (f"file:/images/{split}/Kiwi/{name}", "Kiwi", split, hashlib.sha256(name.encode()).hexdigest())
        for name, split in split_of.items()
    ]
    return spark.createDataFrame(rows, f"path string, label string, split string, {CONTENT_KEY} string")


def test_views_are_rows_of_the_training_photos_keyed_by_content_and_number(spark):
    keyed = _keyed(spark, {"a.jpg": "Training", "b.jpg": "Training", "c.jpg": "Test"})
    rows = with_views(keyed, "Training", 2).select(
        "path", CONTENT_KEY, is_view("path").alias("is_view"), photo_path("path").alias("photo"), view_number("path")
    )
    found = {row["path"].rsplit("/", 1)[1]: row for row in rows.collect()}
    assert sorted(found) == ["a.jpg", "a.jpg#view=1", "a.jpg#view=2", "b.jpg", "b.jpg#view=1", "b.jpg#view=2", "c.jpg"]
    a_key = hashlib.sha256(b"a.jpg").hexdigest()
    assert found["a.jpg"][CONTENT_KEY] == a_key and not found["a.jpg"]["is_view"]
    assert found["a.jpg#view=2"][CONTENT_KEY] == view_key(a_key, 2) and found["a.jpg#view=2"]["is_view"]
    assert found["a.jpg#view=2"]["photo"] == found["a.jpg"]["path"]
    assert [found[name][4] for name in ("b.jpg", "b.jpg#view=1", "b.jpg#view=2")] == [0, 1, 2]
    assert with_views(keyed, "Training", 0).count() == 3
    assert VIEW not in with_views(keyed, "Training", 2).columns


def test_views_only_train_and_follow_their_photo_into_the_holdout(spark):
    names = {f"photo_{i}.jpg": "Training" for i in range(60)}
    rows = with_views(_keyed(spark, names), "Training", 2)
    roles = {row["path"]: row[ROLE] for row in with_roles(rows, SplitRoles("Training")).collect()}
    photos = {path: role for path, role in roles.items() if "#view=" not in path}
    held = [path for path, role in photos.items() if role == EVALUATE]
    assert 5 <= len(held) <= 20 and set(photos.values()) == {TRAIN, EVALUATE}
    for path, role in photos.items():
        expected = TRAIN if role == TRAIN else None  # a held-out photo's views are dropped, never evaluated
        assert [roles[f"{path}#view={n}"] for n in (1, 2)] == [expected, expected], path
    # The same photos without views are held out alike.
    plain = with_roles(_keyed(spark, names), SplitRoles("Training")).collect()
    assert {row["path"]: row[ROLE] for row in plain} == photos
