"""lax_evaluation: stage recombination, the cine at the labelled phases, the mitral-valve count, orientations."""

from __future__ import annotations

import numpy as np
import torch

from cmr_landmark.cine import CineLandmarks
from cmr_landmark.datasets import Slice
from cmr_landmark.detector import Landmark
from cmr_landmark.lax_evaluation import (
    CoarseStageSwapped,
    evaluate_cine_at_labelled,
    phases_on_the_mitral_valve,
)
from cmr_landmark.model_store import find_model, load_torchscript
from cmr_landmark.network import UNet
from cmr_landmark.training import load_stage


def test_the_swapped_cascade_runs_the_checkpoints_coarse_stage_and_the_shipped_fine_stage(tmp_path) -> None:
    torch.manual_seed(0)
    coarse = UNet(3, (4, 8)).eval()
    torch.save({"model": coarse.state_dict(), "widths": [4, 8]}, tmp_path / "coarse_best.pt")
    shipped = load_torchscript(find_model("lax", "cine"), torch.device("cpu"))
    swapped = CoarseStageSwapped(load_stage(tmp_path / "coarse_best.pt", "coarse", "lax"), shipped)
    whole_chest, crop = torch.randn(2, 1, 64, 64), torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(swapped.coarse_probabilities(whole_chest), torch.softmax(coarse(whole_chest), 1))
        assert not torch.allclose(swapped.coarse_probabilities(whole_chest), shipped.coarse_probabilities(whole_chest))
        torch.testing.assert_close(swapped.fine_probabilities(crop), shipped.fine_probabilities(crop))


def test_a_cine_is_judged_at_the_phase_each_labelled_frame_is() -> None:
    labels = np.array([[100.0, 100.0], [100.0, 130.0], [160.0, 115.0]])  # MV-1, MV-2, APEX; LV length 60 px
    slices = [Slice(np.zeros((8, 8), np.float32), (1.5, 1.5), labels, "lax", "cine", "mnms2", "001", 0, phase)
              for phase in (0, 1)]  # ED, ES
    on_labels = {n: Landmark(r, c, 0.9) for n, (r, c) in zip(("MV-1", "MV-2", "APEX"), labels, strict=True)}
    apex_off = {**on_labels, "APEX": Landmark(150.0, 115.0, 0.9)}  # 10 px short: 15 mm, LV length -1/6
    cine = CineLandmarks([on_labels, apex_off, on_labels], [{}] * 3, np.zeros(3), 0.0)
    ed, es = evaluate_cine_at_labelled(cine, slices, {"ED": 2, "ES": 1})
    assert (ed["phase"], es["phase"]) == ("ED", "ES")
    assert ed["mean_mm"] == 0.0 and ed["lv_length_error_percent"] == 0.0
    assert es["APEX_mm"] == 15.0 and es["MV-1_mm"] == 0.0
    assert abs(es["lv_length_error_percent"] - 100 * (50 - 60) / 60) < 1e-9


def test_phases_count_as_on_the_mitral_valve_only_with_both_points_near_its_tracks() -> None:
    ed = np.array([[100.0, 100.0], [100.0, 130.0], [160.0, 115.0]])
    es = ed + [[8.0, 0.0], [8.0, 0.0], [0.0, 0.0]]  # the annulus moves 8 px toward the apex
    slices = [Slice(np.zeros((8, 8), np.float32), (1.5, 1.5), labels, "lax", "cine", "mnms2", "001", 0, phase)
              for phase, labels in ((0, ed), (1, es))]
    apex = [160.0, 115.0]
    on_track = [[104.0, 102.0], [104.0, 128.0], apex]         # between ED and ES, 2 px (3 mm) off the tracks
    swapped = [[104.0, 128.0], [104.0, 102.0], apex]          # the same, named the other way round
    tricuspid = [[104.0, 80.0], [104.0, 102.0], apex]         # one point 20 px (30 mm) toward the RV
    both_on_one_end = [[104.0, 101.0], [104.0, 103.0], apex]  # two points on the septal end
    cine = np.array([on_track, swapped, tricuspid, both_on_one_end, on_track])
    assert phases_on_the_mitral_valve(cine, slices) == 3
    assert phases_on_the_mitral_valve(cine, slices, tolerance_mm=2.0) == 0
