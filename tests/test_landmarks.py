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
    lax_apex_about,
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
    # The contact margin (1.5 px) adds at most a few degrees to the crescent's own ends (pixelised: +-0.1 degree).
    assert 110 < anterior < 121 and 239 < posterior < 250
    assert points[0][0] < points[1][0]  # anterior is the upper end in the standard display
    for point in points[:2]:  # on the epicardium (22 mm) within a pixel or two
        assert 19 < np.hypot(*(point - CENTRE)) < 23


def test_sax_arc_through_180_degrees_is_not_split():
    # An RV on the right side (mirror of the standard display) spans 300..60 degrees through 0.
    points = derive_sax_landmarks(_sax_mask(300, 60))
    assert 290 < _screen_angle_deg(points[0]) % 360 < 301
    assert 59 < _screen_angle_deg(points[1]) < 70


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


def test_sax_centre_is_the_centroid_of_the_largest_blood_pool_piece():
    # An L-shaped blood pool: a 20 x 20 square (centroid 79.5, 79.5) and a 10 x 10 foot below its left half
    # (centroid 94.5, 74.5): centroid ((400 * 79.5 + 100 * 94.5) / 500, (400 * 79.5 + 100 * 74.5) / 500). A stray
    # 2 x 2 speck of blood-pool label far away is not part of the LV.
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[70:90, 70:90] = 1
    mask[90:100, 70:80] = 1
    mask[10:12, 10:12] = 1
    points = derive_sax_landmarks(mask)
    np.testing.assert_allclose(points[2], (82.5, 78.5), atol=1e-9)
    assert np.all(np.isnan(points[:2]))


