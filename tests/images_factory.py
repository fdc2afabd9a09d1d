"""Small image files made by the tests: good ones in unusual formats and bad ones of every kind."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from pillow_heif import register_heif_opener

register_heif_opener()  # the tests write HEIC photos as iPhones do (Pillow reads and writes AVIF itself)


def encoded(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def fruit_like(size: tuple[int, int] = (100, 100), seed: int = 0) -> Image.Image:
    """A coloured disc on white, like a Fruits-360 photo."""
    rng = np.random.default_rng(seed)
    height, width = size[1], size[0]
    yy, xx = np.mgrid[0:height, 0:width]
    disc = (xx - width / 2) ** 2 + (yy - height / 2) ** 2 < (min(size) / 2.5) ** 2
    pixels = np.full((height, width, 3), 255, np.uint8)
    pixels[disc] = rng.integers(0, 200, 3, dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb)."""
    data = encoded(Image.new("L", (1, 1), 255), "PNG")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    start = data.index(b"IHDR")
    return data[: start - 4] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[start + 21 :]


GOOD_IMAGES: dict[str, bytes] = {
    "rgb.jpg": encoded(fruit_like(), "JPEG"),
    "grayscale.jpg": encoded(fruit_like(seed=1).convert("L"), "JPEG"),
    "alpha.png": encoded(fruit_like(seed=2).convert("RGBA"), "PNG"),
    "odd size.png": encoded(fruit_like((37, 251), seed=3), "PNG"),
    "sixteen_bit.png": encoded(Image.fromarray(np.full((20, 30), 40000, np.uint16)), "PNG"),
    "cmyk.jpg": encoded(fruit_like(seed=4).convert("CMYK"), "JPEG"),
    "iphone.heic": encoded(fruit_like((90, 120), seed=6), "HEIF", quality=90),
    "web.avif": encoded(fruit_like(seed=7), "AVIF", quality=90),
}

BAD_IMAGES: dict[str, bytes] = {
    "empty.jpg": b"",
    "truncated.jpg": (lambda jpeg: jpeg[: len(jpeg) // 2])(encoded(fruit_like(seed=5), "JPEG")),  # header intact
    "text.jpg": b"this is not an image\n",
    "page.png": b"<!doctype html><html><body>not a png</body></html>",
    "bomb.png": bomb_png(),
    "truncated.heic": (lambda heic: heic[: len(heic) // 2])(encoded(fruit_like(seed=8), "HEIF")),  # header intact
}
HEADER_INTACT = {"truncated.jpg", "truncated.heic"}
"""Bad files whose header still reads: the index (headers only) takes them, the embedding's decode rejects them."""


def write_files(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


HIDDEN_FILES: dict[str, bytes] = {
    ".DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(64),
    "._rgb.jpg": b"\x00\x05\x16\x07AppleDouble resource fork",
}
"""Files every reader skips (Finder metadata, AppleDouble); they are neither embedded nor rejected."""

ODD_NAMES: dict[str, bytes] = {
    'l\'été "mûr" 1.jpg': GOOD_IMAGES["rgb.jpg"],
    'pâte "brisée" 2.png': BAD_IMAGES["page.png"],
}
"""One good and one bad file whose names hold spaces, accents and both kinds of quotes."""


def write_image(path: Path, size: tuple[int, int] = (100, 100), seed: int = 0) -> Path:
    """A fruit-like PNG at `path` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded(fruit_like(size, seed), "PNG"))
    return path
