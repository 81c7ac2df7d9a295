"""Landmark heatmaps: Gaussian training targets with a background channel, and their decoding.

Channel 0 is background; channel k (1..K) is landmark k-1. A target pixel's channels sum to 1, so the target is
a per-pixel distribution the softmax output can match (KL divergence), as in Xue et al. 2021.
"""

from __future__ import annotations

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


def decode_heatmaps(probabilities: torch.Tensor | np.ndarray, window_px: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Peak location and peak probability of each landmark channel.

    ``probabilities``: softmax output (N, K+1, H, W) with background first. Returns ``points_rc`` (N, K, 2) in
    grid pixels, sub-pixel by the probability-weighted centroid of the (2*window_px+1)^2 neighbourhood of the
    peak, and ``peak_probability`` (N, K). Thresholding (absent landmarks) is the caller's decision.
    """
    probs = torch.as_tensor(probabilities).float()
    if probs.ndim != 4:
        raise ValueError(f"expected (N, K+1, H, W) probabilities, got shape {tuple(probs.shape)}")
    landmark_probs = probs[:, 1:]
    n, k, h, w = landmark_probs.shape
    flat = landmark_probs.reshape(n, k, h * w)
    peak_probability, peak_index = flat.max(dim=2)
    peak_row = (peak_index // w).float()
    peak_col = (peak_index % w).float()
    # weighted centroid around the peak: unfold a window with zero padding
    size = 2 * window_px + 1
    padded = torch.nn.functional.pad(landmark_probs, (window_px,) * 4)
    rows = peak_row.long().reshape(-1)
    cols = peak_col.long().reshape(-1)
    planes = padded.reshape(n * k, h + 2 * window_px, w + 2 * window_px)
    offsets = torch.arange(size)
    index_r = (rows[:, None] + offsets[None, :])[:, :, None].expand(-1, size, size)
    index_c = (cols[:, None] + offsets[None, :])[:, None, :].expand(-1, size, size)
    windows = planes[torch.arange(n * k)[:, None, None], index_r, index_c]  # (N*K, size, size)
    weights = windows.clamp_min(0)
    total = weights.sum(dim=(1, 2)).clamp_min(1e-12)
    delta = (offsets - window_px).float()
    d_row = (weights.sum(dim=2) * delta).sum(dim=1) / total
    d_col = (weights.sum(dim=1) * delta).sum(dim=1) / total
    points = torch.stack([peak_row.reshape(-1) + d_row, peak_col.reshape(-1) + d_col], dim=1).reshape(n, k, 2)
    return points.numpy().astype(np.float64), peak_probability.numpy().astype(np.float64)
