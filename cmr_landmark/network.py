"""Small U-Nets that output per-pixel softmax over background + landmarks, and the two-stage cascade.

Sized for a 2-core CPU: the fine stage sees a 96-128 px crop, the coarse stage a 64 px whole image; both use
the same U-Net shape. BatchNorm folds into the convolutions when frozen for inference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import DEFAULT_WIDTHS


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions with BatchNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net returning logits (N, n_landmarks + 1, H, W); H and W must be divisible by 2**(len(widths)-1).

    ``block(in_channels, out_channels)`` builds each level (default two plain convolutions; the benchmark's
    reference network passes residual blocks).
    """

    def __init__(self, n_landmarks: int, widths: tuple[int, ...] = DEFAULT_WIDTHS, in_channels: int = 1,
                 block: Callable[[int, int], nn.Module] = ConvBlock) -> None:
        super().__init__()
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoders.append(block(channels, width))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.decoders.append(block(2 * width, width))
            channels = width
        self.head = nn.Conv2d(channels, n_landmarks + 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        skips.pop()
        for upsample, decoder in zip(self.upsamplers, self.decoders):  # noqa: B905 (TorchScript has no strict=)
            x = upsample(x)
            x = decoder(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


class LandmarkCascade(nn.Module):
    """The shipped model: a coarse U-Net (whole image, heart finding) and a fine U-Net (crop, precise points).

    Both exported methods take normalised grid images (N, 1, H, W) and return softmax probabilities
    (N, K+1, H, W), background first.
    """

    def __init__(self, coarse: UNet, fine: UNet) -> None:
        super().__init__()
        self.coarse = coarse
        self.fine = fine

    @torch.jit.export
    def coarse_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.coarse(x).float(), dim=1)

    @torch.jit.export
    def fine_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fine(x).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fine_probabilities(x)


def unet_widths(state_dict: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The channels per level of the :class:`UNet` a state_dict came from (so fine-tuning builds the same net)."""
    widths = []
    while (key := f"encoders.{len(widths)}.0.weight") in state_dict:
        widths.append(int(state_dict[key].shape[0]))
    if not widths:
        raise ValueError("not a UNet state_dict: no encoders.0.0.weight")
    return tuple(widths)


class LandmarkEnsemble(nn.Module):
    """Several cascades answering as one: each stage's probabilities are the mean of the members' (each member a
    :class:`LandmarkCascade`, scripted or not, with the same landmarks). It scripts and freezes as one model and the
    ``Detector`` runs it like a cascade. Measured for the long-axis reruns (scripts/lax_ensemble_experiment.py):
    it did not help there, because the runs share their error on the real subject (docs/lax.md).
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    @torch.jit.export
    def coarse_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self._mean_probabilities(x, coarse=True)

    @torch.jit.export
    def fine_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self._mean_probabilities(x, coarse=False)

    def _mean_probabilities(self, x: torch.Tensor, coarse: bool) -> torch.Tensor:
        total = torch.zeros(0)
        for i, member in enumerate(self.members):  # TorchScript unrolls a loop over a ModuleList
            probabilities = member.coarse_probabilities(x) if coarse else member.fine_probabilities(x)
            total = probabilities if i == 0 else total + probabilities
        return total / len(self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fine_probabilities(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
