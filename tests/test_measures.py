"""Clinical measures on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cmr_landmark.geometry import anterior_direction_in_image
from cmr_landmark.measures import (
    anterior_rvi_direction_deg,
    longitudinal_shortening,
    longitudinal_shortening_or_none,
    lv_length_mm,
    rounded_measure,
    rv_insertion_angle_deg,
)


def test_lv_length_is_apex_to_mitral_midpoint_in_mm():
    # Mitral points at rows 10, cols 20 and 40: midpoint (10, 30); apex 50 rows below -> 50 px.
    assert lv_length_mm((10, 20), (10, 40), (60, 30), (1.5, 1.5)) == pytest.approx(75.0)
    # Non-square pixels: 30 rows of 2 mm and 40 columns of 0.75 mm -> hypot(60, 30).
    assert lv_length_mm((0, 0), (0, 0), (30, 40), (2.0, 0.75)) == pytest.approx(np.hypot(60.0, 30.0))


def test_lv_length_rejects_missing_points_and_bad_spacing():
    with pytest.raises(ValueError, match="APEX"):
        lv_length_mm((0, 0), (0, 1), (np.nan, 3), (1, 1))
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        lv_length_mm((0, 0), (0, 1), (5, 3), (0, 1))


def test_longitudinal_shortening():
    assert longitudinal_shortening([90.0, 80.0, 72.0, 81.0]) == pytest.approx(0.2)
    assert longitudinal_shortening([100.0, np.nan, 85.0]) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="an LV length on 1 of 2 phases, two are needed"):
        longitudinal_shortening([100.0, np.nan])
    # a length of 0 (the apex on the mitral midpoint) is left out as a missing one is
    assert longitudinal_shortening([100.0, 0.0, 90.0]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="two are needed"):
        longitudinal_shortening([100.0, 0.0])
    with pytest.raises(ValueError, match="no heart's"):  # the reason, not a count of usable lengths
        longitudinal_shortening([100.0, 50.0])
    assert longitudinal_shortening_or_none([100.0, 0.0, np.nan]) is None  # where a caller needs no error
    assert longitudinal_shortening_or_none([100.0, 0.0, 90.0]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="negative"):
        longitudinal_shortening([100.0, -5.0, 90.0])


def test_rv_insertion_angle_is_the_septal_arc_at_the_lv_centre():
    centre = (50.0, 50.0)
    # Anterior 10 px up, posterior 10 px left: a right angle.
    assert rv_insertion_angle_deg((40, 50), (50, 40), centre, (1.0, 1.0)) == pytest.approx(90.0)
    # Up-left and down-left diagonals in square pixels: 90 degrees; with rows twice as long as columns the row
    # components double, so the half angle is atan(2) from the horizontal.
    assert rv_insertion_angle_deg((40, 40), (60, 40), centre, (1.0, 1.0)) == pytest.approx(90.0)
    expected = 2 * np.degrees(np.arctan2(20.0, 10.0))
    assert rv_insertion_angle_deg((40, 40), (60, 40), centre, (2.0, 1.0)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="coincides"):
        rv_insertion_angle_deg(centre, (60, 40), centre, (1.0, 1.0))


def test_anterior_rvi_direction_counter_clockwise_from_reference():
    centre = (50.0, 50.0)
    # Straight up from the centre, reference up: 0; up-left: 45 (counter-clockwise as displayed); right: 270.
    assert anterior_rvi_direction_deg((40, 50), centre, (1, 1)) == pytest.approx(0.0)
    assert anterior_rvi_direction_deg((40, 40), centre, (1, 1)) == pytest.approx(45.0)
    assert anterior_rvi_direction_deg((50, 60), centre, (1, 1)) == pytest.approx(270.0)
    # The patient's anterior pointing to the image right (read_dir = -y): a point up is 90 degrees from it.
    anterior = anterior_direction_in_image((0, -1, 0), (0, 0, 1))
    assert anterior_rvi_direction_deg((40, 50), centre, (1, 1), anterior) == pytest.approx(90.0)
    assert 0.0 <= anterior_rvi_direction_deg((50, 60 + 1e-15), centre, (1, 1), anterior) < 360.0


def test_anterior_insertion_named_by_patient_anatomy() -> None:
    from cmr_landmark.detector import Landmark
    from cmr_landmark.measures import anterior_insertion_is_posterior, name_rv_insertions_anatomically

    # Image rows run along phase_dir = +y (LPS posterior), so the patient's anterior is image "up" (row -1).
    read_dir, phase_dir = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    upper, lower, centre = Landmark(20.0, 30.0, 0.9), Landmark(60.0, 30.0, 0.9), Landmark(40.0, 50.0, 0.9)
    assert not anterior_insertion_is_posterior((20, 30), (60, 30), (1.0, 1.0), (-1.0, 0.0))
    assert anterior_insertion_is_posterior((60, 30), (20, 30), (1.0, 1.0), (-1.0, 0.0))
    kept = name_rv_insertions_anatomically({"A-RVI": upper, "P-RVI": lower, "C-LV": centre}, (1.0, 1.0),
                                           read_dir, phase_dir)
    assert kept["A-RVI"] == upper and kept["P-RVI"] == lower
    swapped = name_rv_insertions_anatomically({"A-RVI": lower, "P-RVI": upper, "C-LV": centre}, (1.0, 1.0),
                                              read_dir, phase_dir)
    assert swapped["A-RVI"] == upper and swapped["P-RVI"] == lower
    # phase_dir = -y: anterior is image "down", so the lower point is the anterior one.
    flipped = name_rv_insertions_anatomically({"A-RVI": upper, "P-RVI": lower, "C-LV": centre}, (1.0, 1.0),
                                              read_dir, (0.0, -1.0, 0.0))
    assert flipped["A-RVI"] == lower and flipped["P-RVI"] == upper
    # a coronal plane has no in-plane anterior: the model's naming stays
    coronal = name_rv_insertions_anatomically({"A-RVI": lower, "P-RVI": upper}, (1.0, 1.0), (1.0, 0.0, 0.0),
                                              (0.0, 0.0, 1.0))
    assert coronal["A-RVI"] == lower
    # ends within 5 mm of each other along the anterior (a slice turned a quarter from the usual): a millimetre of
    # detection noise must not swap the names, so the model's handedness stays; at 6 mm the anatomy names them
    assert not anterior_insertion_is_posterior((24.9, 30), (20, 60), (1.0, 1.0), (-1.0, 0.0))
    assert anterior_insertion_is_posterior((26.0, 30), (20, 60), (1.0, 1.0), (-1.0, 0.0))
    level = name_rv_insertions_anatomically({"A-RVI": Landmark(24.0, 30.0, 0.9), "P-RVI": Landmark(20.0, 60.0, 0.9)},
                                            (1.0, 1.0), read_dir, phase_dir)
    assert level["A-RVI"].row == 24.0
    # the margin is in mm: 3 rows of 2 mm pixels are 6 mm
    assert anterior_insertion_is_posterior((23.0, 30), (20, 60), (2.0, 1.0), (-1.0, 0.0))


def test_image_measures_names_what_the_found_landmarks_allow() -> None:
    from cmr_landmark.measures import image_measures

    sax = {"A-RVI": (10.0, 20.0), "P-RVI": (30.0, 20.0), "C-LV": (20.0, 30.0)}
    assert set(image_measures(sax, "sax", (1.0, 1.0))) == {"RVInsertionAngle_deg"}
    with_anterior = image_measures(sax, "sax", (1.0, 1.0), anterior_direction_rc=(-1.0, 0.0))
    assert set(with_anterior) == {"RVInsertionAngle_deg", "AnteriorRVIDirection_deg"}
    assert image_measures({"A-RVI": (10.0, 20.0), "C-LV": (20.0, 30.0)}, "sax", (1.0, 1.0)) == {}
    lax = {"MV-1": (0.0, 0.0), "MV-2": (0.0, 20.0), "APEX": (40.0, 10.0)}
    assert image_measures(lax, "lax", (2.0, 1.0)) == {"LVLength_mm": 80.0}  # 40 rows of 2 mm
    # an insertion point on the LV centre leaves the angles undefined, not the image's other measures in error
    on_centre = {"A-RVI": (20.0, 30.0), "P-RVI": (30.0, 10.0), "C-LV": (20.0, 30.0)}
    assert image_measures(on_centre, "sax", (1.0, 1.0), anterior_direction_rc=(-1.0, 0.0)) == {}
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        image_measures(lax, "lax", (0.0, 1.0))


def test_the_anterior_rvi_direction_is_the_same_however_the_slice_is_stored() -> None:
    # one heart, stored as the scanner wrote it and stored mirrored (columns reversed, read_dir negated): the AHA
    # segments run counter-clockwise seen from the apex, so the attribute must not flip with the storage
    from cmr_landmark.detector import Landmark
    from cmr_landmark.slice_measures import measure_slice

    read_dir, phase_dir, width = (0.6, -0.8, 0.0), (0.48, 0.36, 0.8), 64
    points = {"A-RVI": (20.0, 22.0), "P-RVI": (40.0, 18.0), "C-LV": (32.0, 36.0)}
    measures = []
    for mirrored in (False, True):
        found = {name: Landmark(row, width - 1 - col if mirrored else col, 0.9) for name, (row, col) in points.items()}
        stored_read_dir = tuple(-v for v in read_dir) if mirrored else read_dir
        measures.append(measure_slice([found], "sax", (1.5, 1.5), 0.5, [(stored_read_dir, phase_dir)]).measures[0])
    assert measures[0]["AnteriorRVIDirection_deg"] == pytest.approx(measures[1]["AnteriorRVIDirection_deg"])
    assert measures[0]["RVInsertionAngle_deg"] == pytest.approx(measures[1]["RVInsertionAngle_deg"])


def test_rv_insertion_points_on_opposite_sides_of_the_centre_make_180_degrees() -> None:
    # (43.5, 73.4) and (67.9, 7.2) are mirror images through (55.7, 40.3); on these pixels the cosine of the two
    # directions rounds to just below -1, which must still read as 180 degrees, not NaN
    assert rv_insertion_angle_deg((43.5, 73.4), (67.9, 7.2), (55.7, 40.3), (0.84, 1.43)) == pytest.approx(180.0)


def test_anterior_rvi_direction_a_hair_clockwise_of_the_reference_is_0_not_360() -> None:
    # the reference points right and a hair (1e-17) up, the A-RVI straight right: -6e-16 degrees, which wraps to 0
    angle = anterior_rvi_direction_deg((50.0, 60.0), (50.0, 50.0), (1.0, 1.0), (-1e-17, 1.0))
    assert 0.0 <= angle < 360.0 and angle == pytest.approx(0.0, abs=1e-9)


def test_a_rounded_direction_stays_below_360_and_other_measures_just_round() -> None:
    assert rounded_measure("AnteriorRVIDirection_deg", 359.99996, 4) == 0.0
    assert rounded_measure("AnteriorRVIDirection_deg", 359.996, 2) == 0.0
    assert str(rounded_measure("AnteriorRVIDirection_deg", -1e-9, 2)) == "0.0"  # no -0.0 in the JSON
    assert rounded_measure("AnteriorRVIDirection_deg", 123.456, 2) == 123.46
    assert rounded_measure("RVInsertionAngle_deg", 179.996, 2) == 180.0  # an angle may be 180
