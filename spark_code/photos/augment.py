"""Training views of a photo: a studio shot seen as a phone in a shop would see it.

Studio photos show one fruit on white; the app's photos show fruit in crates and bags, in a hand, under shop lights.
A view takes the photo's fruit (what is not the white background), puts one or a few copies of it, turned and
scaled, on a generated background (smooth fields of random colours with texture: shelves, crates and walls out of
focus), and varies the light, the focus and the JPEG compression. A photo without a white background keeps all of
its pixels as the fruit: it is turned, scaled, lit and blurred, not composited.

A view is a pure function of the photo's bytes and its number: the same view of the same photo is the same array on
any machine, which is what lets the embedding store keep it under the photo's content key and the view's
(`view_key`), so that a rerun embeds no view twice.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from spark_code.photos.images import load_rgb

AUGMENTATION_VERSION = 1
"""The version of the views this module makes: raise it with any change to the recipe, so that stored embeddings of
the old views are not reused."""
MAX_VIEWS = 20
"""The most views of a photo a run may ask for (each costs the model a pass over the training photos)."""
VIEW_MARK = "#view="
"""What a view's path adds to its photo's: `<photo path>#view=<n>`, n from 1."""

WHITE = 230
"""A pixel whose every channel is at least this is studio background (Fruits-360's is 250-255 but for JPEG noise)."""
SPECKS = 5
"""Pixels of the opening that removes white specks inside a fruit (highlights) from the background mask."""


def view_key(content_key: str, view: int) -> str:
    """The embedding store's key of a view: the photo's content key, the recipe's version and the view's number."""
    return f"{content_key}:augment{AUGMENTATION_VERSION}:{view}"


def _rng(data: bytes, view: int) -> np.random.Generator:
    seed = hashlib.sha256(data + f":{AUGMENTATION_VERSION}:{view}".encode()).digest()
    return np.random.default_rng(int.from_bytes(seed[:8], "little"))


def _fruit_mask(rgb: Image.Image) -> Image.Image:
    """255 where the fruit is, 0 on the white background, with soft edges; all 255 for a photo with no white."""
    white = (np.asarray(rgb).min(axis=2) >= WHITE).astype(np.uint8) * 255
    background = Image.fromarray(white, "L").filter(ImageFilter.MinFilter(SPECKS)).filter(ImageFilter.MaxFilter(SPECKS))
    fruit = Image.fromarray(255 - np.asarray(background), "L").filter(ImageFilter.MinFilter(3))  # no white fringe
    return fruit.filter(ImageFilter.GaussianBlur(1))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth field of random colours (a coarse grid of them, upscaled, more or less greyed) with a grain of random
    strength."""
    cells = int(rng.integers(2, 7))
    coarse = rng.uniform(0, 255, (cells, cells, 3))
    coarse = coarse.mean(axis=2, keepdims=True) + rng.uniform(0.2, 1.0) * (coarse - coarse.mean(axis=2, keepdims=True))
    smooth = Image.fromarray(coarse.astype(np.uint8), "RGB").resize((size, size), Image.BICUBIC)
    field = np.asarray(smooth, np.float32)
    grain = rng.normal(0, rng.uniform(0, 25), (size, size, 1)).astype(np.float32)
    return Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8), "RGB")


def _place(canvas: Image.Image, fruit: Image.Image, mask: Image.Image, rng: np.random.Generator) -> None:
    """One copy of the fruit on the canvas: turned, scaled (from a third of the frame to a close-up), anywhere its
    centre stays inside the frame."""
    size = canvas.size[0]
    angle = float(rng.uniform(0, 360))
    side = max(8, int(size * rng.uniform(0.35, 1.3)))
    turned = fruit.rotate(angle, Image.BILINEAR).resize((side, side), Image.BILINEAR)
    alpha = mask.rotate(angle, Image.BILINEAR).resize((side, side), Image.BILINEAR)
    x, y = (int(rng.uniform(0, size)) - side // 2 for _ in range(2))
    canvas.paste(turned, (x, y), alpha)


def augmented_rgb(data: bytes, view: int, size: int) -> Image.Image:
    """View `view` (from 1) of a photo's bytes, as a size x size RGB image. Raises ImageDecodeError as load_rgb does."""
    rng = _rng(data, view)
    fruit = load_rgb(data, size)
    mask = _fruit_mask(fruit)
    composited = np.asarray(mask).mean() < 250  # some white background to replace
    canvas = _background(rng, size) if composited else fruit.copy()
    copies = int(rng.choice([1, 1, 2, 3, 4])) if composited else 1
    for _ in range(copies):
        _place(canvas, fruit, mask, rng)
    canvas = ImageEnhance.Brightness(canvas).enhance(rng.uniform(0.6, 1.3))
    canvas = ImageEnhance.Contrast(canvas).enhance(rng.uniform(0.7, 1.3))
    canvas = ImageEnhance.Color(canvas).enhance(rng.uniform(0.7, 1.3))
    if rng.random() < 0.5:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    if rng.random() < 0.5:
        encoded = io.BytesIO()
        canvas.save(encoded, "JPEG", quality=int(rng.integers(40, 91)))
        canvas = Image.open(encoded).convert("RGB")
    return canvas


def augmented(data: bytes, view: int, size: int) -> np.ndarray:
    """View `view` of a photo as the model's input: a (size, size, 3) float32 array in [-1, 1], as `preprocess`."""
    arr = np.asarray(augmented_rgb(data, view, size), dtype=np.float32)
    return arr / np.float32(127.5) - np.float32(1.0)
