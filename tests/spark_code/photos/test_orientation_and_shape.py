"""Photos as phones send them: turned by their EXIF orientation, cropped to their centre square, never squashed."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spark_code.photos.images import centre_square, load_rgb, preprocess
from tests.conftest import SHARED
from tests.images_factory import encoded

ORIENTATION = 0x0112
STORED_AS = {
    # EXIF orientation -> how the camera stored an upright picture (the inverse of what the tag asks a viewer to do).
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.rot90(a[:, ::-1], 1),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: np.rot90(a[:, ::-1], -1),
    8: lambda a: np.rot90(a, -1),
}


def _upright() -> np.ndarray:
    """A 90x150 picture no turn or mirror leaves unchanged: a red top band, a blue left band, noise elsewhere."""
    rng = np.random.default_rng(7)
    array = rng.integers(0, 256, (90, 150, 3), dtype=np.uint8)
    array[:15] = (255, 0, 0)
    array[:, :20] = (0, 0, 255)
    return array


def _exif(orientation: int | None) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    return exif


def _png(array: np.ndarray, orientation: int | None = None) -> bytes:
    return encoded(Image.fromarray(np.ascontiguousarray(array)), "PNG", exif=_exif(orientation))


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_every_exif_orientation_gives_the_upright_photo_bit_for_bit(orientation):
    upright = _upright()
    stored = STORED_AS[orientation](upright)
    assert stored.shape != upright.shape or not np.array_equal(stored, upright)
    assert np.array_equal(np.asarray(load_rgb(_png(stored, orientation))), upright)
    assert np.array_equal(preprocess(_png(stored, orientation), 64), preprocess(_png(upright), 64))


def test_a_phone_photo_stored_sideways_gives_nearly_the_same_array_as_upright():
    """A real field photo (JPEG) re-encoded as a phone stores a portrait shot: turned, with orientation 6."""
    photo = sorted((SHARED / "data" / "field-photos" / "train").glob("*/*.jpg"))[0]
    upright = np.asarray(Image.open(photo).convert("RGB"))
    sideways = encoded(Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))), "JPEG", quality=95, exif=_exif(6))
    reference = encoded(Image.fromarray(upright), "JPEG", quality=95)
    turned, plain = preprocess(sideways, 160), preprocess(reference, 160)
    assert np.abs(turned - plain).mean() < 0.02  # JPEG's re-encoding only
    assert np.abs(np.rot90(turned, 1) - plain).mean() > 5 * np.abs(turned - plain).mean()


def test_an_unreadable_exif_block_keeps_the_pixels_as_stored():
    upright = _upright()
    unreadable = encoded(Image.fromarray(upright), "PNG", exif=b"Exif\x00\x00not a TIFF header")
    assert np.array_equal(np.asarray(load_rgb(unreadable)), upright)


@pytest.mark.parametrize("size", [(300, 150), (150, 300), (464, 348), (348, 464), (101, 100)])
def test_a_photo_that_is_not_square_is_cropped_to_its_centre_square_not_squashed(size):
    """A disc in the middle of the photo stays a disc of the same share of the shorter side."""
    width, height = size
    yy, xx = np.mgrid[:height, :width]
    radius = min(size) * 0.3
    disc = (xx - (width - 1) / 2) ** 2 + (yy - (height - 1) / 2) ** 2 <= radius**2
    array = np.where(disc[..., None], 0, 255).astype(np.uint8).repeat(3, axis=2)
    dark = preprocess(_png(array), 128)[..., 0] < 0
    rows, columns = np.nonzero(dark.any(axis=1))[0], np.nonzero(dark.any(axis=0))[0]
    extent_y, extent_x = rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1
    assert abs(extent_x - extent_y) <= 2, (extent_x, extent_y)
    assert abs(extent_x - 0.6 * 128) <= 3
    assert abs((rows[0] + rows[-1]) / 2 - 63.5) <= 1.5 and abs((columns[0] + columns[-1]) / 2 - 63.5) <= 1.5


def test_the_centre_square_of_a_photo():
    assert centre_square(100, 100) is None
    assert centre_square(464, 348) == (58, 0, 406, 348)
    assert centre_square(348, 464) == (0, 58, 348, 406)
    assert centre_square(5, 2) == (1, 0, 3, 2)


def test_a_square_photo_is_resized_as_before(shared_root: Path):
    """Fruits-360's 100x100 photos give the arrays of a plain bilinear resize (their stored embeddings still hold)."""
    photo = sorted((shared_root / "Training" / "Banana").iterdir())[0]
    expected = np.asarray(Image.open(photo).convert("RGB").resize((160, 160), Image.BILINEAR), np.float32)
    assert np.array_equal(preprocess(photo.read_bytes(), 160), expected / np.float32(127.5) - np.float32(1.0))


def test_an_iphone_photo_in_heic_stored_sideways_gives_nearly_the_same_array_as_upright():
    """HEIC as iPhones write it: the sensor's pixels turned, the turn in the file's `irot` (pillow-heif writes it from
    the EXIF orientation of the saved image's bytes), decoded upright, not turned a second time by the EXIF tag."""
    photo = sorted((SHARED / "data" / "field-photos" / "train").glob("*/*.jpg"))[0]
    upright = np.asarray(Image.open(photo).convert("RGB"))[:, : 3 * min(Image.open(photo).size) // 4]  # a 3:4 shot
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))
    sideways = encoded(stored, "HEIF", quality=95, exif=_exif(6).tobytes())
    reference = encoded(Image.fromarray(upright), "JPEG", quality=95)
    assert load_rgb(sideways).size == Image.fromarray(upright).size
    turned, plain = preprocess(sideways, 160), preprocess(reference, 160)
    assert np.abs(turned - plain).mean() < 0.02  # the two codecs' losses only
    assert np.abs(np.rot90(turned, 1) - plain).mean() > 5 * np.abs(turned - plain).mean()


def test_a_multi_picture_jpeg_gives_its_first_pictures_array_bit_for_bit():
    """MPO (a JPEG followed by more pictures, as some phones and cameras save a shot with a depth map or preview) is
    decoded as the JPEG it starts with: at the same reduced scale (draft mode), to the same array."""
    shot = Image.fromarray(_upright()).resize((1800, 1080))
    mpo = encoded(shot, "MPO", save_all=True, append_images=[shot.resize((180, 108))], quality=90)
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    assert np.array_equal(preprocess(mpo, 160), preprocess(encoded(shot, "JPEG", quality=90), 160))
