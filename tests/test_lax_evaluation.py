"""lax_evaluation: stage recombination, the cine at the labelled phases, the mitral-valve count, orientations."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from cmr_landmark.cine import CineLandmarks
from cmr_landmark.config import COARSE_GRID, FINE_GRID_BY_VIEW
from cmr_landmark.datasets import Slice
from cmr_landmark.detector import Landmark
from cmr_landmark.export import export_cascade
from cmr_landmark.lax_evaluation import (
    CoarseStageSwapped,
    evaluate_cine_at_labelled,
    main,
    phases_on_the_mitral_valve,
)
from cmr_landmark.model_store import find_model, load_torchscript
from cmr_landmark.network import LandmarkCascade, UNet
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


def test_a_landmark_the_cine_never_found_is_reported_not_found() -> None:
    labels = np.array([[100.0, 100.0], [100.0, 130.0], [160.0, 115.0]])
    slices = [Slice(np.zeros((8, 8), np.float32), (1.5, 1.5), labels, "lax", "cine", "mnms2", "001", 0, 0)]
    no_apex = {"MV-1": Landmark(100.0, 100.0, 0.9), "MV-2": Landmark(100.0, 130.0, 0.9), "APEX": None}
    (row,) = evaluate_cine_at_labelled(CineLandmarks([no_apex], [{}], np.full(1, np.nan), math.nan), slices,
                                       {"ED": 0})
    assert row["MV-1_mm"] == 0.0 and row["MV-1_probability"] == 0.9
    assert math.isnan(row["APEX_mm"]) and math.isnan(row["APEX_probability"])
    assert math.isnan(row["mean_mm"]) and math.isnan(row["lv_length_error_percent"])


def test_the_command_writes_its_outputs_for_a_model_that_finds_nothing_in_the_cine(shared_data, tmp_path,
                                                                                   capsys) -> None:
    # an untrained model whose threshold no point reaches: the smoothed cine has no landmark in any phase
    torch.manual_seed(0)
    models, out = tmp_path / "models", tmp_path / "out"
    export_cascade(LandmarkCascade(UNet(3, (4, 8)), UNet(3, (4, 8))), "lax_cine", "lax", "cine", COARSE_GRID,
                   FINE_GRID_BY_VIEW["lax"], 1.0, models)
    assert main(["--model", "lax_cine", "--folder", str(models), "--out", str(out)]) == 0
    measured = json.loads((out / "lax_measured.json").read_text())
    for row in measured["cine"]["at_labelled_frames"]:
        assert all(math.isnan(row[f"{name}_mm"]) for name in ("MV-1", "MV-2", "APEX"))
    assert (out / "lax_cine_curve.png").is_file() and (out / "lax_cine_overlays.png").is_file()
    assert "cine, smoothed, at ED: MV-1 not found, MV-2 not found, APEX not found" in capsys.readouterr().out


def test_a_point_on_the_mitral_track_extended_beyond_es_is_not_on_the_valve() -> None:
    ed = np.array([[100.0, 100.0], [100.0, 130.0], [160.0, 115.0]])
    es = ed + [[8.0, 0.0], [8.0, 0.0], [0.0, 0.0]]
    slices = [Slice(np.zeros((8, 8), np.float32), (1.5, 1.5), labels, "lax", "cine", "mnms2", "001", 0, phase)
              for phase, labels in ((0, ed), (1, es))]
    apex = [160.0, 115.0]
    # both points on the lines of the tracks, 22 px (33 mm) past the ES ends: on the lines, far off the tracks
    beyond = [[130.0, 100.0], [130.0, 130.0], apex]
    on_track = [[104.0, 100.0], [104.0, 130.0], apex]
    assert phases_on_the_mitral_valve(np.array([beyond, on_track]), slices) == 1


def test_the_labelled_frame_is_matched_to_the_identical_cine_phase() -> None:
    from cmr_landmark.lax_evaluation import matching_frame

    rng = np.random.default_rng(0)
    phases = [Slice(rng.random((8, 8)).astype(np.float32), (1.5, 1.5), np.full((3, 2), np.nan), "lax", "cine",
                    "mnms2", "001", 0, t) for t in range(4)]
    assert [matching_frame(s.image.copy(), phases) for s in phases] == [0, 1, 2, 3]
