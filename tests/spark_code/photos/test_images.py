import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from pillow_heif.as_plugin import HeifImageFile

from spark_code.photos.images import ImageDecodeError, check_image, load_rgb, preprocess
from tests.images_factory import BAD_IMAGES, GOOD_IMAGES, HEADER_INTACT, encoded, fruit_like

# References below are computed from the arrays the images are built from, by formula, never by
# spark_code.photos.images; the files are lossless (PNG, TIFF, GIF), so what is decoded is exactly what was written.


@pytest.mark.parametrize("name", sorted(GOOD_IMAGES))
def test_any_common_image_becomes_a_scaled_rgb_array(name):
    arr = preprocess(GOOD_IMAGES[name], 224)
    assert arr.shape == (224, 224, 3)
    assert arr.dtype == np.float32
    assert arr.min() >= -1.0 and arr.max() <= 1.0


def test_scaling_matches_mobilenet_v2_preprocessing():
    white = encoded(Image.new("RGB", (10, 10), (255, 255, 255)), "PNG")
    black = encoded(Image.new("RGB", (10, 10), (0, 0, 0)), "PNG")
    assert np.all(preprocess(white, 32) == 1.0)
    assert np.all(preprocess(black, 32) == -1.0)


def test_transparent_pixels_become_white_like_the_dataset_background():
    transparent = encoded(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG")
    assert load_rgb(transparent).getpixel((3, 3)) == (255, 255, 255)


def test_sixteen_bit_images_are_scaled_not_clipped():
    mid_grey = encoded(Image.fromarray(np.full((4, 4), 32896, np.uint16)), "PNG")
    assert load_rgb(mid_grey).getpixel((0, 0)) == (128, 128, 128)


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(load_rgb(data), dtype=np.int64)


def _round(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def _on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A colour of opacity alpha (0..1) composited on white: a*c + (1-a)*255, rounded."""
    return _round(alpha * colour + (1 - alpha) * 255)


def _all_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Every pair of 8-bit values, as two 256x256 arrays (first varies along columns, second along rows)."""
    first, second = np.meshgrid(np.arange(256), np.arange(256))
    return first, second


def _png16(pixels: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour): colour type 2 is RGB, 4 grey + alpha, 6
    RGBA; pixels is (height, width, channels) of uint16."""
    height, width = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_cmyk_pixels_follow_the_naive_conversion_formula():
    """Pillow's CMYK -> RGB: R = (255 - C)(255 - K)/255, and likewise G from M and B from Y; every C, K pair."""
    c, k = _all_pairs()
    cmyk = np.stack([c, 255 - c, (c * 7) % 256, k], axis=-1).astype(np.uint8)
    got = _rgb(encoded(Image.fromarray(cmyk, "CMYK"), "TIFF"))
    ink = cmyk[..., :3].astype(np.float64)
    expected = _round((255 - ink) * (255 - k[..., None]) / 255)
    assert np.array_equal(got, expected)
    corners = Image.fromarray(np.array([[[0, 0, 0, 0], [0, 255, 255, 0], [0, 0, 0, 255]]], np.uint8), "CMYK")
    assert _rgb(encoded(corners, "TIFF")).tolist() == [[[255, 255, 255], [255, 0, 0], [0, 0, 0]]]


def test_grayscale_pixels_are_copied_to_the_three_channels():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    got = _rgb(encoded(Image.fromarray(grey, "L"), "PNG"))
    assert np.array_equal(got, np.repeat(grey[..., None].astype(np.int64), 3, axis=-1))
    bilevel = Image.fromarray(np.array([[0, 255, 0]], np.uint8), "L").convert("1")
    assert _rgb(encoded(bilevel, "PNG")).tolist() == [[[0, 0, 0], [255, 255, 255], [0, 0, 0]]]


@pytest.mark.parametrize(("fmt", "dtype"), [("PNG", "<u2"), ("TIFF", "<u2"), ("TIFF", ">u2")])
def test_every_sixteen_bit_grey_value_maps_to_round_v_over_65535_times_255(fmt, dtype):
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    got = _rgb(encoded(Image.fromarray(values.astype(dtype)), fmt))
    expected = _round(values / 65535 * 255)
    assert np.array_equal(got, np.repeat(expected[..., None], 3, axis=-1))


def test_a_dark_sixteen_bit_image_stays_dark():
    """Values up to 255 in a 16-bit file are near black, not taken for 8-bit values."""
    dark = np.array([[0, 100, 200, 255]], np.uint16)
    assert _rgb(encoded(Image.fromarray(dark), "PNG"))[..., 0].tolist() == [[0, 0, 1, 1]]


def test_sixteen_bit_colour_pixels_are_scaled_within_one_level():
    """16-bit RGB: Pillow keeps the high byte (v >> 8), at most one level from round(v / 65535 * 255)."""
    values = np.random.default_rng(3).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    values[0, :3] = [[0, 0, 0], [65535, 65535, 65535], [32896, 1000, 65280]]
    got = _rgb(_png16(values, 2))
    expected = _round(values / 65535 * 255)
    assert np.abs(got - expected).max() <= 1
    assert got[0, :3].tolist() == [[0, 0, 0], [255, 255, 255], [128, 3, 255]]


def test_every_rgba_opacity_is_composited_on_white():
    c, a = _all_pairs()
    rgba = np.stack([c, 255 - c, (c * 7) % 256, a], axis=-1).astype(np.uint8)
    got = _rgb(encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert np.array_equal(got, _on_white(rgba[..., :3].astype(np.float64), a[..., None] / 255))
    # Fully opaque pixels keep their colour exactly; fully transparent ones are white whatever their colour.
    assert np.array_equal(got[a == 255], rgba[a == 255][:, :3]) and np.all(got[a == 0] == 255)


def test_every_grey_and_alpha_pair_is_composited_on_white():
    g, a = _all_pairs()
    la = np.stack([g, a], axis=-1).astype(np.uint8)
    got = _rgb(encoded(Image.fromarray(la, "LA"), "PNG"))
    expected = _on_white(g.astype(np.float64), a / 255)
    assert np.array_equal(got, np.repeat(expected[..., None], 3, axis=-1))


def test_sixteen_bit_alpha_is_composited_on_white_within_two_levels():
    """Pillow keeps the high byte of both colour and alpha, each less than one level off: two levels at most."""
    rng = np.random.default_rng(4)
    rgba = rng.integers(0, 65536, (16, 16, 4)).astype(np.uint16)
    rgba[0, 0], rgba[0, 1] = [1000, 40000, 65535, 0], [1000, 40000, 65535, 65535]
    got = _rgb(_png16(rgba, 6))
    expected = _on_white(rgba[..., :3] / 65535 * 255, rgba[..., 3:] / 65535)
    assert np.abs(got - expected).max() <= 2
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == [3, 156, 255]
    grey_alpha = rgba[..., [0, 3]]
    got = _rgb(_png16(grey_alpha, 4))
    expected = _on_white(grey_alpha[..., :1] / 65535 * 255, grey_alpha[..., 1:] / 65535)
    assert np.abs(got - np.repeat(expected, 3, axis=-1)).max() <= 2


PALETTE = np.array([[200, 30, 40], [10, 220, 90], [0, 0, 255], [250, 250, 5]], np.int64)


def _palette_image(indices: np.ndarray) -> Image.Image:
    img = Image.fromarray(indices.astype(np.uint8), "P")
    img.putpalette(PALETTE.astype(np.uint8).flatten().tolist())
    return img


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_a_palette_image_with_one_transparent_index_is_white_there(fmt):
    indices = np.random.default_rng(5).integers(0, 4, (12, 9))
    got = _rgb(encoded(_palette_image(indices), fmt, transparency=1))
    expected = np.where((indices == 1)[..., None], 255, PALETTE[indices])
    assert np.array_equal(got, expected)


def test_a_palette_image_with_an_alpha_per_index_is_composited_on_white():
    indices = np.random.default_rng(6).integers(0, 4, (12, 9))
    alphas = np.array([255, 128, 0, 37])
    got = _rgb(encoded(_palette_image(indices), "PNG", transparency=bytes(alphas.tolist())))
    assert np.array_equal(got, _on_white(PALETTE[indices].astype(np.float64), alphas[indices][..., None] / 255))


def test_a_colour_key_makes_those_grey_or_rgb_pixels_white():
    """PNG's other transparency: one grey level or one RGB colour (a tRNS colour key) is transparent."""
    grey = np.array([[10, 20, 30], [20, 200, 20]], np.uint8)
    got = _rgb(encoded(Image.fromarray(grey, "L"), "PNG", transparency=20))
    assert got[..., 0].tolist() == [[10, 255, 30], [255, 200, 255]]
    rgb = np.array([[[10, 20, 30], [1, 2, 3], [1, 2, 4]]], np.uint8)
    got = _rgb(encoded(Image.fromarray(rgb, "RGB"), "PNG", transparency=(1, 2, 3)))
    assert got.tolist() == [[[10, 20, 30], [255, 255, 255], [1, 2, 4]]]
    deep = np.array([[100, 40000, 65535]], np.uint16)
    got = _rgb(encoded(Image.fromarray(deep), "PNG", transparency=40000))
    assert got[..., 0].tolist() == [[0, 255, 255]] and got[0, 0, 0] == _round(100 / 65535 * 255)


def test_preprocess_scales_the_reference_pixels_to_minus_one_one():
    """preprocess = load_rgb at the asked size (no resizing when it already is) / 127.5 - 1, on a CMYK and an RGBA
    photo whose expected RGB is known by construction."""
    rng = np.random.default_rng(7)
    cmyk = rng.integers(0, 256, (16, 16, 4)).astype(np.uint8)
    expected = _round((255 - cmyk[..., :3].astype(np.float64)) * (255 - cmyk[..., 3:].astype(np.float64)) / 255)
    got = preprocess(encoded(Image.fromarray(cmyk, "CMYK"), "TIFF"), 16)
    assert np.array_equal(got, expected.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
    rgba = rng.integers(0, 256, (16, 16, 4)).astype(np.uint8)
    expected = _on_white(rgba[..., :3].astype(np.float64), rgba[..., 3:] / 255)
    got = preprocess(encoded(Image.fromarray(rgba, "RGBA"), "PNG"), 16)
    assert np.array_equal(got, expected.astype(np.float32) / np.float32(127.5) - np.float32(1.0))


def test_check_image_reports_size_and_format():
    assert check_image(encoded(fruit_like((37, 21)), "PNG")) == (37, 21, "PNG")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.jpg", "empty file"),
        ("truncated.jpg", "cannot decode"),
        ("truncated.heic", "cannot decode"),
        ("text.jpg", "not an image"),
        ("page.png", "not an image"),
        ("bomb.png", "decompression bomb"),
    ],
)
def test_bad_files_raise_with_a_reason(name, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        preprocess(BAD_IMAGES[name], 224)
    if name in HEADER_INTACT:  # the index reads headers only: the embedding's decode rejects the body
        assert check_image(BAD_IMAGES[name])[2] == {"jpg": "JPEG", "heic": "HEIF"}[name.rsplit(".", 1)[1]]
        return
    with pytest.raises(ImageDecodeError, match=reason):
        check_image(BAD_IMAGES[name])


def test_check_image_decodes_no_pixel(monkeypatch):
    """Indexing reads the header alone: one decode per photo, the embedding's."""
    for decoder in (ImageFile.ImageFile, HeifImageFile):
        monkeypatch.setattr(decoder, "load", lambda self: pytest.fail("check_image decoded pixels"))
    assert check_image(encoded(fruit_like((40, 30)), "JPEG")) == (40, 30, "JPEG")
    assert check_image(encoded(fruit_like((40, 30)), "HEIF")) == (40, 30, "HEIF")


def test_a_damaged_heic_is_decoded_or_rejected_with_a_reason_never_a_crash():
    """HEIC's decoder is another library (libheif, through pillow-heif): bytes damaged anywhere give a picture or an
    ImageDecodeError, never another error that would fail a Spark task or a request."""
    heic = encoded(fruit_like(seed=9), "HEIF", quality=90)
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(60):
        damaged = bytearray(heic)
        for at in rng.integers(0, len(heic), 10):
            damaged[at] = int(rng.integers(0, 256))
        try:
            outcomes.add(preprocess(bytes(damaged), 64).shape)
        except ImageDecodeError:
            outcomes.add("rejected")
    assert "rejected" in outcomes
