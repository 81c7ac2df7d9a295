"""Preprocessing shared by training and inference, and its exact inverse for points.

One affine map takes a pixel of the network grid to a pixel of the original image:

    image_rc = matrix @ grid_rc + offset          (both (row, col), in pixels)

Resampling to the grid's mm spacing, cropping/padding to its fixed size, centring on a point, and the
training augmentation (rotation, scale, translation, mirror) are all folded into that one map, so an image is
interpolated exactly once and points go back through the inverse without approximation.

Inference preprocesses a whole stack at once (:func:`normalise_stack`, :func:`resample_stack`): the same numbers
as :func:`preprocess` per image (to float32 rounding), several times faster (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from .config import PLAUSIBLE_PIXEL_MM, StageGrid


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
    low_mm, high_mm = PLAUSIBLE_PIXEL_MM
    if spacing.shape != (2,) or not np.all((spacing >= low_mm) & (spacing <= high_mm)):
        raise ValueError(f"pixel spacing must be two numbers of mm within {low_mm}-{high_mm}, got {pixel_spacing_mm!r}")
    # grid pixel -> mm around the centre -> (rotated, scaled) -> image pixels
    cos, sin = np.cos(rotation_rad), np.sin(rotation_rad)
    rotation = np.array([[cos, -sin], [sin, cos]])
    flip = np.diag([1.0, -1.0 if mirror else 1.0])
    matrix = np.diag(1.0 / spacing) @ rotation @ flip * (grid.pixel_mm / scale)
    grid_centre = np.full(2, (grid.size_px - 1) / 2.0)
    offset = np.asarray(centre_rc, dtype=np.float64) - matrix @ grid_centre
    return GridTransform(matrix=matrix, offset=offset, size_px=grid.size_px)


def to_magnitude(image: np.ndarray) -> np.ndarray:
    """Real float32 magnitude |.| of a real or complex image; NaN/Inf become 0. A signed real image (phase-sensitive
    inversion recovery) becomes the magnitude image the models were trained on, as in the gadget
    (``gadget.magnitude_2d``), so that ``detect`` and the gadget see the same pixels."""
    with np.errstate(over="ignore"):  # a float64 pixel beyond float32 becomes Inf, set to 0 below: nothing to warn of
        image = np.abs(image if np.iscomplexobj(image) else np.asarray(image, dtype=np.float32))
        image = image.astype(np.float32, copy=False)
    return np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)


def normalise_intensity(image: np.ndarray) -> np.ndarray:
    """Scale so the 1st..99th percentile of the image spans 0..1 (robust to scanner units, ms of T1 maps)."""
    low, high = np.percentile(image, [1.0, 99.0])
    if not np.isfinite(high - low) or high - low <= 1e-6:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - low) / (high - low), -0.5, 2.0).astype(np.float32)


def _prefilter_sigma_px(transform: GridTransform) -> tuple[float, float]:
    """(row, column) sigmas in image pixels of the anti-aliasing Gaussian, each axis by how much the grid shrinks
    it (0 for an axis it does not shrink enough to alias). Per image axis, because with non-square pixels one grid
    pixel covers a different number of image pixels along each: the norm of row a of the transform's matrix is
    image-axis-a pixels per grid pixel whatever the rotation (grid mm over that axis's pixel mm)."""
    step_px = np.sqrt((transform.matrix**2).sum(axis=1))
    sigmas = np.where(step_px > 1.5, 0.4 * step_px, 0.0)
    return float(sigmas[0]), float(sigmas[1])


def resample_to_grid(image: np.ndarray, transform: GridTransform, order: int = 1) -> np.ndarray:
    """Sample a 2-D image on the grid of ``transform`` (zero outside the image).

    When the grid is coarser than the image a Gaussian prefilter stops aliasing.
    """
    sigmas = _prefilter_sigma_px(transform)
    if any(sigmas):
        image = ndimage.gaussian_filter(image, sigma=sigmas, mode="nearest")  # an axis with sigma 0 is left as is
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
    rotation_rad: float = 0.0,
) -> tuple[np.ndarray, GridTransform]:
    """Magnitude -> intensity normalisation -> resample/crop to ``grid``. Returns (grid image, transform).

    Inference's reference path (``Detector(optimised=False)``). Training takes the same steps through
    :func:`augment.sample_on_grid` (:func:`normalise_intensity`, then :func:`grid_transform` with its random
    rotation/scale/mirror and :func:`resample_to_grid`), so both see one preprocessing.
    """
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"expected a 2-D image of at least 2 x 2 pixels, got shape {image.shape}")
    magnitude = normalise_intensity(to_magnitude(image))
    transform = grid_transform(image.shape, pixel_spacing_mm, grid, centre_rc=centre_rc, rotation_rad=rotation_rad)
    return resample_to_grid(magnitude, transform), transform


# --- whole stacks at once (inference) ---------------------------------------------------------------------------


def normalise_stack(stack: np.ndarray) -> np.ndarray:
    """:func:`normalise_intensity` of :func:`to_magnitude` of each image of an (N, H, W) stack, vectorised.

    The two percentiles come from one ``np.partition`` per image at the ranks ``np.percentile`` interpolates
    between (its default linear rule), so the result is the per-image one.
    """
    magnitude = to_magnitude(stack)
    flat = magnitude.reshape(len(magnitude), -1)
    ranks = np.array([0.01, 0.99]) * (flat.shape[1] - 1)
    below = np.floor(ranks).astype(np.intp)
    above = np.minimum(below + 1, flat.shape[1] - 1)
    ordered = np.partition(flat, np.unique(np.concatenate([below, above])), axis=1)
    fraction = ranks - below
    low_high = ordered[:, below] + (ordered[:, above] - ordered[:, below]) * fraction  # (N, 2)
    low, high = low_high[:, 0], low_high[:, 1]
    usable = np.isfinite(high - low) & (high - low > 1e-6)
    scale = np.where(usable, 1.0 / np.where(usable, high - low, 1.0), 0.0).astype(np.float32)
    normalised = (magnitude - low.astype(np.float32)[:, None, None]) * scale[:, None, None]
    normalised[~usable] = 0.0
    return np.clip(normalised, -0.5, 2.0, out=normalised)


