"""scripts/stack_orientation_fallback.py: a missed slice's AHA orientation borrowed from its stack's other slices."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cmr_landmark.measures import anterior_rvi_direction_deg

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))  # it imports its sibling compare_sax_models
    spec = importlib.util.spec_from_file_location("stack_orientation_fallback",
                                                  SCRIPTS / "stack_orientation_fallback.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def landmarks(direction_deg: float) -> np.ndarray:
    """A-RVI 20 px from the centre (60, 60) at ``direction_deg`` counter-clockwise from image up; P-RVI absent."""
    turn = np.radians(direction_deg)
    return np.array([[60 - 20 * np.cos(turn), 60 - 20 * np.sin(turn)], [np.nan, np.nan], [60.0, 60.0]])


def test_a_missed_slice_borrows_the_mean_of_the_others(script) -> None:
    truths, predicted = (10.0, 20.0, 50.0), (14.0, 16.0, 50.0)
    slices = [SimpleNamespace(dataset="d", patient="p", phase=0, landmarks_rc=landmarks(t), pixel_spacing_mm=(1, 1))
              for t in truths]
    assert anterior_rvi_direction_deg(*slices[0].landmarks_rc[[0, 2]], (1, 1)) == pytest.approx(10.0)
    points = np.stack([landmarks(p) for p in predicted])
    probability = np.array([[0.9, 0.0, 0.9], [0.9, 0.0, 0.9], [0.2, 0.0, 0.9]])  # the third slice's A-RVI missed
    own, where_found, where_missed, nothing = script.errors_deg(slices, points, probability, 0.5)
    assert own == pytest.approx([4.0, 4.0])
    assert where_found == pytest.approx([6.0, 6.0])  # each found slice against the other's direction
    assert where_missed == pytest.approx([35.0])  # 50 against the mean of 14 and 16
    assert nothing == 0
    lonely = script.errors_deg(slices[2:], points[2:], probability[2:], 0.5)
    assert lonely == ([], [], [], 1)
