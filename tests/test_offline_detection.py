"""offline_detection treats short-axis slices as the gadget does where the file knows the patient geometry: shown to
the model in the standard display, A-RVI / P-RVI named by the anatomy."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from cmr_landmark.detector import Landmark
from cmr_landmark.io.image_series import ImageSeries, SliceGeometry
from cmr_landmark.offline_detection import detect_series, shortening_per_slice

UPPER, LOWER, CENTRE = Landmark(20.0, 30.0, 0.9), Landmark(60.0, 30.0, 0.9), Landmark(40.0, 50.0, 0.9)


class FixedDetector:
    """Stands in for a short-axis Detector: the model calls the upper point A-RVI on every image."""

    spec = SimpleNamespace(view="sax", name="fixed", display_rv_direction_deg=None, probability_threshold=0.5)

    def __init__(self) -> None:
        self.shown: list[np.ndarray] = []

    def detect(self, images, pixel_spacing_mm, same_slice=False):
        self.shown.extend(images)
        return [{"A-RVI": UPPER, "P-RVI": LOWER, "C-LV": CENTRE} for _ in images]


def one_slice(frame: str, row_direction: tuple[float, float, float],
              col_direction: tuple[float, float, float] = (1.0, 0.0, 0.0), pixels: np.ndarray | None = None
              ) -> ImageSeries:
    geometry = SliceGeometry(np.zeros(3), np.asarray(row_direction, dtype=float), np.asarray(col_direction, float))
    # some signal: detect_series reports nothing on an image without any (as the gadget leaves it out)
    pixels = np.random.default_rng(0).random((80, 80)).astype(np.float32) if pixels is None else pixels
    return ImageSeries(pixels[np.newaxis, np.newaxis], (1.0, 1.0), (geometry,), frame,
                       "col_row" if frame == "LPS" else "row_col", "test")


def test_a_slice_stored_a_quarter_turn_off_is_shown_to_the_model_anterior_up():
    # columns run posterior (+y), so the patient's anterior is the stored image's left edge; rows run to the
    # patient's left (+x). The model must see the anterior edge on top.
    stored = np.zeros((80, 80), np.float32)
    stored[40, 0] = 1.0  # a mark on the anterior edge
    detector = FixedDetector()
    detect_series(one_slice("LPS", (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), stored), detector)
    (shown,) = detector.shown
    assert np.argwhere(shown == 1.0)[0][0] == 0


@pytest.mark.parametrize("row_direction", [(0.0, 1.0, 0.0), (0.0, -1.0, 0.0)])
def test_with_patient_geometry_a_rvi_is_the_end_nearer_the_anterior(row_direction):
    # rows run posterior (anterior up) or anterior (anterior down): either way A-RVI is the anterior end
    record = detect_series(one_slice("LPS", row_direction), FixedDetector())[0]
    anterior_y = record["landmarks"]["A-RVI"]["world_mm"][1]  # LPS: the patient's anterior is -y
    posterior_y = record["landmarks"]["P-RVI"]["world_mm"][1]
    assert anterior_y < posterior_y
    assert record["rv_insertion_angle_deg"] is not None
    assert 0.0 <= record["anterior_rvi_direction_deg"] < 360.0  # the AHA orientation: the geometry is known


def test_a_nifti_shown_as_stored_keeps_the_models_naming():
    # a NIfTI has no trustworthy patient geometry; shown as stored (this model records no display direction, so its
    # anatomy is not read: display_orientation_of), the points keep the model's names
    record = detect_series(one_slice("RAS", (0.0, -1.0, 0.0)), FixedDetector())[0]
    assert record["landmarks"]["A-RVI"]["voxel"][0] == UPPER.row


class OffGridDetector(FixedDetector):
    """Points a hair short of a rounding boundary: the voxel written (3 decimals) is not the point found."""

    def detect(self, images, pixel_spacing_mm, same_slice=False):
        return [{"A-RVI": Landmark(20.0004999, 30.0004999, 0.9), "P-RVI": LOWER, "C-LV": CENTRE} for _ in images]


def test_world_mm_is_the_affine_of_the_voxel_as_written():
    # 10 mm pixels along a diagonal: a voxel rounded by 0.0005 would move world_mm by up to 0.014 mm
    step = 10.0 / np.sqrt(2.0)
    series = one_slice("RAS", (step, step, 0.0), (0.0, step, step))
    landmark = detect_series(series, OffGridDetector())[0]["landmarks"]["A-RVI"]
    i, j = landmark["voxel"]
    geometry = series.slice_geometry[0]
    expected = geometry.origin_mm + i * geometry.row_step_mm + j * geometry.col_step_mm
    np.testing.assert_allclose(landmark["world_mm"], expected, atol=0.0005 + 1e-9)


def test_a_zero_lv_length_does_not_stop_the_shortening_of_its_slice():
    # apex on the mitral midpoint (a degenerate detection): left out like a missing length, not an error
    records = [{"slice": 0, "lv_length_mm": length} for length in (0.0, 90.0, None, 80.0)]
    assert shortening_per_slice(records) == [{"slice": 0, "longitudinal_shortening": round(10.0 / 90.0, 4)}]
    # every phase counts: lengths on 2 of 5 phases give none
    records.append({"slice": 0, "lv_length_mm": None})
    assert shortening_per_slice(records) == []
