"""Draw landmark crosses into a copy of an image's pixels, in the image's own dtype and value range.

The crosses are burnt into the pixels (not an overlay) so that every viewer, PACS and the scanner console shows
them. Each is drawn at the image's brightest value inside a one-pixel outline at its darkest: at a narrow cine
window bright blood shows white like the cross itself, and the dark outline is what keeps it visible there.
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


def outline_value(pixels: np.ndarray) -> np.generic:
    """The value a cross's outline is drawn with: the smallest finite pixel (0 for complex images, whose viewers
    show the magnitude; 0 where no pixel is finite)."""
    finite = pixels[np.isfinite(pixels)]
    if np.iscomplexobj(pixels) or not finite.size:
        return pixels.dtype.type(0)
    return finite.min()


def dashed_segment_pixels(start_rc: Sequence[float], end_rc: Sequence[float], dash_px: int = 2,
                          gap_px: int = 4) -> np.ndarray:
    """The (row, col) pixels, shape (n, 2), of a dashed line from ``start_rc`` to ``end_rc``: one pixel per step
    along its longer axis, ``dash_px`` on and ``gap_px`` off from the start. The gap is wider than the dash's
    outline (one pixel each side), so between the dashes some of the anatomy under the line stays in view."""
    start, end = np.asarray(start_rc, dtype=float), np.asarray(end_rc, dtype=float)
    steps = int(np.ceil(np.max(np.abs(end - start))))
    along = np.arange(steps + 1)
    along = along[along % (dash_px + gap_px) < dash_px]
    return np.rint(start + (end - start) * (along[:, None] / max(steps, 1))).astype(int)


def draw_crosses(
    pixels: np.ndarray,
    points_rc: Iterable[Sequence[float] | None],
    pixel_spacing_mm: Sequence[float],
    cross_size_mm: float = DEFAULT_CROSS_SIZE_MM,
    segments_rc: Iterable[tuple[Sequence[float], Sequence[float]]] = (),
    estimated_rc: Iterable[Sequence[float] | None] = (),
) -> np.ndarray:
    """A copy of ``pixels`` (..., rows, cols) with a '+' at each (row, col) point in every 2-D plane.

    The arms are ``cross_size_mm`` long end to end in each direction (converted with ``pixel_spacing_mm`` =
    (row_mm, col_mm), at least 3 pixels), one pixel wide at :func:`cross_value`, inside a one-pixel outline at
    :func:`outline_value`. Drawn the same way: ``estimated_rc``, points not detected on this image but filled in
    (a long-axis cine's, from the neighbouring phases), as an 'x' whose arms reach as far as the '+' arms' shorter
    one, so that a reader tells them apart; and ``segments_rc``, the (start, end) points of dashed lines
    (:func:`dashed_segment_pixels`; a long-axis image's LV length, apex to mitral midpoint: the measure shown where
    it was measured). Every outline is drawn before any mark, so marks close together do not cut each other.
    ``None`` or NaN points are skipped; marks running off the image are clipped to it.
    """
    annotated = np.array(pixels, copy=True)
    if annotated.ndim < 2:
        raise ValueError(f"expected an image of at least 2 dimensions (rows, cols), got shape {annotated.shape}")
    spacing = checked_pixel_spacing_mm(pixel_spacing_mm)
    if not np.isfinite(cross_size_mm) or cross_size_mm <= 0:
        raise ValueError(f"cross_size_mm must be positive, got {cross_size_mm!r}")
    half_rows, half_cols = (max(1, int(round(cross_size_mm / 2.0 / s))) for s in spacing)
    rows, cols = annotated.shape[-2:]

    def rounded(points: Iterable[Sequence[float] | None]) -> list[tuple[int, int]]:
        return [tuple(int(round(float(c))) for c in point) for point in points
                if point is not None and np.all(np.isfinite(point))]

    centres = rounded(points_rc)
    bright, dark = cross_value(annotated), outline_value(annotated)

    def paint(row_from: int, row_to: int, col_from: int, col_to: int, value: np.generic) -> None:
        # an inclusive box, clipped to the image (a box wholly outside it paints nothing)
        row_slice = slice(max(0, row_from), max(0, min(rows, row_to + 1)))
        annotated[..., row_slice, max(0, col_from) : max(0, min(cols, col_to + 1))] = value

    # the pixels of the dashed lines and of the 'x's, each painted with its 3 x 3 outline
    reach = np.arange(-min(half_rows, half_cols), min(half_rows, half_cols) + 1)
    diagonals = np.concatenate([np.stack([reach, reach], 1), np.stack([reach, -reach], 1)])
    dots = [dashed_segment_pixels(start, end) for start, end in segments_rc if np.all(np.isfinite([*start, *end]))]
    dots += [np.asarray(centre) + diagonals for centre in rounded(estimated_rc)]
    dots = np.concatenate(dots) if dots else np.empty((0, 2), dtype=int)
    for width, value in ((1, dark), (0, bright)):  # the outline one pixel wider all round, then the marks
        for row, col in centres:
            paint(row - width, row + width, col - half_cols - width, col + half_cols + width, value)
            paint(row - half_rows - width, row + half_rows + width, col - width, col + width, value)
        # the dots and, for the outline, their 3 x 3 neighbours, kept inside the image
        around = np.array([(dr, dc) for dr in range(-width, width + 1) for dc in range(-width, width + 1)])
        spots = (dots[:, None, :] + around[None]).reshape(-1, 2)
        spots = spots[(spots[:, 0] >= 0) & (spots[:, 0] < rows) & (spots[:, 1] >= 0) & (spots[:, 1] < cols)]
        annotated[..., spots[:, 0], spots[:, 1]] = value
    return annotated
