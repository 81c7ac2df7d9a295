"""Landmark derivation from masks: synthetic masks with known answers, then real slices of the public sets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from cmr_landmark.datasets import iter_slices
from cmr_landmark.landmarks import (
    STANDARD_LABELS,
    LabelCodes,
    derive_lax_landmarks,
    derive_sax_landmarks,
)

SIZE = 161
CENTRE = (80.0, 80.0)


def _screen_angle_deg(point_rc, centre_rc=CENTRE, spacing=(1.0, 1.0)) -> float:
    return float(np.degrees(np.arctan2(-(point_rc[0] - centre_rc[0]) * spacing[0],
                                       (point_rc[1] - centre_rc[1]) * spacing[1])))


def _sax_mask(arc_from_deg: float, arc_to_deg: float, spacing=(1.0, 1.0), with_rv=True) -> np.ndarray:
    """LV blood disc (r < 15 mm), myocardium ring to 22 mm, RV crescent 22..32 mm over a counter-clockwise arc."""
    rows, cols = np.mgrid[:SIZE, :SIZE].astype(float)
    dr, dc = (rows - CENTRE[0]) * spacing[0], (cols - CENTRE[1]) * spacing[1]
    radius = np.hypot(dr, dc)
    angle = np.degrees(np.arctan2(-dr, dc)) % 360.0
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[radius < 15] = 1
    mask[(radius >= 15) & (radius < 22)] = 2
    if with_rv:
        in_arc = (angle - arc_from_deg) % 360.0 <= (arc_to_deg - arc_from_deg) % 360.0
        mask[(radius >= 22) & (radius < 32) & in_arc] = 3
    return mask


def test_sax_standard_crescent_gives_upper_end_as_anterior():
    points = derive_sax_landmarks(_sax_mask(120, 240))
    np.testing.assert_allclose(points[2], CENTRE, atol=0.01)
    anterior, posterior = _screen_angle_deg(points[0]), _screen_angle_deg(points[1]) % 360
    # The 3 mm contact margin widens the arc a little beyond the crescent's own ends.
    assert 105 < anterior <= 120 and 240 <= posterior < 255
    assert points[0][0] < points[1][0]  # anterior is the upper end in the standard display
    for point in points[:2]:  # on the epicardium (22 mm) within a pixel or two
        assert 19 < np.hypot(*(point - CENTRE)) < 23


def test_sax_arc_through_180_degrees_is_not_split():
    # An RV on the right side (mirror of the standard display) spans 300..60 degrees through 0.
    points = derive_sax_landmarks(_sax_mask(300, 60))
    assert 285 < _screen_angle_deg(points[0]) % 360 <= 300
    assert 60 <= _screen_angle_deg(points[1]) < 75


def test_sax_mirror_swaps_anterior_and_posterior():
    mask = _sax_mask(130, 230)
    points = derive_sax_landmarks(mask)
    mirrored_mask = mask[:, ::-1]
    mirrored = derive_sax_landmarks(mirrored_mask, mirrored=True)
    unflipped = mirrored.copy()
    unflipped[:, 1] = SIZE - 1 - mirrored[:, 1]
    np.testing.assert_allclose(unflipped, points, atol=1e-9)
    # Without telling it about the mirror, the names come out the other way round.
    naive = derive_sax_landmarks(mirrored_mask)
    np.testing.assert_allclose(naive[[1, 0]], mirrored[:2], atol=1e-9)


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_sax_rotation_keeps_anterior_end(quarter_turns):
    mask = _sax_mask(110, 230)
    points = derive_sax_landmarks(mask)
    rotated = derive_sax_landmarks(np.rot90(mask, quarter_turns))
    # np.rot90 turns counter-clockwise: (r, c) -> (N-1-c, r) per quarter turn.
    expected = points.copy()
    for _ in range(quarter_turns):
        expected = np.stack([SIZE - 1 - expected[:, 1], expected[:, 0]], axis=1)
    np.testing.assert_allclose(rotated, expected, atol=1e-9)


def test_sax_without_rv_has_only_the_centre():
    points = derive_sax_landmarks(_sax_mask(0, 0, with_rv=False))
    assert np.all(np.isnan(points[:2])) and np.all(np.isfinite(points[2]))


def test_sax_without_lv_has_no_landmarks():
    mask = _sax_mask(120, 240)
    mask[mask == 1] = 2  # myocardium only, no blood pool (a slice through the apex cap)
    assert np.all(np.isnan(derive_sax_landmarks(mask)))
    assert np.all(np.isnan(derive_sax_landmarks(np.zeros((40, 40), np.uint8))))


def test_sax_rv_all_round_has_no_insertion_points():
    points = derive_sax_landmarks(_sax_mask(0, 359.9))
    assert np.all(np.isnan(points[:2])) and np.all(np.isfinite(points[2]))


def test_sax_rv_apart_from_the_lv_has_no_insertion_points():
    mask = _sax_mask(120, 240)
    mask[mask == 3] = 0
    mask[75:85, 5:12] = 3  # an RV far from the septum
    assert np.all(np.isnan(derive_sax_landmarks(mask)[:2]))


def test_sax_anisotropic_spacing_measures_angles_in_mm():
    spacing = (2.0, 1.0)  # rows twice as long as columns
    mask = _sax_mask(135, 225, spacing=spacing)
    points = derive_sax_landmarks(mask, pixel_spacing_mm=spacing)
    anterior = _screen_angle_deg(points[0], spacing=spacing)
    posterior = _screen_angle_deg(points[1], spacing=spacing) % 360
    assert 120 < anterior <= 135 and 225 <= posterior < 240
    # Measured in pixels instead, the same points sit at clearly different angles.
    assert abs(_screen_angle_deg(points[0]) - anterior) > 10


def test_sax_other_label_codes():
    mask = _sax_mask(120, 240)
    recoded = np.select([mask == 1, mask == 2, mask == 3], [500, 2221, 600], 0)
    codes = LabelCodes(lv_blood=(500,), lv_myocardium=(200, 1220, 2221), rv_blood=(600,))
    np.testing.assert_allclose(derive_sax_landmarks(recoded, codes), derive_sax_landmarks(mask))


def test_bad_masks_are_refused():
    with pytest.raises(ValueError, match="2-D"):
        derive_sax_landmarks(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="spacing"):
        derive_lax_landmarks(np.zeros((4, 4), np.uint8), pixel_spacing_mm=(0.0, 1.0))


def _lax_horseshoe() -> tuple[np.ndarray, np.ndarray]:
    """A 4-chamber-like LV, apex down as scanners show it: a U of myocardium open at the top (the valve),
    blood pool inside, RV beside the septum on the left. Returns the mask and (MV-1, MV-2, APEX) expected."""
    rows, cols = np.mgrid[:SIZE, :SIZE].astype(float)
    # Ellipse centred at row 60 (valve plane), semi-axes 70 rows (long axis) x 25 cols; lower half only.
    inner = ((rows - 60) / 70) ** 2 + ((cols - 80) / 25) ** 2 < 1
    outer = ((rows - 60) / 78) ** 2 + ((cols - 80) / 33) ** 2 < 1
    mask = np.zeros((SIZE, SIZE), np.uint8)
    below_valve = rows >= 60
    mask[outer & below_valve] = 2
    mask[inner & below_valve] = 1
    mask[(rows >= 70) & (rows < 120) & (cols >= 30) & (cols < 47) & (mask == 0)] = 3
    expected = np.array([[60.0, 56.0], [60.0, 104.0], [137.0, 80.0]])
    return mask, expected


def test_lax_horseshoe_valve_ends_and_apex():
    mask, expected = _lax_horseshoe()
    points = derive_lax_landmarks(mask)
    np.testing.assert_allclose(points, expected, atol=1.5)


def test_lax_order_follows_apex_direction_and_mirror():
    mask, expected = _lax_horseshoe()
    flipped = derive_lax_landmarks(mask[::-1, :])  # apex up: the left-hand point is now MV-2
    assert flipped[0][1] > flipped[1][1]
    mirrored = derive_lax_landmarks(mask[:, ::-1], mirrored=True)
    np.testing.assert_allclose(SIZE - 1 - mirrored[:, 1], expected[:, 1], atol=1.5)


def test_lax_slanted_valve_plane_is_found_whole():
    mask, _ = _lax_horseshoe()
    rotated = ndimage.rotate(mask, 30, order=0, reshape=False)  # the valve plane becomes a pixel staircase
    points = derive_lax_landmarks(rotated)
    assert 40 < np.linalg.norm(points[0] - points[1]) < 56  # the whole 48-px valve, not a piece of it


def test_lax_closed_blood_pool_has_no_landmarks():
    mask = _sax_mask(0, 0, with_rv=False)  # blood pool enclosed by myocardium: no valve opening
    assert np.all(np.isnan(derive_lax_landmarks(mask)))


# --- real slices ---------------------------------------------------------------------------------------------


def _real_sax_slices(shared_data, dataset, count):
    slices = (s for s in iter_slices(dataset, shared_data) if s.view == "sax" and s.labelled)
    return list(itertools.islice(slices, count))


@pytest.mark.parametrize("dataset", ["acdc", "mscmrseg_lge", "myops", "mnms2"])
def test_real_sax_landmarks_sit_where_expected(shared_data, dataset):
    checked = 0
    for sample in _real_sax_slices(shared_data, dataset, 12):
        points = sample.landmarks_rc
        if not np.all(np.isfinite(points)):
            continue
        spacing = np.asarray(sample.pixel_spacing_mm)
        centre = np.rint(points[2]).astype(int)
        assert sample.mask[centre[0], centre[1]] == 1  # C-LV inside the blood pool
        myocardium = sample.mask == 2
        epicardium = myocardium & ndimage.binary_dilation(~(myocardium | (sample.mask == 1)))
        distance_mm = ndimage.distance_transform_edt(~epicardium, sampling=spacing)
        for point in points[:2]:  # insertion points on the epicardium, within a few mm
            assert distance_mm[tuple(np.rint(point).astype(int))] < 3.0
        # Standard display: RV on the left of the LV centre, A-RVI above P-RVI.
        rv_centre = np.argwhere(sample.mask == 3).mean(axis=0)
        assert rv_centre[1] < points[2][1]
        assert points[0][0] < points[1][0]
        checked += 1
    assert checked >= 3, f"too few {dataset} slices with all landmarks to check"


def test_real_lax_landmarks_sit_where_expected(shared_data):
    lax = [s for s in iter_slices("mnms2", shared_data) if s.view == "lax" and s.labelled]
    assert len(lax) == 2
    for sample in lax:
        spacing = np.asarray(sample.pixel_spacing_mm)
        mv1, mv2, apex = sample.landmarks_rc
        midpoint = (mv1 + mv2) / 2
        valve_mm = np.linalg.norm((mv1 - mv2) * spacing)
        length_mm = np.linalg.norm((apex - midpoint) * spacing)
        assert 15 < valve_mm < 50 and 60 < length_mm < 130  # adult mitral annulus and LV length
        rv_centre = np.argwhere(sample.mask == 3).mean(axis=0)
        assert np.linalg.norm(mv1 - rv_centre) < np.linalg.norm(mv2 - rv_centre)  # MV-1 is the septal end
        assert sample.mask[tuple(np.rint(apex).astype(int))] == 2


def test_standard_labels_are_what_the_cache_uses(tmp_path):
    # ACDC stores 1 RV, 2 myocardium, 3 LV: the cache recodes its masks to the standard codes, so the landmarks
    # derived from a cached mask with STANDARD_LABELS are the cached landmarks
    from test_datasets import _write_acdc_patient

    from cmr_landmark.datasets import build_cache, load_slices

    assert STANDARD_LABELS == LabelCodes(lv_blood=(1,), lv_myocardium=(2,), rv_blood=(3,))
    _write_acdc_patient(tmp_path / "data", "patient001", rv_present_slices={0, 1})
    build_cache("acdc", folder=tmp_path / "cache", root=tmp_path / "data")
    complete = [s for s in load_slices("acdc", folder=tmp_path / "cache") if s.has_all_landmarks]
    assert len(complete) == 4  # 2 slices with an RV x ED/ES
    for s in complete:
        np.testing.assert_allclose(derive_sax_landmarks(s.mask, STANDARD_LABELS, s.pixel_spacing_mm), s.landmarks_rc,
                                   atol=1e-6)
