"""Cine landmark tracks: weak and outlying detections are filled from their neighbours, jitter is smoothed away,
the LV length curve and longitudinal shortening follow the points."""

from __future__ import annotations

import numpy as np
import pytest

from cmr_landmark.cine import lv_length_curve_mm, smooth_cine_detections, smooth_cine_landmarks
from cmr_landmark.detector import Landmark
from cmr_landmark.measures import longitudinal_shortening_or_none, lv_length_mm, shortening_problem
from cmr_landmark.slice_measures import measure_slice

SPACING_MM = (1.5, 1.5)
N_PHASES = 25


def beating_tracks(n_phases: int = N_PHASES, shortening: float = 0.18) -> np.ndarray:
    """MV-1, MV-2, APEX (T, 3, 2) of a heart whose base moves toward a fixed apex over one cyclic beat."""
    phase = np.arange(n_phases) / n_phases
    contraction = 0.5 * (1 - np.cos(2 * np.pi * phase))  # 0 at ED (phase 0), 1 at mid-cycle (ES)
    length_px = 60.0 * (1 - shortening * contraction)
    apex = np.array([160.0, 130.0])
    base_row = apex[0] - length_px
    mv1 = np.stack([base_row, np.full(n_phases, 115.0)], axis=1)
    mv2 = np.stack([base_row, np.full(n_phases, 145.0)], axis=1)
    return np.stack([mv1, mv2, np.broadcast_to(apex, (n_phases, 2))], axis=1)


def test_noise_is_reduced_and_nothing_is_filled():
    truth = beating_tracks()
    rng = np.random.default_rng(3)
    noisy = truth + rng.normal(0, 1.0, truth.shape)
    track = smooth_cine_landmarks(noisy, np.full(truth.shape[:2], 0.9), SPACING_MM)
    assert not track.filled.any()
    raw_error = np.linalg.norm(noisy - truth, axis=2).mean()
    smoothed_error = np.linalg.norm(track.points_rc - truth, axis=2).mean()
    assert smoothed_error < 0.75 * raw_error


def test_weak_and_missing_phases_are_filled_cyclically_and_flagged():
    truth = beating_tracks()
    points = truth.copy()
    probabilities = np.full(truth.shape[:2], 0.9)
    probabilities[10, 0] = 0.05  # weak: its point is wrong
    points[10, 0] += 40.0
    points[0, 2] = np.nan  # absent at the first phase: filled from the last and the second (cyclic)
    probabilities[0, 2] = 0.0
    points[24, 1] = np.nan
    probabilities[24, 1] = 0.0
    track = smooth_cine_landmarks(points, probabilities, SPACING_MM, smoothing_beat_fraction=0.0)
    expected = np.zeros(truth.shape[:2], dtype=bool)
    expected[10, 0] = expected[0, 2] = expected[24, 1] = True
    np.testing.assert_array_equal(track.filled, expected)
    np.testing.assert_allclose(track.points_rc[10, 0], (truth[9, 0] + truth[11, 0]) / 2, atol=1e-9)
    np.testing.assert_allclose(track.points_rc[0, 2], truth[0, 2], atol=1e-9)  # the apex does not move
    np.testing.assert_allclose(track.points_rc[24, 1], (truth[23, 1] + truth[0, 1]) / 2, atol=1e-9)


def test_confident_outlier_is_replaced():
    truth = beating_tracks()
    points = truth.copy()
    points[5, 2] += np.array([20.0, -15.0])  # a confident jump of 37 mm in one phase
    track = smooth_cine_landmarks(points, np.full(truth.shape[:2], 0.9), SPACING_MM)
    assert track.filled[5, 2] and track.filled.sum() == 1
    assert np.linalg.norm(track.points_rc[5, 2] - truth[5, 2]) < 1.0


@pytest.mark.parametrize("spacing_mm, jump_px, outlier", [
    ((0.5, 0.5), (9.0, 12.0), False),  # 15 px, but 7.5 mm: within the 10 mm limit, kept
    ((2.0, 2.0), (3.6, 4.8), True),    # 6 px, but 12 mm: an outlier
    ((0.5, 2.5), (0.0, 6.0), True),    # 6 columns of 2.5 mm = 15 mm (rows are only 0.5 mm)
    ((2.5, 0.5), (0.0, 6.0), False),   # the same 6 columns of 0.5 mm = 3 mm
])
def test_an_outlier_is_judged_in_mm_not_pixels(spacing_mm, jump_px, outlier):
    truth = beating_tracks()
    points = truth.copy()
    points[5, 2] += np.array(jump_px)  # the apex, which does not move, jumps in one phase
    track = smooth_cine_landmarks(points, np.full(truth.shape[:2], 0.9), spacing_mm)
    assert bool(track.filled[5, 2]) is outlier
    assert track.filled.sum() == int(outlier)


