"""The steps after the model for one slice (slice_measures.measure_slice), shared by the gadget and detect."""

import numpy as np
import pytest

from cmr_landmark.detector import Landmark
from cmr_landmark.measures import longitudinal_shortening
from cmr_landmark.slice_measures import measure_slice

SPACING_MM = (1.5, 1.5)
# An axial-like short-axis plane: columns run to the patient's left (LPS +x), rows to posterior (LPS +y), so the
# patient's anterior is up in the image (towards row 0).
AXIAL_DIRECTIONS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


def sax_found(anterior_row: float, posterior_row: float) -> dict:
    return {"A-RVI": Landmark(anterior_row, 20.0, 0.9), "P-RVI": Landmark(posterior_row, 20.0, 0.9),
            "C-LV": Landmark(30.0, 35.0, 0.9)}


def test_short_axis_names_follow_the_patient_anatomy_where_the_plane_is_known() -> None:
    found = sax_found(anterior_row=40.0, posterior_row=20.0)  # the model's "A-RVI" is the lower (posterior) end
    measured = measure_slice([found], "sax", SPACING_MM, 0.5, [AXIAL_DIRECTIONS])
    assert measured.landmarks[0]["A-RVI"].row == 20.0 and measured.landmarks[0]["P-RVI"].row == 40.0
    assert {"RVInsertionAngle_deg", "AnteriorRVIDirection_deg"} <= measured.measures[0].keys()
    assert measured.filled is None


def test_without_a_plane_the_model_names_stand_and_no_anterior_direction_is_measured() -> None:
    found = sax_found(anterior_row=40.0, posterior_row=20.0)
    measured = measure_slice([found], "sax", SPACING_MM, 0.5)
    assert measured.landmarks[0]["A-RVI"].row == 40.0
    assert "RVInsertionAngle_deg" in measured.measures[0]
    assert "AnteriorRVIDirection_deg" not in measured.measures[0]


def lax_phase(t: int, n_phases: int, apex_probability: float = 0.9) -> dict:
    # the mitral plane moves toward the fixed apex in systole (phase n/2): an LV length curve with a dip
    shift = 8.0 * np.sin(np.pi * t / n_phases)
    return {"MV-1": Landmark(20.0 + shift, 30.0, 0.9), "MV-2": Landmark(20.0 + shift, 50.0, 0.9),
            "APEX": Landmark(80.0, 40.0, apex_probability)}


def test_a_long_axis_cine_is_smoothed_filled_and_given_one_shortening() -> None:
    n_phases = 20
    found = [lax_phase(t, n_phases, apex_probability=0.1 if t == 5 else 0.9) for t in range(n_phases)]
    measured = measure_slice(found, "lax", SPACING_MM, 0.5)
    assert measured.filled is not None and measured.filled[5]["APEX"] and not measured.filled[4]["APEX"]
    assert measured.landmarks[5]["APEX"] is not None  # the weak apex is filled from its neighbours
    lengths = [m["LVLength_mm"] for m in measured.measures]
    assert len(lengths) == n_phases and min(lengths) < max(lengths)
    shortenings = [m["LongitudinalShortening"] for m in measured.measures]
    assert shortenings == [pytest.approx(longitudinal_shortening(lengths))] * n_phases


def test_a_single_long_axis_image_is_measured_without_smoothing() -> None:
    measured = measure_slice([lax_phase(0, 20)], "lax", SPACING_MM, 0.5)
    assert measured.filled is None and "LongitudinalShortening" not in measured.measures[0]
    assert measured.measures[0]["LVLength_mm"] == pytest.approx(60.0 * 1.5)


def test_plane_directions_must_be_one_per_phase() -> None:
    with pytest.raises(ValueError, match="2 plane directions for 1 phases"):
        measure_slice([sax_found(20.0, 40.0)], "sax", SPACING_MM, 0.5, [AXIAL_DIRECTIONS] * 2)


def test_a_plane_with_no_anterior_direction_is_warned_about_once_per_slice(caplog) -> None:
    coronal = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0))  # LPS x and -z: the anterior-posterior axis is its normal
    with caplog.at_level("WARNING", logger="cmr_landmark.slice_measures"):
        measured = measure_slice([sax_found(20.0, 40.0)] * 3, "sax", SPACING_MM, 0.5, [coronal] * 3)
    assert [r.getMessage().startswith("no anterior RV insertion direction") for r in caplog.records] == [True]
    assert all("RVInsertionAngle_deg" in m and "AnteriorRVIDirection_deg" not in m for m in measured.measures)

