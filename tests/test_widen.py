"""Widening a trained U-Net without changing what it computes (cmr_landmark.widen)."""

from pathlib import Path

import pytest
import torch
from torch import nn

from cmr_landmark.config import COARSE_GRID, FINE_GRID_BY_VIEW
from cmr_landmark.export import export_cascade
from cmr_landmark.network import LandmarkCascade, UNet, unet_widths
from cmr_landmark.training import load_stage_weights
from cmr_landmark.widen import main, widen_unet, widen_unet_state


def trained_looking_unet(widths: tuple[int, ...], seed: int = 0) -> UNet:
    """A U-Net whose BatchNorms have non-trivial weights and running statistics, as a trained one's have."""
    torch.manual_seed(seed)
    unet = UNet(3, widths)
    with torch.no_grad():
        for bn in (m for m in unet.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 2.0), bn.bias.normal_(0, 0.3)
            bn.running_mean.normal_(0, 0.5), bn.running_var.uniform_(0.2, 3.0)
        for up in unet.upsamplers:
            up.bias.normal_(0, 0.3)
    return unet


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_without_noise_the_wide_net_is_the_narrow_one(mode: str) -> None:
    narrow = trained_looking_unet((4, 8, 16))
    wide = widen_unet(narrow, (7, 11, 29), noise=0.0)  # uneven: some channels get two or more copies
    assert unet_widths(wide.state_dict()) == (7, 11, 29)
    images = torch.randn(6, 1, 32, 32)
    getattr(narrow, mode)(), getattr(wide, mode)()  # train mode: every BatchNorm uses the batch's statistics
    with torch.no_grad():
        torch.testing.assert_close(wide(images), narrow(images), atol=2e-5, rtol=0)


def test_noise_sets_the_copies_apart_and_keeps_the_function_close() -> None:
    narrow = trained_looking_unet((4, 8, 16)).eval()
    wide = widen_unet(narrow, (6, 12, 24), noise=0.01).eval()
    first = wide.encoders[0][0].weight
    # the first four filters are the originals; each copy differs from every original by its noise only
    torch.testing.assert_close(first[:4], narrow.encoders[0][0].weight)
    nearest = torch.cdist(first[4:].flatten(1), first[:4].flatten(1)).min(dim=1).values
    assert (nearest > 0).all() and (nearest < 0.1 * first[:4].flatten(1).norm(dim=1).min()).all()
    images = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        difference = (wide(images).softmax(1) - narrow(images).softmax(1)).abs().max()
    assert 0 < difference < 0.05


def test_narrowing_another_depth_or_other_blocks_are_refused() -> None:
    state = trained_looking_unet((4, 8, 16)).state_dict()
    with pytest.raises(ValueError, match="narrow"):
        widen_unet_state(state, (4, 6, 16))
    with pytest.raises(ValueError, match="levels"):
        widen_unet_state(state, (8, 16))
    other_blocks = {key: value for key, value in state.items() if ".3." not in key and ".4." not in key}
    with pytest.raises(ValueError, match="ConvBlock"):  # e.g. the benchmark's residual blocks
        widen_unet_state(other_blocks, (6, 12, 24))


def test_command_widens_the_fine_stage_of_a_shipped_file_into_a_run_folder(tmp_path: Path) -> None:
    cascade = LandmarkCascade(trained_looking_unet((4, 8)), trained_looking_unet((4, 8, 16), seed=1)).eval()
    model = export_cascade(cascade, "small", "sax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.5, tmp_path,
                           embed_training_state=True)
    assert main([str(model), "--widths-fine", "6,12,24", "--noise", "0", "--out", str(tmp_path / "run")]) == 0
    coarse, fine = (load_stage_weights(tmp_path / "run", stage) for stage in ("coarse", "fine"))
    assert unet_widths(coarse) == (4, 8) and unet_widths(fine) == (6, 12, 24)
    # what training's --init-from builds from the folder computes what the shipped file does
    wide = UNet(3, unet_widths(fine))
    wide.load_state_dict(fine)
    images = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(wide.eval()(images).softmax(1), torch.jit.load(str(model)).fine_probabilities(
            images), atol=2e-3, rtol=0)  # the embedded training state is fp16