@pytest.mark.parametrize("n_phases", [2, 3, 4, 6, 9])
def test_a_short_series_keeps_its_confident_points(n_phases):
    # An ED/ES pair moves the mitral valve ~15 mm, more than the outlier limit: between phases this far apart in
    # the beat, real motion is not a detection error
    points = beating_tracks(n_phases, shortening=0.25)
    track = smooth_cine_landmarks(points, np.full(points.shape[:2], 0.9), SPACING_MM)
    assert not track.filled.any()
    assert np.all(np.isfinite(track.points_rc))


def test_landmark_never_found_stays_absent():
    points = beating_tracks()
    probabilities = np.full(points.shape[:2], 0.9)
    probabilities[:, 2] = 0.1
    track = smooth_cine_landmarks(points, probabilities, SPACING_MM)
    assert np.isnan(track.points_rc[:, 2]).all() and not track.filled[:, 2].any()
    assert np.isfinite(track.points_rc[:, :2]).all()


def test_lv_length_curve_and_shortening_from_detections():
    truth = beating_tracks(shortening=0.18)
    rng = np.random.default_rng(0)
    noisy = truth + rng.normal(0, 0.5, truth.shape)
    names = ("MV-1", "MV-2", "APEX")
    found = [{n: Landmark(p[0], p[1], 0.8) for n, p in zip(names, phase, strict=True)} for phase in noisy]
    found[7]["APEX"] = None
    result = smooth_cine_detections(found, SPACING_MM)
    assert result.filled[7]["APEX"] and sum(f for phase in result.filled for f in phase.values()) == 1
    assert result.landmarks[7]["APEX"] is not None
    true_lengths = [lv_length_mm(*phase, SPACING_MM) for phase in truth]
    np.testing.assert_allclose(result.lv_length_mm, true_lengths, atol=1.5)
    assert result.longitudinal_shortening == pytest.approx(0.18, abs=0.02)
    np.testing.assert_allclose(lv_length_curve_mm(truth, SPACING_MM), true_lengths)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="expected points"):
        smooth_cine_landmarks(np.zeros((5, 3)), np.zeros((5, 3)), SPACING_MM)
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        smooth_cine_landmarks(np.zeros((5, 3, 2)), np.zeros((5, 3)), (0.0, 1.0))
    with pytest.raises(ValueError, match="MV-1, MV-2, APEX"):
        lv_length_curve_mm(np.zeros((5, 2, 2)), SPACING_MM)


def test_a_probability_equal_to_the_threshold_is_kept():
    from cmr_landmark.config import DEFAULT_PROBABILITY_THRESHOLD

    points = beating_tracks()
    probabilities = np.full(points.shape[:2], 0.9)
    probabilities[4, 0] = DEFAULT_PROBABILITY_THRESHOLD
    probabilities[6, 1] = 0.5
    # a point whose probability reaches the threshold is kept, one below it filled
    assert not smooth_cine_landmarks(points, probabilities, SPACING_MM).filled.any()
    track = smooth_cine_landmarks(points, probabilities, SPACING_MM, probability_threshold=0.5)
    assert track.filled[4, 0] and not track.filled[6, 1] and track.filled.sum() == 1


def test_a_jump_of_exactly_the_outlier_limit_is_kept():
    points = beating_tracks()
    points[5, 2] += (0.0, 5.0)  # the still apex, 5 columns of 2 mm: 10 mm from its neighbours, "within" 10 mm
    assert not smooth_cine_landmarks(points, np.full(points.shape[:2], 0.9), (2.0, 2.0)).filled.any()
    points[5, 2] += (0.0, 0.01)
    assert smooth_cine_landmarks(points, np.full(points.shape[:2], 0.9), (2.0, 2.0)).filled[5, 2]


def test_a_ten_phase_series_is_checked_for_outliers():
    points = beating_tracks(10, shortening=0.1)
    points[5, 2] += (20.0, 0.0)  # 30 mm
    track = smooth_cine_landmarks(points, np.full(points.shape[:2], 0.9), SPACING_MM)
    assert track.filled[5, 2] and track.filled.sum() == 1


def test_a_large_outlier_does_not_make_its_neighbours_outliers():
    # 60 mm off: a mean of the neighbourhood would move 15 mm towards it, the median does not move
    points = beating_tracks()
    points[5, 2] += (40.0, 0.0)
    track = smooth_cine_landmarks(points, np.full(points.shape[:2], 0.9), SPACING_MM)
    assert track.filled[5, 2] and track.filled.sum() == 1


