"""scripts/stack_orientation_fallback.py: a missed slice's AHA orientation borrowed from its stack's other slices."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from script_modules import load_script

from cmr_landmark.measures import anterior_rvi_direction_deg


@pytest.fixture
def script():
    return load_script("stack_orientation_fallback")


def landmarks(direction_deg: float) -> np.ndarray:
    """A-RVI 20 px from the centre (60, 60) at ``direction_deg`` counter-clockwise from image up; P-RVI absent."""
    turn = np.radians(direction_deg)
    return np.array([[60 - 20 * np.cos(turn), 60 - 20 * np.sin(turn)], [np.nan, np.nan], [60.0, 60.0]])


def test_a_missed_slice_borrows_the_mean_or_the_nearest_of_the_others(script) -> None:
    truths, predicted = (10.0, 20.0, 50.0, 40.0), (14.0, 16.0, 50.0, 44.0)
    slices = [SimpleNamespace(dataset="d", patient="p", view="sax", phase=0, sequence="t1", slice_index=position,
                              landmarks_rc=landmarks(t), pixel_spacing_mm=(1, 1))
              for position, t in zip((0, 1, 3, 2), truths, strict=True)]
    assert anterior_rvi_direction_deg(*slices[0].landmarks_rc[[0, 2]], (1, 1)) == pytest.approx(10.0)
    points = np.stack([landmarks(p) for p in predicted])
    probability = np.full((4, 3), 0.9)
    probability[2, 0] = 0.2  # the slice at position 3 has its A-RVI missed
    errors = script.errors_deg(slices, points, probability, 0.5)
    assert errors["own"] == pytest.approx([4.0, 4.0, 4.0])
    # the missed slice (truth 50): the mean of 14, 16 and 44 is about 24.5; its neighbour at position 2 says 44
    (mean_missed,) = errors["mean where missed"]
    assert 25.0 < mean_missed < 26.0
    assert errors["nearest where missed"] == pytest.approx([6.0])
    # position 0 (truth 10) borrows from position 1 (16), position 1 (20) from 0 and 2 (14 and 44: 29), position 2
    # (40) from position 1 (16)
    assert errors["nearest where found"] == pytest.approx([6.0, 9.0, 24.0], abs=0.01)
    assert errors["nothing to borrow"] == []
    alone = script.errors_deg(slices[2:3], points[2:3], probability[2:3], 0.5)
    assert alone["nothing to borrow"] == [0] and alone["own"] == []