def _box_heart(rv_rows=(60, 101), rv_cols=(30, 51)) -> np.ndarray:
    """A square LV: blood pool rows/cols 60..100, myocardium to 52..108; an RV block (default rows 60..100, cols
    30..50) left of the septum, with one unlabelled column (51) between them, as annotations often leave."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[52:109, 52:109] = 2
    mask[60:101, 60:101] = 1
    mask[rv_rows[0]:rv_rows[1], rv_cols[0]:rv_cols[1]] = 3
    return mask


def test_sax_contact_margin_counts_pixels_as_the_readmes_dilation_does():
    # The data README's rule: the RV "touches" the myocardium after a 1-2 pixel dilation. The default margin,
    # 1.5 px, is the RV dilated by a 3 x 3 square: an RV block right against the septum (columns 30..51, septum
    # column 52) touches rows 60..100 and, diagonally, the corner rows 59 and 101; the same in pixels whatever
    # the pixels' size in mm.
    adjacent = _box_heart(rv_cols=(30, 52))
    for spacing in ((1.0, 1.0), (1.0, 1.5), (0.75, 0.75), (2.0, 2.0)):
        points = derive_sax_landmarks(adjacent, pixel_spacing_mm=spacing)
        np.testing.assert_array_equal(points, [[59.0, 52.0], [101.0, 52.0], [80.0, 80.0]], err_msg=str(spacing))
    # A one-pixel unlabelled gap (column 51) is 2 px away: no contact by default, contact under a 2-pixel dilation
    # (whose reach along the septum is the RV's own rows: the corners are hypot(1, 2) = 2.2 px away).
    gapped = _box_heart()
    assert np.all(np.isnan(derive_sax_landmarks(gapped, pixel_spacing_mm=(1.0, 1.5))[:2]))
    np.testing.assert_array_equal(derive_sax_landmarks(gapped, contact_px=2.0),
                                  [[60.0, 52.0], [100.0, 52.0], [80.0, 80.0]])


def test_sax_a_speck_of_contact_has_no_insertion_points():
    # With a 1-pixel margin, an RV of n pixels in the gap column touches n septal pixels: fewer than 3 have no ends.
    for n in (1, 2):
        points = derive_sax_landmarks(_box_heart((80, 80 + n), (51, 52)), contact_px=1.0)
        assert np.all(np.isnan(points[:2])) and np.all(np.isfinite(points[2])), n
    points = derive_sax_landmarks(_box_heart((80, 83), (51, 52)), contact_px=1.0)
    np.testing.assert_array_equal(points[:2], [[80.0, 52.0], [82.0, 52.0]])


def test_sax_rv_wrapped_over_more_than_300_degrees_has_no_insertion_points():
    # 310 degrees of crescent (widened a little by the contact margin): over the limit
    assert np.all(np.isnan(derive_sax_landmarks(_sax_mask(110, 60))[:2]))
    # 260 degrees: insertion points, at the crescent's ends widened by the margin
    points = derive_sax_landmarks(_sax_mask(140, 40))
    assert 125 < _screen_angle_deg(points[0]) <= 140 and 40 <= _screen_angle_deg(points[1]) < 55


def test_sax_arc_limit_is_measured_in_mm():
    # 270 degrees of crescent in mm, with the gap at the top; columns twice as long as rows. In pixels the 90 degree
    # gap looks ~40 degrees wide (an arc over 300 degrees), in mm it is 90 less the margin: under the limit.
    spacing = (1.0, 2.0)
    points = derive_sax_landmarks(_sax_mask(135, 45, spacing=spacing), pixel_spacing_mm=spacing)
    anterior = _screen_angle_deg(points[0], spacing=spacing)
    posterior = _screen_angle_deg(points[1], spacing=spacing)
    assert 120 < anterior <= 135 and 45 <= posterior < 60


def test_lax_blood_pool_cut_by_the_image_edge_is_not_a_valve():
    # The horseshoe with its left 60 columns cut off: the blood pool runs into the image edge over rows 60..101
    # (42 pixels, nearly as long as the valve). The edge is closed; the valve is still row 60, from the edge
    # (column 56 of the whole horseshoe lies outside) to column 104 - 60 = 44.
    mask, _ = _lax_horseshoe()
    points = derive_lax_landmarks(mask[:, 60:])
    np.testing.assert_array_equal(points[:2], [[60.0, 0.0], [60.0, 44.0]])
    assert np.linalg.norm(points[2] - (137.0, 20.0)) < 2.0


def test_lax_blunt_lopsided_apex_gives_the_middle_of_its_cap():
    # An LV whose epicardium ends in a cap at 60 px from the mitral midpoint (30, 80), a circular arc about it from
    # 28 px left (asin(28 / 60) = 27.8 degrees) to 5 px right (4.8 degrees) of the long axis; further right the wall
    # is 6 px nearer. Every cap pixel is as far as any other within rasterisation: APEX is the middle of the cap
    # (11.5 degrees left of the axis), not the one pixel straight down that happens to be exactly 60 px away.
    rows, cols = np.mgrid[:110, :160].astype(float)
    distance = np.hypot(rows - 30, cols - 80)
    below = rows >= 30

    def region(radius, left, right):
        return below & (distance <= radius) & (cols >= 80 - left) & (cols <= 80 + right) & (
            (cols <= 85) | (distance <= radius - 6))

    mask = np.zeros(rows.shape, np.uint8)
    mask[region(60, 28, 28)] = 2
    mask[region(53, 22, 22)] = 1
    points = derive_lax_landmarks(mask)
    np.testing.assert_array_equal(points[:2], [[30.0, 58.0], [30.0, 102.0]])
    offset = points[2] - (30.0, 80.0)
    left_of_axis_deg = np.degrees(np.arctan2(-offset[1], offset[0]))
    cap_middle_deg = (np.degrees(np.arcsin(28 / 60)) - np.degrees(np.arcsin(5 / 60))) / 2
    assert abs(left_of_axis_deg - cap_middle_deg) < 2.0
    assert 57 < np.hypot(*offset) <= 60


def test_lax_tilted_ventricle_on_anisotropic_pixels_is_measured_in_mm():
    # The horseshoe's ellipses drawn in mm (axis 78 mm to the epicardial apex, valve 2 x 25 mm wide), tilted 30
    # degrees off the image's down direction, on pixels of 2 mm rows x 1 mm columns. The landmarks follow the mm
    # geometry; the apex found by the farthest pixel in pixel units would be over 13 mm away.
    spacing = np.array([2.0, 1.0])
    rows, cols = np.mgrid[:120, :200].astype(float)
    valve_mm = np.array([40.0, 100.0])
    y, x = rows * spacing[0] - valve_mm[0], cols * spacing[1] - valve_mm[1]
    axis = np.array([np.cos(np.radians(30)), np.sin(np.radians(30))])  # (row, col) in mm, towards the apex
    along, across = y * axis[0] + x * axis[1], -y * axis[1] + x * axis[0]
    mask = np.zeros(rows.shape, np.uint8)
    mask[((along / 78) ** 2 + (across / 33) ** 2 < 1) & (along >= 0)] = 2
    mask[((along / 70) ** 2 + (across / 25) ** 2 < 1) & (along >= 0)] = 1
    points = derive_lax_landmarks(mask, pixel_spacing_mm=tuple(spacing))
    across_dir = np.array([-axis[1], axis[0]])
    # MV-1 is the left-hand end with the apex pointing down: the end at -25 mm across
    expected = np.array([valve_mm - 25 * across_dir, valve_mm + 25 * across_dir, valve_mm + 78 * axis]) / spacing
    errors_mm = np.linalg.norm((points - expected) * spacing, axis=1)
    assert np.all(errors_mm < 3.0), errors_mm


def test_lax_apex_about_the_rule_mitral_midpoint_is_the_rule_apex():
    # the tilted ventricle above, on anisotropic pixels: lax_apex_about (what synthetic 3CH targets use, about the
    # anatomy's mitral points) is the very apex derive_lax_landmarks takes about its own
    spacing = (2.0, 1.0)
    rows, cols = np.mgrid[:120, :200].astype(float)
    y, x = rows * spacing[0] - 40.0, cols * spacing[1] - 100.0
    along, across = y * np.cos(np.radians(30)) + x * np.sin(np.radians(30)), -y * np.sin(np.radians(30)) + x * np.cos(
        np.radians(30))
    mask = np.zeros(rows.shape, np.uint8)
    mask[((along / 78) ** 2 + (across / 33) ** 2 < 1) & (along >= 0)] = 2
    mask[((along / 70) ** 2 + (across / 25) ** 2 < 1) & (along >= 0)] = 1
    mv1, mv2, apex = derive_lax_landmarks(mask, pixel_spacing_mm=spacing)
    np.testing.assert_array_equal(lax_apex_about((mv1 + mv2) / 2, mask, pixel_spacing_mm=spacing), apex)
    assert np.all(np.isnan(lax_apex_about((mv1 + mv2) / 2, np.where(mask == 1, 0, mask), pixel_spacing_mm=spacing)))


def test_lax_gap_in_the_myocardium_annotation_is_not_the_valve():
    # A 3-row gap in the lateral wall (rows 99-101): the blood pool meets the background there too, a short opening
    # beside the long one at the base. The valve is the longest opening.
    mask, expected = _lax_horseshoe()
    wall = mask[99:102, 100:115]
    wall[wall == 2] = 0
    np.testing.assert_allclose(derive_lax_landmarks(mask), expected, atol=1.5)


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
