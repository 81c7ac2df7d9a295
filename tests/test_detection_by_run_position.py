"""scripts/detection_by_run_position.py: which labelled landmarks lie at an end of their labelled run of slices."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from script_modules import load_script


@pytest.fixture
def script():
    return load_script("detection_by_run_position")


def test_run_ends_per_landmark_in_slice_order(script) -> None:
    # five slices stored out of order; A-RVI labelled on positions 1-3, C-LV on all, P-RVI only on position 2
    labelled = {0: (False, False, True), 1: (True, False, True), 2: (True, True, True), 3: (True, False, True),
                4: (False, False, True)}
    stored = (3, 0, 4, 1, 2)
    slices = [SimpleNamespace(dataset="d", patient="p", view="sax", phase=0, sequence="cine", slice_index=position,
                              landmarks_rc=np.array([[1.0, 1.0] if flag else [np.nan, np.nan]
                                                     for flag in labelled[position]]))
              for position in stored]
    end = script.at_run_end(slices)
    by_position = {position: tuple(end[i]) for i, position in enumerate(stored)}
    assert by_position[1] == (True, False, False)  # A-RVI's run starts here; C-LV is inside its run
    assert by_position[2] == (False, True, False)  # P-RVI alone: both its neighbours lack it
    assert by_position[3] == (True, False, False)
    assert by_position[0] == (False, False, True) and by_position[4] == (False, False, True)  # stack ends


def test_a_miss_summary_says_how_far_and_how_sure(script) -> None:
    assert script.miss_summary(np.array([0.2, 0.6]), np.array([3.0, 12.0])) == "2: 0.40 / 50 % / 7.5"
    assert script.miss_summary(np.array([]), np.array([])) == "0"


def test_an_unknown_set_is_refused_before_a_model_loads(script, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        script.main(["sax_any", "--sets", "t1_synthetic,t1_wall"])
    assert exit_.value.code == 2 and "t1_synthetic_rv_wall" in capsys.readouterr().err


def test_the_sets_asked_for_are_the_sets_measured(script, monkeypatch) -> None:
    asked = []

    class Stop(Exception):
        pass

    def evaluation_sets(names):
        asked.extend(names)
        raise Stop

    monkeypatch.setattr(script, "find_model", lambda view, sequence, name: SimpleNamespace(probability_threshold=0.5))
    monkeypatch.setattr(script, "Detector", lambda spec, use_bf16: None)
    monkeypatch.setattr(script, "evaluation_sets", evaluation_sets)
    with pytest.raises(Stop):
        script.main(["sax_any", "--sets", "ecv_map_rv_wall,t1_synthetic_rv_wall"])
    assert asked == ["ecv_map_rv_wall", "t1_synthetic_rv_wall"]
    asked.clear()
    with pytest.raises(Stop):
        script.main(["sax_any"])
    assert asked == list(script.SETS)


def test_origin_groups_split_myops_by_its_lesion_labels(script) -> None:
    scar = np.zeros((4, 4), np.uint8)
    scar[1, 1] = 2
    slices = [SimpleNamespace(dataset="acdc", pathology=None),
              SimpleNamespace(dataset="myops", pathology=scar),
              SimpleNamespace(dataset="myops", pathology=np.zeros((4, 4), np.uint8)),
              SimpleNamespace(dataset="mscmrseg_lge", pathology=None)]
    groups = {name: mask.tolist() for name, mask in script.origin_groups(slices).items()}
    assert groups == {"acdc": [True, False, False, False], "myops": [False, True, True, False],
                      "mscmrseg_lge": [False, False, False, True],
                      "myops, scar or oedema": [False, True, False, False],
                      "myops, neither": [False, False, True, False]}
    assert "myops, neither" not in script.origin_groups(slices[:1])  # no MyoPS slice, no lesion split
