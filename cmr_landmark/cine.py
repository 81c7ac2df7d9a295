"""Landmarks over the phases of a cine: gap filling, temporal smoothing, and the LV length curve.

A landmark is detected on each phase on its own, so a cine's track jitters by a pixel or two and, where the
model is unsure (a weak peak, an outlier jump), has holes. Over one heart beat the points move smoothly and the
cine is cyclic (the last phase is followed by the first), so

    per-phase points + peak probabilities -> drop weak and outlying points
    -> fill them (marked ``filled``) by cyclic linear interpolation from the nearest kept phases on each side, but
       only short gaps, on phases where some landmark was seen, of a landmark seen on at least half the phases
    -> cyclic Gaussian smoothing along the phases (a fixed fraction of the beat; none for a few phases)
    -> LV length per phase (measures.lv_length_mm)
    -> longitudinal shortening = (max - min) / max (measures.longitudinal_shortening_or_none).

What is not filled stays absent: filling bridges a weak phase or two, it must not draw a heart where none was seen
(a blank phase, the apex cut off by the field of view for part of the beat).

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
# Gaussian sigma along the phases as a fraction of the beat (0.75 phases of a 25-phase cine): small enough to keep
# the end-systolic dip. A series shorter than MIN_PHASES_FOR_OUTLIERS is not smoothed: its phases are far apart in
# the beat, and smoothing would blend end-diastole into end-systole (3 phases of the real cine: shortening 16 -> 5 %).
DEFAULT_SMOOTHING_BEAT_FRACTION = 0.03
# The longest run of phases in a row with a landmark weak or absent that is filled from its ends: a weak phase or
# two is the model's doubt, a longer run is more likely the landmark out of view.
MAX_FILLED_RUN_PHASES = 3
# A landmark kept on fewer of the phases than this is not filled at all: what it is filled from is the exception.
MIN_KEPT_FRACTION_TO_FILL = 0.5


@dataclass(frozen=True)
class CineTrack:
    """Landmark tracks over a cine after gap filling and smoothing."""

    points_rc: np.ndarray  # (T, K, 2); NaN where the landmark is reported absent (not seen, and not filled)
    filled: np.ndarray  # (T, K) bool: reported, but the phase's own detection was absent, weak or an outlier


def smooth_cine_landmarks(
    points_rc: np.ndarray,
    probabilities: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    probability_threshold: float = DEFAULT_PROBABILITY_THRESHOLD,
    outlier_mm: float = DEFAULT_OUTLIER_MM,
    smoothing_beat_fraction: float = DEFAULT_SMOOTHING_BEAT_FRACTION,
    cyclic: bool = True,
) -> CineTrack:
    """Fill and smooth landmark tracks ``points_rc`` (T, K, 2) with peak ``probabilities`` (T, K).

    A point is kept when it is finite, its probability reaches ``probability_threshold`` and, in a series of at least
    ``MIN_PHASES_FOR_OUTLIERS`` phases, it lies within ``outlier_mm`` of the median of its kept neighbours (two
    phases each side). The others are ``filled`` from the kept ones where (module docstring) the run of them is at
    most ``MAX_FILLED_RUN_PHASES`` long, some landmark was kept on the phase, and the landmark was kept on at least
    ``MIN_KEPT_FRACTION_TO_FILL`` of the phases; elsewhere they are absent (NaN).
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
    if n_phases >= MIN_PHASES_FOR_OUTLIERS:
        for k in range(n_landmarks):
            kept[:, k] &= ~_outliers(points_rc[:, k], kept[:, k], spacing, outlier_mm, cyclic)
    seen = kept.any(axis=1)  # phases on which the model saw the heart at all
    smoothed = np.full_like(points_rc, np.nan)
    for k in range(n_landmarks):
        if not kept[:, k].any():
            continue
        reported = kept[:, k].copy()
        # a series of a few phases is not filled either: its phases lie far apart in the beat, and a weak end-systolic
        # point filled from end-diastole would give the two phases one length (an ED/ES pair: shortening 0)
        if n_phases >= MIN_PHASES_FOR_OUTLIERS and kept[:, k].mean() >= MIN_KEPT_FRACTION_TO_FILL:
            reported |= seen & _in_short_gap(kept[:, k], cyclic)
        track = _interpolate(points_rc[:, k], kept[:, k], cyclic)
        if smoothing_beat_fraction > 0 and n_phases >= MIN_PHASES_FOR_OUTLIERS:
            track = _smoothed(track, reported, smoothing_beat_fraction * n_phases, cyclic)
        track[~reported] = np.nan
        smoothed[:, k] = track
    return CineTrack(points_rc=smoothed, filled=~kept & np.isfinite(smoothed[..., 0]))


