"""PNG pictures of landmarks over their image (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .config import ALL_LANDMARKS  # noqa: E402
from .output_paths import written_beside  # noqa: E402

# One colour per role, the same in both views: first point, second point, centre/apex.
LANDMARK_COLOURS = dict(zip(ALL_LANDMARKS, ("tab:red", "tab:orange", "tab:cyan") * 2, strict=True))
SUPTITLE_MARGIN_INCHES = 0.05  # the phase grid's legend line, from the top edge of the figure
CROSS_SIZE_POINTS = 14  # a landmark's "+" in save_landmark_overlay, across
LABEL_FONT_POINTS = 9
LABEL_GAP_POINTS = 6  # from a cross's centre to its label's nearest corner


def _show_image(axes: plt.Axes, image: np.ndarray, aspect: float) -> None:
    """Magnitude of ``image`` in grey, windowed to its 1st-99.5th percentiles (a few bright pixels do not darken
    the heart). The window comes from the finite pixels: one NaN (an unfitted pixel of a T1 map) would make both
    percentiles NaN and the whole picture black."""
    image = np.abs(np.asarray(image)).astype(np.float64)  # abs first: a cast to float drops a complex imaginary part
    finite = image[np.isfinite(image)]
    low, high = np.percentile(finite, [1.0, 99.5]) if finite.size else (0.0, 1.0)
    axes.imshow(image, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), aspect=aspect, interpolation="nearest")


def _save(figure: plt.Figure, path: Path, **savefig_options) -> Path:
    """Save ``figure`` to ``path`` (written beside and renamed: a failed save leaves no half picture) and close it
    whether or not that worked."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_beside(path) as partial:  # its name ends .partial<pid>: the format from the path's suffix
            figure.savefig(partial, format=path.suffix.lstrip(".") or plt.rcParams["savefig.format"],
                           **savefig_options)
    finally:
        plt.close(figure)
    return path


def label_offset_points(
    point: tuple[float, float], others: Sequence[tuple[float, float]], label_size: tuple[float, float],
) -> tuple[float, float]:
    """Where a landmark's label goes, as (x, y) offset in points of its lower left corner from the landmark, all in
    display points (x right, y up): to the upper right of its cross (the default), or else the first of the other
    three corners whose label box keeps clear of every other landmark's cross, or where none does, the one farthest
    from them. So that a label never hides a neighbour's cross (P-RVI's label lay under C-LV's cross, MV-1's under
    MV-2's)."""
    width, height = label_size
    gap, clearance = LABEL_GAP_POINTS, CROSS_SIZE_POINTS / 2
    candidates = [(gap, gap), (gap, -gap - height), (-gap - width, gap), (-gap - width, -gap - height)]

    def distance_to_nearest_cross(offset: tuple[float, float]) -> float:
        left, bottom = point[0] + offset[0], point[1] + offset[1]
        distances = [np.hypot(max(left - x, 0.0, x - left - width), max(bottom - y, 0.0, y - bottom - height))
                     for x, y in others]
        return min(distances, default=np.inf)

    distances = [distance_to_nearest_cross(offset) for offset in candidates]
    clear = [offset for offset, distance in zip(candidates, distances, strict=True) if distance > clearance]
    return clear[0] if clear else candidates[int(np.argmax(distances))]


def save_landmark_overlay(
    image: np.ndarray,
    points_rc: Mapping[str, tuple[float, float] | None],
    path: Path,
    title: str = "",
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
) -> Path:
    """Draw ``image`` (rows down) with a labelled marker per found landmark; absent landmarks are listed."""
    shape = np.shape(image)
    # Square pixels on screen whatever the spacing: the picture shows the anatomy in mm proportions.
    aspect = pixel_spacing_mm[0] / pixel_spacing_mm[1]
    figure, axes = plt.subplots(figsize=(5, 5 * aspect * shape[0] / shape[1]), dpi=100)
    _show_image(axes, image, aspect)
    missing = [name for name, point in points_rc.items() if point is None]
    found = {name: point for name, point in points_rc.items() if point is not None}
    # the crosses in display points, to place each label clear of the others' (the axes' scale is set by imshow)
    points_per_pixel = 72.0 / figure.dpi
    shown = {name: tuple(axes.transData.transform((point[1], point[0])) * points_per_pixel)
             for name, point in found.items()}
    for name, point in found.items():
        colour = LANDMARK_COLOURS.get(name, "yellow")
        axes.plot(point[1], point[0], marker="+", markersize=CROSS_SIZE_POINTS, markeredgewidth=2, color=colour)
        label_size = (0.6 * LABEL_FONT_POINTS * len(name), LABEL_FONT_POINTS)  # about, in a sans-serif font
        offset = label_offset_points(shown[name], [xy for other, xy in shown.items() if other != name], label_size)
        axes.annotate(name, (point[1], point[0]), xytext=offset, textcoords="offset points", color=colour,
                      fontsize=LABEL_FONT_POINTS, ha="left", va="bottom")
    if missing:
        title = f"{title}  (not found: {', '.join(missing)})" if title else f"not found: {', '.join(missing)}"
    axes.set_title(title, fontsize=9)
    axes.set_axis_off()
    return _save(figure, path, bbox_inches="tight")


