"""Preprocessing shared by training and inference, and its exact inverse for points.

One affine map takes a pixel of the network grid to a pixel of the original image:

    image_rc = matrix @ grid_rc + offset          (both (row, col), in pixels)

Resampling to the grid's mm spacing, cropping/padding to its fixed size, centring on a point, and the
training augmentation (rotation, scale, translation, mirror) are all folded into that one map, so an image is
interpolated exactly once and points go back through the inverse without approximation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .config import StageGrid


@dataclass(frozen=True)
class GridTransform:
    """Affine map from network-grid pixels (row, col) to original-image pixels (row, col)."""

    matrix: np.ndarray  # (2, 2)
    offset: np.ndarray  # (2,)
    size_px: int

    def grid_to_image(self, points_rc: np.ndarray) -> np.ndarray:
        """Grid pixel coordinates (..., 2) -> original image pixel coordinates (..., 2). NaN stays NaN."""
        points_rc = np.asarray(points_rc, dtype=np.float64)
        return points_rc @ self.matrix.T + self.offset

    def image_to_grid(self, points_rc: np.ndarray) -> np.ndarray:
        """Original image pixel coordinates (..., 2) -> grid pixel coordinates (..., 2). NaN stays NaN."""
        points_rc = np.asarray(points_rc, dtype=np.float64)
        return (points_rc - self.offset) @ np.linalg.inv(self.matrix).T


def grid_transform(
    image_shape: tuple[int, int],
    pixel_spacing_mm: tuple[float, float],
    grid: StageGrid,
    centre_rc: tuple[float, float] | None = None,
    rotation_rad: float = 0.0,
    scale: float = 1.0,
    mirror: bool = False,
) -> GridTransform:
    """The map from ``grid`` pixels to pixels of an image with ``image_shape`` and ``pixel_spacing_mm``.

    ``centre_rc`` (image pixels) lands at the grid centre; default the image centre. ``scale`` > 1 zooms in
    (anatomy appears larger), ``rotation_rad`` rotates the anatomy, ``mirror`` flips columns of the grid.
    """
    if centre_rc is None:
        centre_rc = ((image_shape[0] - 1) / 2.0, (image_shape[1] - 1) / 2.0)
    spacing = np.asarray(pixel_spacing_mm, dtype=np.float64)
    if spacing.shape != (2,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"pixel spacing must be two positive numbers of mm, got {pixel_spacing_mm!r}")
    # grid pixel -> mm around the centre -> (rotated, scaled) -> image pixels
    cos, sin = np.cos(rotation_rad), np.sin(rotation_rad)
    rotation = np.array([[cos, -sin], [sin, cos]])
    flip = np.diag([1.0, -1.0 if mirror else 1.0])
    matrix = np.diag(1.0 / spacing) @ rotation @ flip * (grid.pixel_mm / scale)
    grid_centre = np.full(2, (grid.size_px - 1) / 2.0)
    offset = np.asarray(centre_rc, dtype=np.float64) - matrix @ grid_centre
    return GridTransform(matrix=matrix, offset=offset, size_px=grid.size_px)


def to_magnitude(image: np.ndarray) -> np.ndarray:
    """Real float32 magnitude of a real or complex image; NaN/Inf become 0."""
    image = np.abs(image) if np.iscomplexobj(image) else np.asarray(image)
    image = image.astype(np.float32, copy=False)
    return np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)


def normalise_intensity(image: np.ndarray) -> np.ndarray:
    """Scale so the 1st..99th percentile of the image spans 0..1 (robust to scanner units, ms of T1 maps)."""
    low, high = np.percentile(image, [1.0, 99.0])
    if not np.isfinite(high - low) or high - low <= 1e-6:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - low) / (high - low), -0.5, 2.0).astype(np.float32)


def resample_to_grid(image: np.ndarray, transform: GridTransform, order: int = 1) -> np.ndarray:
    """Sample a 2-D image on the grid of ``transform`` (zero outside the image).

    When the grid is coarser than the image a Gaussian prefilter stops aliasing.
    """
    step_px = np.sqrt((transform.matrix**2).sum(axis=0))  # image pixels per grid pixel along each grid axis
    shrink = float(step_px.max())
    if shrink > 1.5:
        image = ndimage.gaussian_filter(image, sigma=0.4 * shrink, mode="nearest")
    return ndimage.affine_transform(
        image,
        transform.matrix,
        offset=transform.offset,
        output_shape=(transform.size_px, transform.size_px),
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=False,
    ).astype(np.float32, copy=False)


def preprocess(
    image: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    grid: StageGrid,
    centre_rc: tuple[float, float] | None = None,
) -> tuple[np.ndarray, GridTransform]:
    """Magnitude -> intensity normalisation -> resample/crop to ``grid``. Returns (grid image, transform).

    The single function the training pipeline and inference both call (augmentation passes its random
    rotation/scale/mirror through :func:`grid_transform` and :func:`resample_to_grid` the same way).
    """
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"expected a 2-D image of at least 2 x 2 pixels, got shape {image.shape}")
    magnitude = normalise_intensity(to_magnitude(image))
    transform = grid_transform(image.shape, pixel_spacing_mm, grid, centre_rc=centre_rc)
    return resample_to_grid(magnitude, transform), transform
