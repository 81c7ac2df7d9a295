"""Landmark heatmaps: Gaussian training targets with a background channel, and their decoding.

Channel 0 is background; channel k (1..K) is landmark k-1. A target pixel's channels sum to 1, so the target is
a per-pixel distribution the softmax output can match (KL divergence), as in Xue et al. 2021.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def render_heatmaps(points_rc: np.ndarray, size_px: int, sigma_px: float) -> np.ndarray:
    """Target maps (K+1, size, size) float32 for K points (K, 2) in grid pixels; NaN rows are absent landmarks.

    A landmark outside the grid is absent too (it would have no peak to learn).
    """
    points_rc = np.asarray(points_rc, dtype=np.float64)
    n_landmarks = points_rc.shape[0]
    axis = np.arange(size_px, dtype=np.float64)
    maps = np.zeros((n_landmarks + 1, size_px, size_px), dtype=np.float32)
    for k, (row, col) in enumerate(points_rc):
        if not (np.isfinite(row) and np.isfinite(col)) or not (0 <= row <= size_px - 1 and 0 <= col <= size_px - 1):
            continue
        gauss_r = np.exp(-((axis - row) ** 2) / (2 * sigma_px**2))
        gauss_c = np.exp(-((axis - col) ** 2) / (2 * sigma_px**2))
        maps[k + 1] = np.outer(gauss_r, gauss_c)
    total = maps[1:].sum(axis=0)
    over = total > 1.0  # overlapping blobs: renormalise so the pixel stays a distribution
    if np.any(over):
        maps[1:, over] /= total[over]
        total = maps[1:].sum(axis=0)
    maps[0] = 1.0 - total
    return maps


def decode_heatmaps(probabilities: torch.Tensor | np.ndarray,
                    centroid_radius_px: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Location and peak probability of each landmark channel.

    ``probabilities``: softmax output (N, K+1, H, W) with background first. Returns ``points_rc`` (N, K, 2) in
    grid pixels and ``peak_probability`` (N, K). Thresholding (absent landmarks) is the caller's decision.

    ``centroid_radius_px`` None: the peak, refined by a parabola through the log-probabilities of the peak and its
    two neighbours along each axis, which is exact for the Gaussian blobs the network is trained to output.
    Otherwise the probability-weighted centroid of the channel within that radius of that refined peak
    (:func:`window_centroids`): where the labels themselves scatter (the derived RV insertion points slide along
    the RV arc), the network spreads its map along that scatter, and the map's centre of mass lies nearer the
    label on average than its mode (docs/training.md, "Decoding"). The window must be wide against the blob
    (several sigma), or cutting the blob's tail pulls the centroid towards the window's centre.
    """
    probs = torch.as_tensor(probabilities).float()
    if probs.ndim != 4:
        raise ValueError(f"expected (N, K+1, H, W) probabilities, got shape {tuple(probs.shape)}")
    landmark_probs = probs[:, 1:]
    n, k, h, w = landmark_probs.shape
    flat = landmark_probs.reshape(n * k, h * w)
    peak_probability, peak_index = flat.max(dim=1)
    rows, cols = peak_index // w, peak_index % w
    # Log-probabilities of the peak and its 4 neighbours only (not of the whole maps); indices clamped at the border,
    # where a peak with a neighbour missing gets no sub-pixel shift along that axis (a replicated edge would read as
    # a half-pixel shift outward).
    planes = landmark_probs.reshape(n * k, h, w)
    plane = torch.arange(n * k)

    def log_at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.log(planes[plane, r.clamp(0, h - 1), c.clamp(0, w - 1)].clamp_min(1e-12))

    def vertex(minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
        curvature = minus - 2 * centre + plus
        shift = torch.where(curvature < -1e-9, 0.5 * (minus - plus) / curvature.clamp(max=-1e-9), 0.0)
        return shift.clamp(-1.0, 1.0)

    centre = log_at(rows, cols)
    d_row = vertex(log_at(rows - 1, cols), centre, log_at(rows + 1, cols))
    d_col = vertex(log_at(rows, cols - 1), centre, log_at(rows, cols + 1))
    d_row = torch.where((rows > 0) & (rows < h - 1), d_row, 0.0)
    d_col = torch.where((cols > 0) & (cols < w - 1), d_col, 0.0)
    points = torch.stack([rows.float() + d_row, cols.float() + d_col], dim=1).reshape(n, k, 2)
    if centroid_radius_px is not None:
        points = window_centroids(landmark_probs, points, centroid_radius_px)
    return points.numpy().astype(np.float64), peak_probability.reshape(n, k).numpy().astype(np.float64)


def window_centroids(maps: torch.Tensor, centres_rc: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Probability-weighted centroid (N, K, 2) of each map (N, K, H, W) over the disc of ``radius_px`` grid
    pixels around its centre (N, K, 2); a map with no mass in its disc keeps the centre."""
    if isinstance(radius_px, bool) or not (math.isfinite(radius_px) and radius_px > 0):
        raise ValueError(f"centroid radius must be a positive, finite number of pixels, got {radius_px!r}")
    rows, cols = _pixel_axes(maps)
    inside = ((rows - centres_rc[..., 0, None, None]) ** 2
              + (cols - centres_rc[..., 1, None, None]) ** 2) <= radius_px**2
    centroid, mass = centres_of_mass(maps.clamp_min(0) * inside)
    return torch.where(mass[..., None] > 0, centroid, centres_rc)


def centres_of_mass(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre of mass (..., 2) in pixels (row, col) and total mass (...) of non-negative maps (..., H, W); a map
    without mass gets a meaningless centre (its mass says so)."""
    rows, cols = _pixel_axes(weights)
    mass = weights.sum(dim=(-2, -1))
    moments = torch.stack([(weights * rows).sum(dim=(-2, -1)), (weights * cols).sum(dim=(-2, -1))], dim=-1)
    return moments / mass.clamp_min(1e-30)[..., None], mass


def _pixel_axes(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (H, 1) and column indices (1, W) of maps (..., H, W), on their device."""
    h, w = maps.shape[-2:]
    return (torch.arange(h, dtype=torch.float32, device=maps.device)[:, None],
            torch.arange(w, dtype=torch.float32, device=maps.device)[None, :])
