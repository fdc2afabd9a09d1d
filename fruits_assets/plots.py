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
