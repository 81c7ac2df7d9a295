"""lax_evaluation's stage recombination: a training run's coarse stage measured inside a shipped cascade."""

from __future__ import annotations

import torch

from cmr_landmark.lax_evaluation import CoarseStageSwapped
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
