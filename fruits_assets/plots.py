"""Plots rendered as PNG inside Markdown metadata, so the Dagster UI shows them as images."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from dagster import MetadataValue  # noqa: E402


def figure_markdown(fig: plt.Figure, alt: str) -> MetadataValue:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")


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
