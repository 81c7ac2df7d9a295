"""How a short-axis image is stored, seen from its anatomy: which of the 8 orientations brings it to the standard display.

The landmark models were trained on the standard short-axis display (anterior up, RV on the viewer's left;
docs/data.md) and lose the RV insertion points when an image is turned far from it (docs/gadget.md,
"Orientation"). DICOM and ISMRMRD headers say how the pixel matrix lies in the patient
(``geometry.standard_short_axis_orientation``); the public sets' NIfTI files are recognised by name
(``datasets.public_set_of_file``). Any other NIfTI has nothing trustworthy to say: the public sets' own affines
disagree with their anatomy (docs/orientation.md). The anatomy does say it: the chest wall is anterior, the spine
posterior, the RV to the patient's right of the LV. A small classifier reads that from the whole field of view.

The landmark models' own confidence cannot: they are as sure of themselves on a turned image as on the standard
display (docs/orientation.md), so the orientation is a separate, cheap network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import ORIENTATION_GRID, models_dir
from .geometry import ORIENTATIONS
from .preprocess import grid_transform, normalise_stack, resample_stack

ORIENTATION_MODEL_FILE = "sax_orientation.pt"


def inverse_orientation(quarter_turns: int, mirror: bool) -> tuple[int, bool]:
    """The (quarter_turns, mirror) that undoes ``geometry.orient_image(image, quarter_turns, mirror)``: a mirrored
    orientation is a reflection and undoes itself; a plain turn is undone by the opposite turn."""
    return (quarter_turns % 4, True) if mirror else ((-quarter_turns) % 4, False)


class OrientationNet(nn.Module):
    """Four conv-BN-ReLU stages with stride-2 pooling on the whole 64 px field of view, then a linear layer over the
    globally pooled features: logits of the 8 ``geometry.ORIENTATIONS`` that would bring the input to the
    standard display."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.classify = nn.Linear(channels, len(ORIENTATIONS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images).mean(dim=(2, 3)))


def orientation_inputs(images: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """(N, H, W) stored images -> (N, 1, S, S) network inputs: magnitude, normalised, the whole field of view around
    the image centre resampled to ``config.ORIENTATION_GRID`` (as training does, without its jitter)."""
    images = np.asarray(images)
    transform = grid_transform(images.shape[-2:], pixel_spacing_mm, ORIENTATION_GRID)
    return resample_stack(normalise_stack(images), [transform] * len(images))[:, np.newaxis]


@dataclass(frozen=True)
class OrientationEstimate:
    """The orientation (``geometry.orient_image`` arguments) that brings a stack to the standard display, and the
    classifier's mean probability for it over the stack's images."""

    quarter_turns: int
    mirror: bool
    probability: float


def estimate_display_orientation(classifier: torch.jit.ScriptModule | nn.Module, images: np.ndarray,
                                 pixel_spacing_mm: tuple[float, float]) -> OrientationEstimate:
    """One orientation for all images of a stack (N, H, W), all stored alike: the class with the highest summed log
    probability over the images, so slices outside the heart, where the anatomy says little, weigh little."""
    inputs = torch.from_numpy(np.ascontiguousarray(orientation_inputs(images, pixel_spacing_mm), dtype=np.float32))
    with torch.inference_mode():
        log_probabilities = torch.log_softmax(classifier(inputs).float(), dim=1)
    best = int(log_probabilities.sum(dim=0).argmax())
    quarter_turns, mirror = ORIENTATIONS[best]
    return OrientationEstimate(quarter_turns, mirror, float(log_probabilities[:, best].exp().mean()))


def load_orientation_classifier(path: Path | None = None) -> torch.jit.ScriptModule:
    """The shipped classifier (``models/sax_orientation.pt``, TorchScript, CPU)."""
    path = Path(path) if path is not None else models_dir() / ORIENTATION_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no orientation classifier at {path}")
    return torch.jit.load(str(path), map_location="cpu").eval()
