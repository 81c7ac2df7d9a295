"""offline_detection names A-RVI / P-RVI as the gadget does: by the anatomy, where the file knows it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from cmr_landmark.detector import Landmark
from cmr_landmark.io.image_series import ImageSeries, SliceGeometry
from cmr_landmark.offline_detection import detect_series

UPPER, LOWER, CENTRE = Landmark(20.0, 30.0, 0.9), Landmark(60.0, 30.0, 0.9), Landmark(40.0, 50.0, 0.9)


class FixedDetector:
    """Stands in for a short-axis Detector: the model calls the upper point A-RVI on every image."""

    spec = SimpleNamespace(view="sax")

    def detect(self, images, pixel_spacing_mm, same_slice=False):
        return [{"A-RVI": UPPER, "P-RVI": LOWER, "C-LV": CENTRE} for _ in images]


def one_slice(frame: str, row_direction: tuple[float, float, float]) -> ImageSeries:
    geometry = SliceGeometry(np.zeros(3), np.asarray(row_direction, dtype=float), np.array([1.0, 0.0, 0.0]))
    return ImageSeries(np.zeros((1, 1, 80, 80), np.float32), (1.0, 1.0), (geometry,), frame,
                       "col_row" if frame == "LPS" else "row_col", "test")


@pytest.mark.parametrize(("frame", "row_direction", "anterior"), [
    ("LPS", (0.0, 1.0, 0.0), UPPER),   # rows run posterior: the patient's anterior is image "up"
    ("LPS", (0.0, -1.0, 0.0), LOWER),  # rows run anterior: the lower point is the anterior one
    ("RAS", (0.0, -1.0, 0.0), UPPER),  # NIfTI: no trustworthy orientation, the model's naming stays
])
def test_rv_insertion_points_are_named_by_the_files_geometry(frame, row_direction, anterior):
    record = detect_series(one_slice(frame, row_direction), FixedDetector())[0]
    voxel = record["landmarks"]["A-RVI"]["voxel"]
    row = voxel[1] if frame == "LPS" else voxel[0]
    assert row == anterior.row
    assert record["rv_insertion_angle_deg"] is not None
