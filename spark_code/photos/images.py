"""Decoding any common photo into the exact array MobileNetV2 was trained on.

The same function serves Spark workers and single-photo prediction, so features of one image never depend on the
path it took.
"""

from __future__ import annotations

import io
import re
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from spark_code.settings import MAX_IMAGE_PIXELS

# HEIC/HEIF, the format iPhones' cameras save by default (Pillow reads AVIF, JPEG, PNG, WebP... itself): libheif
# applies the file's own rotation and mirror (`irot`, `imir`) as it decodes, and the plugin then sets the EXIF
# orientation to 1, so that `_turn_upright` never turns such a photo twice.
register_heif_opener()

PREPROCESSING_VERSION = 4
"""The version of what this module does to a photo's bytes: raise it with any change that alters the array a photo
gives (decoding, colour conversion, resizing, scaling), so that stored embeddings of the old arrays are not reused.
2: PNG colour-key transparency composited on white. 3: the EXIF orientation applied; a photo that is not square is
cropped to its centre square instead of squashed (square photos, such as Fruits-360's, give the same arrays as 2).
4: HEIC/HEIF photos decoded (rejected as an unrecognised format before); multi-picture JPEGs (MPO: some phones'
and cameras' shots with a second picture) decoded at a reduced scale as any JPEG is (fully before); every other
photo's array as in 3."""


class ImageDecodeError(ValueError):
    """A file that is not a usable image; the message is the reason recorded for it. Only this error makes a file
    "rejected": anything else (a missing codec, memory, a bug) fails the task, so good photos are never dropped."""


class MissingCodecError(RuntimeError):
    """Pillow was built without the decoder a file needs: the machine's fault, not the photo's."""


_FILE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)
"""What Pillow raises for bytes that are not a valid image of their format."""


def _decoding_error(exc: Exception) -> Exception:
    """The error to raise for a Pillow failure: a missing decoder is the machine's; anything else is the file's."""
    if isinstance(exc, OSError) and re.search(r"(decoder|encoder) \S+ not available", str(exc)):
        return MissingCodecError(f"this Python's Pillow cannot decode the file: {exc}")
    return ImageDecodeError(f"cannot decode image: {exc}")


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageDecodeError("empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as exc:
            raise ImageDecodeError("not an image (unrecognised format)") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(f"decompression bomb refused: {exc}") from exc
        except _FILE_ERRORS as exc:
            raise _decoding_error(exc) from exc
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(f"decompression bomb refused: {width}x{height} pixels declared")
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB on white: transparency is composited on white (Fruits-360 backgrounds), 16-bit and CMYK are scaled.

    Transparency is an alpha channel, a palette's alpha, or a colour key (PNG's tRNS for grey and RGB images: the
    pixels of that one value are transparent).
    """
    key = img.info.get("transparency")
    if img.mode in {"I;16", "I;16B", "I;16L", "I"}:
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if isinstance(key, int):
            img = Image.fromarray(np.stack([grey, np.where(arr == key, 0, 255).astype(np.uint8)], axis=-1), "LA")
        else:
            img = Image.fromarray(grey, mode="L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), mode="L")
    elif img.mode in {"L", "RGB"} and key is not None:
        img = img.convert("RGBA")  # Pillow turns the colour key into alpha
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in {"RGBA", "LA", "RGBa", "La"}:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def centre_square(width: int, height: int) -> tuple[int, int, int, int] | None:
    """The box of a photo's centre square (left, top, right, bottom), or None for a square photo.

    Phones frame the fruit in the middle: cropping keeps its shape and scale, where squashing a 3:4 photo to a square
    made every fruit a third narrower than any training photo, and padding would shrink it in a border the studio
    photos never have."""
    if width == height:
        return None
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _turn_upright(img: Image.Image) -> None:
    """Apply the EXIF orientation in place: phones store a photo as the sensor saw it and say in that tag how to turn
    it. A photo whose EXIF block is unreadable keeps its pixels as stored (its pixels are still good)."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except (SyntaxError, struct.error, ValueError, KeyError, TypeError):
        return


def _decode(img: Image.Image, size: int | None) -> Image.Image:
    try:
        if size is not None and img.format in {"JPEG", "MPO"}:  # MPO: a JPEG with more pictures after it
            # Large JPEGs decode at a reduced scale (both sides still >= size): much faster, and a no-op for
            # 100x100 images.
            img.draft("RGB", (size, size))
        img.load()
        _turn_upright(img)
        rgb = _to_rgb(img)
    except _FILE_ERRORS as exc:
        raise _decoding_error(exc) from exc
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR, box=centre_square(*rgb.size))
    return rgb


def load_rgb(data: bytes, size: int | None = None) -> Image.Image:
    """Decode bytes fully into an upright RGB image, its centre square resized to size x size when a size is given.

    Raises ImageDecodeError with a readable reason for anything that is not a decodable image.
    """
    return _decode(_open(data), size)


def preprocess(data: bytes, size: int) -> np.ndarray:
    """Bytes to a (size, size, 3) float32 array scaled to [-1, 1], as MobileNetV2's preprocess_input does."""
    arr = np.asarray(load_rgb(data, size), dtype=np.float32)
    # In place: the same float32 arithmetic as `arr / 127.5 - 1.0` without two fresh 600 kB temporaries per image,
    # which cost more than the decoding itself.
    np.divide(arr, np.float32(127.5), out=arr)
    np.subtract(arr, np.float32(1.0), out=arr)
    return arr


def check_image(data: bytes) -> tuple[int, int, str]:
    """Width, height and format from an image's header; raises ImageDecodeError for a file that is no image, or
    declares a decompression bomb.

    No pixel is decoded: indexing a photo must not cost a second decode, since embedding it decodes it anyway (and
    rejects a file whose body is truncated or corrupt, with the reason)."""
    img = _open(data)
    width, height = img.size
    return width, height, img.format or "unknown"