@functools.lru_cache(maxsize=8)
def _smoothing_matrix(length: int, sigma: float) -> np.ndarray:
    """(length, length) matrix of ``ndimage.gaussian_filter1d`` with 'nearest' edges (identity for sigma 0)."""
    smoothing = np.eye(length)
    if sigma > 0:
        smoothing = ndimage.gaussian_filter1d(smoothing, sigma, axis=0, mode="nearest")
    smoothing.setflags(write=False)
    return smoothing


# Cached: every slice of a stack (same shape and spacing) has the same coarse transform.
@functools.lru_cache(maxsize=32)
def _axis_sampling_matrix(length: int, step: float, start: float, size: int, sigma: float) -> np.ndarray:
    """(size, length) weights taking one image axis to ``size`` grid samples at ``start + step * i`` pixels:
    the Gaussian prefilter ('nearest' edges, as ``ndimage.gaussian_filter``) then linear interpolation, with
    zero rows for samples outside [0, length - 1] (``ndimage.affine_transform`` order 1, mode 'constant')."""
    smoothing = _smoothing_matrix(length, sigma)
    coordinates = start + step * np.arange(size)
    inside = (coordinates >= 0.0) & (coordinates <= length - 1)
    floor = np.clip(np.floor(coordinates), 0, length - 1).astype(np.intp)
    ceil = np.minimum(floor + 1, length - 1)
    fraction = np.where(inside, coordinates - floor, 0.0)[:, None]
    weights = (1.0 - fraction) * smoothing[floor] + fraction * smoothing[ceil]
    weights[~inside] = 0.0
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


def _separable_resample(images: np.ndarray, transform: GridTransform) -> np.ndarray:
    """:func:`resample_to_grid` of every image of (N, H, W) for one axis-aligned transform, as two matrix
    products (columns, then rows) over only the image rows and columns the grid samples touch.

    torch's GEMM (MKL, AVX-512, torch's own thread pool) rather than numpy's: measured faster, and it does not
    start a second (OpenBLAS) thread pool beside torch's."""
    row_sigma, col_sigma = _prefilter_sigma_px(transform)
    n_images, height, width = images.shape
    size = transform.size_px
    row_weights = _axis_sampling_matrix(height, float(transform.matrix[0, 0]), float(transform.offset[0]), size,
                                        row_sigma)
    col_weights = _axis_sampling_matrix(width, float(transform.matrix[1, 1]), float(transform.offset[1]), size,
                                        col_sigma)
    used_rows = np.flatnonzero(row_weights.any(axis=0))
    used_cols = np.flatnonzero(col_weights.any(axis=0))
    if used_rows.size == 0 or used_cols.size == 0:
        return np.zeros((n_images, size, size), dtype=np.float32)
    r0, r1, c0, c1 = used_rows[0], used_rows[-1] + 1, used_cols[0], used_cols[-1] + 1
    block = torch.from_numpy(np.ascontiguousarray(images[:, r0:r1, c0:c1]))
    rows_matrix = torch.tensor(row_weights[:, r0:r1])  # copies: the cached weights are read-only
    cols_matrix = torch.tensor(col_weights[:, c0:c1].T)
    with torch.inference_mode():
        columns_done = (block.reshape(-1, c1 - c0) @ cols_matrix).reshape(n_images, r1 - r0, size)
        return torch.matmul(rows_matrix, columns_done).numpy()


def resample_stack(images: np.ndarray, transforms: Sequence[GridTransform]) -> np.ndarray:
    """:func:`resample_to_grid` (order 1) of each image of an (N, H, W) float32 stack on its own transform.

    Transforms without rotation (inference, except the second pass of a long-axis model that records
    ``display_long_axis_deg``) are separable: the Gaussian prefilter and the linear interpolation along each axis
    are one small matrix each, applied to all images sharing the transform at once. A rotated transform (that
    pass, training augmentation) goes through ``ndimage``.
    """
    images = np.asarray(images, dtype=np.float32)
    if len(images) != len(transforms):
        raise ValueError(f"{len(images)} images but {len(transforms)} transforms")
    if len(images) == 0:
        return np.zeros((0, 0, 0), dtype=np.float32)
    output = np.empty((len(images), transforms[0].size_px, transforms[0].size_px), dtype=np.float32)
    if len({transform.size_px for transform in transforms}) != 1:
        raise ValueError("the transforms of one stack must share a grid size")
    groups: dict[tuple[bytes, bytes], list[int]] = {}
    for index, transform in enumerate(transforms):
        groups.setdefault((transform.matrix.tobytes(), transform.offset.tobytes()), []).append(index)
    for indices in groups.values():
        transform = transforms[indices[0]]
        if transform.matrix[0, 1] == 0.0 and transform.matrix[1, 0] == 0.0:
            output[indices] = _separable_resample(images[indices], transform)
        else:
            output[indices] = np.stack([resample_to_grid(images[i], transform) for i in indices])
    return output
