"""Recovering fine-tunable weights from a model frozen without its training state (cmr_landmark.unfreeze)."""

from pathlib import Path

import pytest
import torch
from torch import nn

from cmr_landmark.config import COARSE_GRID, FINE_GRID_BY_VIEW
from cmr_landmark.export import export_cascade, has_training_state
from cmr_landmark.network import LandmarkCascade, UNet
from cmr_landmark.unfreeze import calibrate_batchnorm, folded_cascade, main


def trained_looking_cascade(seed: int = 0) -> LandmarkCascade:
    """Two small U-Nets (different widths) whose BatchNorms have non-trivial weights and running statistics, as a
    trained net's have: folding them must then change every convolution."""
    torch.manual_seed(seed)
    cascade = LandmarkCascade(UNet(3, (4, 8)), UNet(3, (4, 8, 16)))
    with torch.no_grad():
        for bn in (m for m in cascade.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 2.0), bn.bias.normal_(0, 0.3)
            bn.running_mean.normal_(0, 0.5), bn.running_var.uniform_(0.2, 3.0)
    return cascade.eval()


def export(cascade: LandmarkCascade, folder: Path, embed: bool) -> Path:
    return export_cascade(cascade, "frozen", "lax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["lax"], 0.3, folder,
                          embed_training_state=embed)


def smooth_images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 1, size // 4, size // 4, generator=generator)
    return nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)


def test_folded_cascade_is_the_frozen_file_in_eval_mode_with_the_original_widths(tmp_path: Path) -> None:
    original = trained_looking_cascade()
    path = export(original, tmp_path, embed=False)
    frozen = torch.jit.load(str(path))
    recovered = folded_cascade(path)
    assert [b[0].out_channels for b in recovered.coarse.encoders] == [4, 8]
    assert [b[0].out_channels for b in recovered.fine.encoders] == [4, 8, 16]
    images = smooth_images(6, 32)
    with torch.no_grad():
        for method in ("coarse_probabilities", "fine_probabilities"):
            torch.testing.assert_close(getattr(recovered, method)(images), getattr(frozen, method)(images),
                                       atol=1e-5, rtol=0)
    # the weights are the folded ones, not the originals: freezing cannot be undone, only matched
    assert not torch.allclose(recovered.coarse.encoders[0][0].weight, original.coarse.encoders[0][0].weight)


def test_calibrated_batchnorm_keeps_the_function_and_makes_training_mode_agree(tmp_path: Path) -> None:
    recovered = folded_cascade(export(trained_looking_cascade(), tmp_path, embed=False))
    unet, images = recovered.fine, smooth_images(16, 32)
    with torch.no_grad():
        eval_before = unet.eval()(images)
        uncalibrated_training_mode = unet.train()(images)
    fresh = folded_cascade(tmp_path / "frozen.pt").fine  # the train-mode pass above moved the other's statistics
    calibrate_batchnorm(fresh, images)
    with torch.no_grad():
        eval_after = fresh.eval()(images)
        training_mode = fresh.train()(images)  # one batch of exactly the calibration images
    torch.testing.assert_close(eval_after, eval_before, atol=1e-4, rtol=0)
    calibrated_gap = float((training_mode - eval_after).abs().max())
    uncalibrated_gap = float((uncalibrated_training_mode - eval_before).abs().max())
    assert calibrated_gap < 1e-3 < uncalibrated_gap


def test_models_that_carry_their_training_state_are_passed_on_as_they_are(tmp_path: Path, capsys) -> None:
    embedded = export(trained_looking_cascade(), tmp_path / "embedded", embed=True)
    plain = export(trained_looking_cascade(), tmp_path / "plain", embed=False)
    assert has_training_state(embedded) and not has_training_state(plain)
    with pytest.raises(SystemExit) as stop:
        main([str(embedded), "--out", str(tmp_path / "run")])
    assert stop.value.code == 2  # a usage error that names the way out, not a crash or a success
    assert "carries its training state: pass it to --init-from" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_command_writes_a_run_folder_that_init_from_takes(tmp_path: Path, monkeypatch) -> None:
    from cmr_landmark.training import load_stage, load_stage_weights

    monkeypatch.setenv("CMR_LANDMARK_CACHE", str(tmp_path / "cache"))  # its synthetic calibration set goes there
    plain = export(trained_looking_cascade(), tmp_path / "plain", embed=False)
    with pytest.raises(ValueError, match="cmr_landmark.unfreeze"):  # the error tells the user the way out
        load_stage_weights(plain, "fine")
    assert main([str(plain), "--out", str(tmp_path / "run"), "--slices", "24", "--seed", "5"]) == 0
    frozen = torch.jit.load(str(plain))
    images = smooth_images(4, 64)
    with torch.no_grad():
        for stage in ("coarse", "fine"):
            unet = load_stage(tmp_path / "run", stage, "lax")  # what --init-from RUN loads
            torch.testing.assert_close(torch.softmax(unet(images), 1),
                                       getattr(frozen, f"{stage}_probabilities")(images), atol=1e-4, rtol=0)