def _in_short_gap(kept: np.ndarray, cyclic: bool) -> np.ndarray:
    """Phases in a run of at most ``MAX_FILLED_RUN_PHASES`` phases in a row that are not kept, between two kept
    phases (runs wrap around the beat when ``cyclic``; not cyclic, a run at either end has only one side to be
    filled from, and is not; ``kept`` has at least one True)."""
    n_phases = len(kept)
    start = int(np.argmax(kept)) if cyclic else 0  # a kept phase first, so that no run wraps past the end
    order = (np.arange(n_phases) + start) % n_phases
    short = np.zeros(n_phases, dtype=bool)
    run: list[int] = []
    for phase in [*order, None]:  # None: the end, which closes the last run
        if phase is not None and not kept[phase]:
            run.append(phase)
            continue
        at_an_end = not cyclic and bool(run) and (run[0] == 0 or phase is None)
        if 0 < len(run) <= MAX_FILLED_RUN_PHASES and not at_an_end:
            short[run] = True
        run = []
    return short


def _smoothed(track: np.ndarray, reported: np.ndarray, sigma_phases: float, cyclic: bool) -> np.ndarray:
    """Gaussian smoothing along the phases of the reported points only (normalised convolution): a phase left
    absent neither pulls its neighbours nor is pulled."""
    mode = "wrap" if cyclic else "nearest"
    weights = reported.astype(np.float64)
    total = ndimage.gaussian_filter1d(track * weights[:, None], sigma_phases, axis=0, mode=mode)
    norm = ndimage.gaussian_filter1d(weights, sigma_phases, mode=mode)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm[:, None] > 0, total / norm[:, None], track)


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

    landmarks: list[ImageLandmarks]  # per phase; a filled landmark carries the probability of the phase's own
    # detection: 0 where the detector reported none (below its threshold), its own where it was an outlier
    filled: list[dict[str, bool]]  # per phase and landmark
    lv_length_mm: np.ndarray  # (T,), NaN on a phase where a landmark is absent
    longitudinal_shortening: float  # (max - min) / max of the LV length; NaN where measures.shortening_problem
    # finds one (lengths on fewer than two or half of the phases, or above 40 %)


def smooth_cine_detections(
    found: Sequence[ImageLandmarks],
    pixel_spacing_mm: tuple[float, float],
    probability_threshold: float = DEFAULT_PROBABILITY_THRESHOLD,
) -> CineLandmarks:
    """:func:`smooth_cine_landmarks` on the Detector's output for the phases of one long-axis cine slice.

    ``found`` is ``Detector.detect(phases, spacing, same_slice=True)`` (absent landmarks are None).
    """
    names = LAX_LANDMARKS
    if not 0.0 <= probability_threshold <= 1.0:  # NaN included
        raise ValueError(f"probability_threshold must be in [0, 1], got {probability_threshold}")
    for phase in found:
        if not isinstance(phase, dict) or not set(names) <= set(phase) or not all(
                landmark is None or isinstance(landmark, Landmark) for landmark in phase.values()):
            raise ValueError(f"expected per phase a dict of {', '.join(names)} to a detector.Landmark or None (the "
                             f"long-axis Detector's output), got {phase!r:.120}")
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
