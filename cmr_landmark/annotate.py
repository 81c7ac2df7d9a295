"""Draw landmark crosses into a copy of an image's pixels, in the image's own dtype and value range.

The crosses are burnt into the pixels (not an overlay) so that every viewer, PACS and the scanner console shows
them; they are drawn at the image's brightest value so they stand out at any window setting a reader picks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .geometry import checked_pixel_spacing_mm

DEFAULT_CROSS_SIZE_MM = 8.0


def cross_value(pixels: np.ndarray) -> np.generic:
    """The value crosses are drawn with: the largest finite pixel (of the magnitude for complex images), or, where
    every pixel has one value (a blank image), a value other than it, so a cross is never invisible (a fitted T1
    map's NaN or infinite pixels do not count: a NaN cross is no cross)."""
    finite = pixels[np.isfinite(pixels)]
    if np.iscomplexobj(pixels):
        peak = np.abs(finite).max() if finite.size else 0.0
        return pixels.dtype.type(peak if peak > 0 else 1.0)
    peak = finite.max() if finite.size else 0
    if finite.size and peak > finite.min():
        return peak
    if np.issubdtype(pixels.dtype, np.integer):
        largest = np.iinfo(pixels.dtype).max
        return largest if peak < largest else np.iinfo(pixels.dtype).min
    return pixels.dtype.type(peak + max(abs(peak), 1.0))  # 0 -> 1, 5 -> 10, -5 -> 0


def draw_crosses(
    pixels: np.ndarray,
    points_rc: Iterable[Sequence[float] | None],
    pixel_spacing_mm: Sequence[float],
    cross_size_mm: float = DEFAULT_CROSS_SIZE_MM,
) -> np.ndarray:
    """A copy of ``pixels`` (..., rows, cols) with a '+' at each (row, col) point in every 2-D plane.

    The arms are ``cross_size_mm`` long end to end in each direction (converted with ``pixel_spacing_mm`` =
    (row_mm, col_mm), at least 3 pixels), one pixel wide. ``None`` or NaN points are skipped; crosses running
    off the image are clipped to it.
    """
    annotated = np.array(pixels, copy=True)
    if annotated.ndim < 2:
        raise ValueError(f"expected an image of at least 2 dimensions (rows, cols), got shape {annotated.shape}")
    spacing = checked_pixel_spacing_mm(pixel_spacing_mm)
    if not np.isfinite(cross_size_mm) or cross_size_mm <= 0:
        raise ValueError(f"cross_size_mm must be positive, got {cross_size_mm!r}")
    half_rows, half_cols = (max(1, int(round(cross_size_mm / 2.0 / s))) for s in spacing)
    rows, cols = annotated.shape[-2:]
    value = cross_value(annotated)
    for point in points_rc:
        if point is None or not np.all(np.isfinite(point)):
            continue
        row, col = (int(round(float(c))) for c in point)
        if 0 <= row < rows:
            annotated[..., row, max(0, col - half_cols) : max(0, min(cols, col + half_cols + 1))] = value
        if 0 <= col < cols:
            annotated[..., max(0, row - half_rows) : max(0, min(rows, row + half_rows + 1)), col] = value
    return annotated