def test_the_default_smoothing_is_a_cyclic_gaussian_of_three_quarters_of_a_phase():
    # A still apex one pixel off at phase 0 (1.5 mm, no outlier): the smoothed track is the Gaussian kernel
    # (sigma 0.75 phases, cut at 4 sigma = 3 phases) centred on phase 0, reaching round the cycle to phases 22-24.
    points = np.tile([[100.0, 100.0], [100.0, 130.0], [160.0, 115.0]], (N_PHASES, 1, 1))
    points[0, 2, 0] += 1.0
    track = smooth_cine_landmarks(points, np.full(points.shape[:2], 0.9), SPACING_MM)
    distances = np.arange(-3, 4)
    weights = np.exp(-(distances**2) / (2 * 0.75**2))
    weights /= weights.sum()
    expected = np.full(N_PHASES, 160.0)
    expected[distances % N_PHASES] += weights
    np.testing.assert_allclose(track.points_rc[:, 2, 0], expected, atol=1e-9)
    np.testing.assert_allclose(track.points_rc[:, :2], points[:, :2], atol=1e-9)
    assert not track.filled.any()


def test_a_filled_landmark_keeps_its_own_probability():
    names = ("MV-1", "MV-2", "APEX")
    found = [{n: Landmark(p[0], p[1], 0.8) for n, p in zip(names, phase, strict=True)} for phase in beating_tracks()]
    found[3]["MV-1"] = Landmark(found[3]["MV-1"].row, found[3]["MV-1"].col, 0.05)  # weak: filled
    found[9]["APEX"] = None  # absent: filled, probability 0
    result = smooth_cine_detections(found, SPACING_MM)
    assert result.filled[3]["MV-1"] and result.filled[9]["APEX"]
    assert result.landmarks[3]["MV-1"].probability == 0.05
    assert result.landmarks[9]["APEX"].probability == 0.0
    assert result.landmarks[4]["MV-1"].probability == 0.8


def test_an_ed_es_pair_is_not_smoothed():
    # two phases half a beat apart: smoothing would blur ED and ES into each other and shrink the shortening
    points = beating_tracks(2, shortening=0.25)
    track = smooth_cine_landmarks(points, np.full(points.shape[:2], 0.9), SPACING_MM)
    np.testing.assert_array_equal(track.points_rc, points)


def test_no_points_are_drawn_where_no_landmark_was_seen():
    # phases 10-11 show no heart (blank, or the heart out of view): a gap short enough to bridge, but nothing was
    # seen there to bridge it for, and nothing is invented
    truth = beating_tracks()
    probabilities = np.full(truth.shape[:2], 0.9)
    probabilities[10:12] = 0.0
    track = smooth_cine_landmarks(truth, probabilities, SPACING_MM)
    assert np.isnan(track.points_rc[10:12]).all() and not track.filled[10:12].any()
    assert np.isfinite(track.points_rc[:10]).all() and np.isfinite(track.points_rc[12:]).all()


@pytest.mark.parametrize("run, filled", [(2, True), (3, True), (4, False), (6, False)])
def test_only_short_gaps_of_one_landmark_are_bridged(run, filled):
    truth = beating_tracks()
    probabilities = np.full(truth.shape[:2], 0.9)
    probabilities[23:23 + run, 2] = 0.05  # the apex weak for `run` phases, across the end of the beat
    probabilities[:max(0, 23 + run - N_PHASES), 2] = 0.05
    track = smooth_cine_landmarks(truth, probabilities, SPACING_MM, smoothing_beat_fraction=0.0)
    weak = probabilities[:, 2] < 0.5
    if filled:  # the apex does not move: filled in where it is
        assert track.filled[weak, 2].all()
        np.testing.assert_allclose(track.points_rc[weak, 2], truth[weak, 2], atol=1e-9)
    else:
        assert np.isnan(track.points_rc[weak, 2]).all() and not track.filled[:, 2].any()


@pytest.mark.parametrize("kept_phases, filled", [(12, False), (13, True)])
def test_a_landmark_seen_on_fewer_than_half_the_phases_is_not_filled(kept_phases, filled):
    truth = beating_tracks()
    probabilities = np.full(truth.shape[:2], 0.9)
    weak = np.ones(N_PHASES, dtype=bool)
    weak[::2][:kept_phases] = False  # MV-2 kept on every other phase, `kept_phases` of them: gaps of 1 to 3 phases
    probabilities[weak, 1] = 0.05
    track = smooth_cine_landmarks(truth, probabilities, SPACING_MM)
    assert track.filled[weak, 1].all() == filled and np.isfinite(track.points_rc[weak, 1]).all() == filled
    assert filled or np.isnan(track.points_rc[weak, 1]).all()


def test_an_ed_es_pair_is_not_filled_into_one_length():
    # end-systole's mitral points weak: filled from end-diastole, both phases had one length and a shortening of 0
    names = ("MV-1", "MV-2", "APEX")
    truth = beating_tracks(2, shortening=0.2)
    found = [{n: Landmark(p[0], p[1], 0.9) for n, p in zip(names, phase, strict=True)} for phase in truth]
    found[1]["MV-1"] = found[1]["MV-2"] = None
    result = smooth_cine_detections(found, SPACING_MM)
    assert result.landmarks[1]["MV-1"] is None and not result.filled[1]["MV-1"]
    assert np.isnan(result.lv_length_mm[1]) and np.isnan(result.longitudinal_shortening)