def save_phase_overlays(
    images: Sequence[np.ndarray],
    points_rc: Sequence[Mapping[str, tuple[float, float] | None]],
    filled: Sequence[Mapping[str, bool]],
    path: Path,
    titles: Sequence[str] = (),
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
    columns: int = 5,
    margin_mm: float = 50.0,
) -> Path:
    """Every phase of one slice in a grid, one marker per found landmark: filled marker where the landmark was
    seen in that phase, open where it was filled in from the neighbouring phases (``filled[t][name]``).

    The pictures are cropped to the landmarks of all phases plus ``margin_mm`` (the heart, not the chest)."""
    if not len(images) == len(points_rc) == len(filled):
        raise ValueError(f"need one set of points and flags per image, got {len(images)} images, "
                         f"{len(points_rc)} point sets and {len(filled)} flag sets")
    shape = np.asarray(images[0]).shape[-2:]
    found = np.array([p for points in points_rc for p in points.values() if p is not None]).reshape(-1, 2)
    top_left, bottom_right = np.zeros(2, dtype=int), np.array(shape)
    if len(found):
        margin_px = margin_mm / np.asarray(pixel_spacing_mm)
        top_left = np.maximum(np.floor(found.min(axis=0) - margin_px).astype(int), 0)
        bottom_right = np.minimum(np.ceil(found.max(axis=0) + margin_px).astype(int) + 1, shape)
        if np.any(bottom_right <= top_left):  # every point far off the image (an untrained model): show it whole
            top_left, bottom_right = np.zeros(2, dtype=int), np.array(shape)
    height, width = bottom_right - top_left
    rows = int(np.ceil(len(images) / columns))
    aspect = pixel_spacing_mm[0] / pixel_spacing_mm[1]
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows * aspect * height / width),
                                dpi=80, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= len(images):
            continue
        _show_image(axis, np.asarray(images[index])[top_left[0] : bottom_right[0], top_left[1] : bottom_right[1]],
                    aspect)
        for name, point in points_rc[index].items():
            if point is None:
                continue
            colour = LANDMARK_COLOURS.get(name, "yellow")
            row, col = np.asarray(point) - top_left
            axis.plot(col, row, "o", markersize=5, markeredgecolor=colour,
                      markerfacecolor="none" if filled[index].get(name, False) else colour)
        if index < len(titles):
            axis.set_title(titles[index], fontsize=8)
    names = sorted({name for points in points_rc for name in points}, key=ALL_LANDMARKS.index)
    legend = ", ".join(f"{name} {LANDMARK_COLOURS[name].removeprefix('tab:')}" for name in names)
    # At a fixed distance from the top edge: the default y=0.98 is 2% of the height, which on a tall grid lies
    # below the band tight_layout keeps free for the suptitle, over the first row's titles.
    figure.suptitle(f"{legend}; open = filled in from neighbouring phases", fontsize=9,
                    y=1 - SUPTITLE_MARGIN_INCHES / figure.get_figheight(), va="top")
    figure.tight_layout()
    return _save(figure, path)


def save_curve(
    values: Sequence[float | None], path: Path, ylabel: str, title: str = "", xlabel: str = "phase",
    marked: Sequence[bool] = (), marked_label: str = "marked",
) -> Path:
    """A line plot of one value per phase (None/NaN where it is missing); phases where ``marked`` is True get an
    extra open square (e.g. a point filled in from the neighbouring phases)."""
    y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    axes.plot(np.arange(len(y)), y, marker="o")
    marked = np.asarray(marked, dtype=bool)
    if marked.any():
        phases = np.flatnonzero(marked[: len(y)])
        axes.plot(phases, y[phases], "s", markersize=9, markerfacecolor="none", color="tab:red", label=marked_label)
        axes.legend(fontsize=8)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    return _save(figure, path, bbox_inches="tight")
