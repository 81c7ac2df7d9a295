"""Landmarks over the phases of a cine: gap filling, temporal smoothing, and the LV length curve.

A landmark is detected on each phase on its own, so a cine's track jitters by a pixel or two and, where the
model is unsure (a weak peak, an outlier jump), has holes. Over one heart beat the points move smoothly and the
cine is cyclic (the last phase is followed by the first), so

    per-phase points + peak probabilities -> drop weak and outlying points (marked ``filled``)
    -> fill them by cyclic linear interpolation from the nearest kept phases on each side
    -> cyclic Gaussian smoothing along the phases -> LV length per phase (measures.lv_length_mm)
    -> longitudinal shortening = (max - min) / max (measures.longitudinal_shortening_or_none).

Points are (row, col) pixels of the slice's images, all phases on one pixel grid (one slice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .config import DEFAULT_PROBABILITY_THRESHOLD, LAX_LANDMARKS
from .detector import ImageLandmarks, Landmark
from .geometry import checked_pixel_spacing_mm
from .measures import longitudinal_shortening_or_none, lv_length_mm

# A phase-to-phase move of a landmark farther than this from the median of its neighbours is a detection error,
# not motion: the mitral annulus moves ~10-15 mm over the whole systole, i.e. ~1-2 mm between cine phases.
DEFAULT_OUTLIER_MM = 10.0
# That holds for a cine of 20-30 phases; with fewer, neighbouring phases are far apart in the beat (an ED/ES pair:
# the whole systole) and real motion would read as an outlier, so only series this long are tested for outliers.
MIN_PHASES_FOR_OUTLIERS = 10
DEFAULT_SMOOTHING_PHASES = 0.75  # Gaussian sigma along the phases; small enough to keep the ES dip


@dataclass(frozen=True)
class CineTrack:
    """Landmark tracks over a cine after gap filling and smoothing."""

    points_rc: np.ndarray  # (T, K, 2); NaN only for a landmark found in no phase at all
    filled: np.ndarray  # (T, K) bool: the phase's own detection was absent, weak or an outlier


def smooth_cine_landmarks(
    points_rc: np.ndarray,
    probabilities: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    probability_threshold: float = DEFAULT_PROBABILITY_THRESHOLD,
    outlier_mm: float = DEFAULT_OUTLIER_MM,
    smoothing_phases: float = DEFAULT_SMOOTHING_PHASES,
    cyclic: bool = True,
) -> CineTrack:
    """Fill and smooth landmark tracks ``points_rc`` (T, K, 2) with peak ``probabilities`` (T, K).

    A point is kept when it is finite, its probability reaches ``probability_threshold`` and, in a series of at least
    ``MIN_PHASES_FOR_OUTLIERS`` phases, it lies within ``outlier_mm`` of the median of its kept neighbours (two
    phases each side); the others are ``filled``.
    ``cyclic``: the cine covers one whole beat (phase T-1 is followed by phase 0).
    """
    points_rc = np.asarray(points_rc, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if points_rc.ndim != 3 or points_rc.shape[2] != 2 or probabilities.shape != points_rc.shape[:2]:
        raise ValueError(
            f"expected points (T, K, 2) and probabilities (T, K), got {points_rc.shape} and {probabilities.shape}"
        )
    spacing = checked_pixel_spacing_mm(pixel_spacing_mm)
    n_phases, n_landmarks = probabilities.shape
    kept = np.all(np.isfinite(points_rc), axis=2) & (probabilities >= probability_threshold)
    smoothed = np.full_like(points_rc, np.nan)
    for k in range(n_landmarks):
        if n_phases >= MIN_PHASES_FOR_OUTLIERS:
            kept[:, k] &= ~_outliers(points_rc[:, k], kept[:, k], spacing, outlier_mm, cyclic)
        if not kept[:, k].any():
            continue
        track = _interpolate(points_rc[:, k], kept[:, k], cyclic)
        if smoothing_phases > 0 and n_phases > 2:
            track = ndimage.gaussian_filter1d(track, smoothing_phases, axis=0, mode="wrap" if cyclic else "nearest")
        smoothed[:, k] = track
    return CineTrack(points_rc=smoothed, filled=~kept)


def _outliers(track: np.ndarray, kept: np.ndarray, spacing: np.ndarray, outlier_mm: float, cyclic: bool) -> np.ndarray:
    """Kept points farther than ``outlier_mm`` from the median of the kept points two phases either side."""
    n_phases = len(track)
    outlying = np.zeros(n_phases, dtype=bool)
    for t in np.nonzero(kept)[0]:
        neighbours = [t + d for d in (-2, -1, 1, 2)]
        neighbours = [n % n_phases for n in neighbours] if cyclic else [n for n in neighbours if 0 <= n < n_phases]
        neighbours = [n for n in neighbours if kept[n] and n != t]
        if len(neighbours) < 2:  # too few neighbours to call anything an outlier
            continue
        reference = np.median(track[neighbours], axis=0)
        outlying[t] = np.linalg.norm((track[t] - reference) * spacing) > outlier_mm
    return outlying


def _interpolate(track: np.ndarray, kept: np.ndarray, cyclic: bool) -> np.ndarray:
    """Linear interpolation of the kept phases' points at every phase (periodic over the beat when cyclic)."""
    phases = np.arange(len(track), dtype=np.float64)
    known = phases[kept]
    period = len(track) if cyclic else None
    return np.stack([np.interp(phases, known, track[kept, axis], period=period) for axis in range(2)], axis=1)