def test_an_absent_phase_does_not_pull_its_neighbours():
    # normalised smoothing: the phases beside an absent one keep what their own neighbours say
    truth = beating_tracks()
    probabilities = np.full(truth.shape[:2], 0.9)
    probabilities[10:16, 0] = 0.0  # MV-1 absent over six phases, whose points are far off
    points = truth.copy()
    points[10:16, 0] += 40.0
    track = smooth_cine_landmarks(points, probabilities, SPACING_MM)
    np.testing.assert_allclose(track.points_rc[9, 0], truth[9, 0], atol=0.6)  # the beat's own curve, not 40 px off


@pytest.mark.parametrize("n_phases", [25, 50])
def test_smoothing_is_a_fraction_of_the_beat_not_of_the_phases(n_phases):
    # a one-phase blip is spread over the same time of the beat whatever the phase count
    points = np.zeros((n_phases, 1, 2))
    points[0, 0, 0] = 1.0
    track = smooth_cine_landmarks(points, np.full((n_phases, 1), 0.9), SPACING_MM, outlier_mm=1e9)
    blip = track.points_rc[:, 0, 0]
    phases_from_it = np.minimum(np.arange(n_phases), n_phases - np.arange(n_phases))  # cyclic
    spread_phases = np.sqrt(np.sum(blip * phases_from_it**2) / np.sum(blip))
    assert spread_phases / n_phases == pytest.approx(0.03, rel=0.1)  # 0.75 phases of 25, 1.5 of 50


@pytest.mark.parametrize("n_phases", [3, 5, 8])
def test_a_short_series_is_not_smoothed_into_a_smaller_shortening(n_phases):
    # a few phases of a beat lie far apart in it: smoothing had blended end-diastole into end-systole (3 phases of
    # the real cine gave 5 % against 16 %)
    names = ("MV-1", "MV-2", "APEX")
    truth = beating_tracks(2 * n_phases)[::2]  # every other phase of a beat: end-diastole and end-systole among them
    found = [{n: Landmark(p[0], p[1], 0.9) for n, p in zip(names, phase, strict=True)} for phase in truth]
    result = smooth_cine_detections(found, SPACING_MM)
    true_lengths = [lv_length_mm(*phase, SPACING_MM) for phase in truth]
    assert result.longitudinal_shortening == pytest.approx((max(true_lengths) - min(true_lengths)) / max(true_lengths))


def test_a_shortening_no_heart_has_is_not_reported(caplog):
    truth = beating_tracks(6, shortening=0.18)  # too few phases for the outlier test
    truth[3, 2] = truth[3, 0] + (20.0, 15.0)  # the apex near the mitral valve in one phase (the apex out of view)
    names = ("MV-1", "MV-2", "APEX")
    found = [{n: Landmark(p[0], p[1], 0.9) for n, p in zip(names, phase, strict=True)} for phase in truth]
    result = smooth_cine_detections(found, (1.5, 1.5))
    assert np.isnan(result.longitudinal_shortening) and "is no heart's" in shortening_problem(result.lv_length_mm)
    # the gadget and detect say why on their log
    measure_slice(found, "lax", (1.5, 1.5), 0.3)
    assert "no longitudinal shortening: a shortening of" in caplog.text


def test_a_shortening_needs_lengths_on_half_the_phases():
    # the real cine cut off at column 128 kept an LV length on 2 of 25 phases: 'LS 0 %'
    lengths = [np.nan] * 23 + [49.5, 49.46]
    assert longitudinal_shortening_or_none(lengths) is None and "on only 2 of 25" in shortening_problem(lengths)
    assert longitudinal_shortening_or_none([90.0, np.nan, 80.0, np.nan]) == pytest.approx(10.0 / 90.0)


@pytest.mark.parametrize("found, threshold, message", [
    ([{"A-RVI": None, "P-RVI": None, "C-LV": None}] * 3, 0.3, "MV-1, MV-2, APEX"),  # a short-axis model's output
    ([{"MV-1": (1.0, 2.0), "MV-2": None, "APEX": None}] * 3, 0.3, "detector.Landmark"),
    ("MV-1", 0.3, "expected per phase"),
    ([{"MV-1": None, "MV-2": None, "APEX": None}] * 3, 5.0, r"\[0, 1\]"),
])
def test_smoothing_refuses_what_is_no_long_axis_detection(found, threshold, message):
    with pytest.raises(ValueError, match=message):
        smooth_cine_detections(found, SPACING_MM, threshold)
