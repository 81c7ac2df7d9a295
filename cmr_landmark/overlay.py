"""PNG pictures of landmarks over their image (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .config import ALL_LANDMARKS  # noqa: E402

# One colour per role, the same in both views: first point, second point, centre/apex.
LANDMARK_COLOURS = dict(zip(ALL_LANDMARKS, ("tab:red", "tab:orange", "tab:cyan") * 2, strict=True))


def save_landmark_overlay(
    image: np.ndarray,
    points_rc: Mapping[str, tuple[float, float] | None],
    path: Path,
    title: str = "",
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
) -> Path:
    """Draw ``image`` (rows down) with a labelled marker per found landmark; absent landmarks are listed."""
    image = np.abs(np.asarray(image, dtype=np.float64))
    low, high = np.percentile(image, [1.0, 99.5])
    # Square pixels on screen whatever the spacing: the picture shows the anatomy in mm proportions.
    aspect = pixel_spacing_mm[0] / pixel_spacing_mm[1]
    figure, axes = plt.subplots(figsize=(5, 5 * aspect * image.shape[0] / image.shape[1]), dpi=100)
    axes.imshow(image, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), aspect=aspect, interpolation="nearest")
    missing = []
    for name, point in points_rc.items():
        if point is None:
            missing.append(name)
            continue
        colour = LANDMARK_COLOURS.get(name, "yellow")
        axes.plot(point[1], point[0], marker="+", markersize=14, markeredgewidth=2, color=colour)
        axes.annotate(name, (point[1], point[0]), xytext=(6, 6), textcoords="offset points", color=colour, fontsize=9)
    if missing:
        title = f"{title}  (not found: {', '.join(missing)})" if title else f"not found: {', '.join(missing)}"
    axes.set_title(title, fontsize=9)
    axes.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path


def save_curve(
    values: Sequence[float | None], path: Path, ylabel: str, title: str = "", xlabel: str = "phase"
) -> Path:
    """A line plot of one value per phase (None/NaN where it is missing)."""
    y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    axes.plot(np.arange(len(y)), y, marker="o")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path