def lv_length_curve_mm(points_rc: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """LV length (mm) per phase from (T, 3, 2) MV-1, MV-2, APEX points; NaN where a point is missing."""
    points_rc = np.asarray(points_rc, dtype=np.float64)
    if points_rc.ndim != 3 or points_rc.shape[1:] != (3, 2):
        raise ValueError(f"expected (T, 3, 2) MV-1, MV-2, APEX points, got {points_rc.shape}")
    return np.array(
        [lv_length_mm(p[0], p[1], p[2], pixel_spacing_mm) if np.all(np.isfinite(p)) else np.nan for p in points_rc]
    )


@dataclass(frozen=True)
class CineLandmarks:
    """A cine slice's landmarks after smoothing, in the detector's per-phase form, with the LV length curve."""

    landmarks: list[ImageLandmarks]  # per phase; a filled landmark keeps its own (low) probability, 0 if none
    filled: list[dict[str, bool]]  # per phase and landmark
    lv_length_mm: np.ndarray  # (T,), NaN where a landmark is missing in every phase
    longitudinal_shortening: float  # (max - min) / max of the LV length; NaN with fewer than two usable lengths


def smooth_cine_detections(
    found: Sequence[ImageLandmarks],
    pixel_spacing_mm: tuple[float, float],
    probability_threshold: float = DEFAULT_PROBABILITY_THRESHOLD,
) -> CineLandmarks:
    """:func:`smooth_cine_landmarks` on the Detector's output for the phases of one long-axis cine slice.

    ``found`` is ``Detector.detect(phases, spacing, same_slice=True)`` (absent landmarks are None).
    """
    names = LAX_LANDMARKS
    points = np.full((len(found), len(names), 2), np.nan)
    probabilities = np.zeros((len(found), len(names)))
    for t, phase in enumerate(found):
        for k, name in enumerate(names):
            landmark = phase.get(name)
            if landmark is not None:
                points[t, k] = (landmark.row, landmark.col)
                probabilities[t, k] = landmark.probability
    track = smooth_cine_landmarks(points, probabilities, pixel_spacing_mm, probability_threshold)
    landmarks = [
        {
            name: None if not np.all(np.isfinite(track.points_rc[t, k]))
            else Landmark(float(track.points_rc[t, k, 0]), float(track.points_rc[t, k, 1]), float(probabilities[t, k]))
            for k, name in enumerate(names)
        }
        for t in range(len(found))
    ]
    filled = [{name: bool(track.filled[t, k]) for k, name in enumerate(names)} for t in range(len(found))]
    lengths = lv_length_curve_mm(track.points_rc, pixel_spacing_mm)
    shortening = longitudinal_shortening_or_none(lengths)
    return CineLandmarks(landmarks, filled, lengths, float("nan") if shortening is None else shortening)
