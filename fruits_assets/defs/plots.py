"""Plots and images rendered as PNG inside Markdown metadata, so the Dagster UI shows them as images."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from dagster import MetadataValue  # noqa: E402
from PIL import Image  # noqa: E402

from spark_code.photos.images import ImageDecodeError, load_rgb  # noqa: E402

THUMBNAIL_SIZE = 96
"""Side of one thumbnail tile, in pixels: Fruits-360 photos are 100x100, so this keeps them sharp and small."""


def png_markdown(png: bytes, alt: str) -> MetadataValue:
    """PNG bytes as a Markdown image with a data URI: the UI renders it without any file server."""
    encoded = base64.b64encode(png).decode("ascii")
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")


def figure_markdown(fig: plt.Figure, alt: str) -> MetadataValue:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return png_markdown(buffer.getvalue(), alt)


def image_markdown(img: Image.Image, alt: str) -> MetadataValue:
    """A Pillow image as Markdown metadata (optimized PNG, since it is stored in every materialization event)."""
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=True)
    return png_markdown(buffer.getvalue(), alt)


def _thumbnail(data: bytes, size: int) -> Image.Image | None:
    """The image fitted in a size x size square, aspect kept; None for a file that does not decode."""
    try:
        img = load_rgb(data)
    except ImageDecodeError:
        return None
    img.thumbnail((size, size))
    return img


def thumbnail_strip(contents: list[bytes], size: int = THUMBNAIL_SIZE) -> Image.Image | None:
    """The decodable images side by side on white, centred in size x size tiles; None when none decodes.

    The strip has a 256-colour palette: half the PNG bytes of RGB, and they are stored with every partition's
    materialization.
    """
    thumbnails = [thumb for thumb in (_thumbnail(data, size) for data in contents) if thumb is not None]
    if not thumbnails:
        return None
    strip = Image.new("RGB", (size * len(thumbnails), size), "white")
    for index, thumb in enumerate(thumbnails):
        strip.paste(thumb, (index * size + (size - thumb.width) // 2, (size - thumb.height) // 2))
    return strip.quantize(256, method=Image.Quantize.MEDIANCUT)


def cumulative_variance_plot(cumulative: list[float], k: int, target: float | None) -> MetadataValue:
    """Cumulative explained variance against the number of components, with the chosen k marked."""
    shown = cumulative[: max(2 * k, 50)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(shown) + 1), shown, lw=2)
    ax.axvline(k, color="tab:red", ls="--", label=f"k = {k} ({cumulative[k - 1]:.3f})")
    if target is not None:
        ax.axhline(target, color="grey", ls=":", label=f"target {target:.2f}")
    ax.set_xlabel("principal components")
    ax.set_ylabel("cumulative explained variance")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return figure_markdown(fig, "cumulative explained variance")


def confusion_matrix_plot(confusion: dict[tuple[str, str], int], labels: list[str]) -> MetadataValue:
    """Row-normalised confusion matrix (true class down, predicted across), log-scaled so rare errors show."""
    import numpy as np
    from matplotlib.colors import LogNorm

    index = {name: i for i, name in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)))
    for (true, predicted), count in confusion.items():
        if true in index and predicted in index:
            matrix[index[true], index[predicted]] += count
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = max(4.0, len(labels) * 0.12)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(np.where(share > 0, share, np.nan), cmap="viridis", norm=LogNorm(vmin=1e-3, vmax=1))
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=5 if len(labels) > 30 else 8)
    ax.set_yticks(range(len(labels)), labels, fontsize=5 if len(labels) > 30 else 8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, label="share of the true class")
    return figure_markdown(fig, "confusion matrix")
