"""A reference network of the size Xue et al. (Radiology: AI 2021) ran, for timing comparisons only.

The authors' landmark model is a U-Net with residual blocks (about 2.5 M parameters) applied to the whole image
resampled to 1 mm on a 352 x 352 grid, in fp32, with the landmark taken at the argmax of each heatmap. This is a
network of that shape and size (random weights: timing does not depend on them); it is not their trained model.
"""

from __future__ import annotations

import torch
from torch import nn

from cmr_landmark.network import UNet

REFERENCE_GRID_MM = 1.0
REFERENCE_GRID_PX = 352
REFERENCE_WIDTHS: tuple[int, ...] = (36, 72, 144, 288)  # 2.5 M parameters


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a (1x1 when the width changes) shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = (nn.Identity() if in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ReferenceResUNet(nn.Module):
    """Residual U-Net returning softmax heatmaps (N, n_landmarks + 1, H, W), background first.

    Our U-Net's wiring (:class:`cmr_landmark.network.UNet`) with residual blocks at the authors' widths.
    """

    def __init__(self, n_landmarks: int = 3, widths: tuple[int, ...] = REFERENCE_WIDTHS) -> None:
        super().__init__()
        self.unet = UNet(n_landmarks, widths, block=ResidualBlock)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.unet(x), dim=1)


def argmax_points(probabilities: torch.Tensor) -> torch.Tensor:
    """(N, K, 2) grid (row, col) of each landmark channel's maximum, the authors' decoding (no sub-pixel step)."""
    landmark_maps = probabilities[:, 1:]
    n, k, _, w = landmark_maps.shape
    index = landmark_maps.reshape(n, k, -1).argmax(dim=2)
    return torch.stack([index // w, index % w], dim=2)
