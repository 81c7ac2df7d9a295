"""How a short-axis image is stored, read from its anatomy: where the RV lies from the LV, and whether the image is
mirrored; and from that, the quarter turn and mirror that show it to a landmark model as it was trained.

DICOM and ISMRMRD headers say how the pixel matrix lies in the patient (``geometry.standard_short_axis_orientation``)
and the public sets' NIfTI files are recognised by name (``datasets.public_set_of_file``). Any other NIfTI has
nothing trustworthy to say: the public sets' own affines disagree with their anatomy (docs/orientation.md). The
anatomy does say it, and a small network reads it from the whole field of view.

Not a choice among 8 fixed orientations: the sets do not agree on one display. From the LV centre, the midpoint of
the two RV insertion points lies at 103 degrees (counter-clockwise from the viewer's right; circular mean) on ACDC's
training slices, with patients' medians from 23 to 144, and at 194-198 degrees on MyoPS and MS-CMRSeg; a classifier of 8
orientations trained on the sets' own displays got 76 % of validation images right and could not get better
(docs/orientation.md). So the network estimates that direction as a continuous angle, and ``cmr-landmark detect``
shows each landmark model a NIfTI of no known orientation at the quarter turn that brings it nearest the direction
the model saw most in training (manifest ``display_rv_direction_deg``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import DEFAULT_WIDTHS, ORIENTATION_GRID
from .geometry import ORIENTATIONS, angle_between_deg, circular_mean_deg, midpoint_direction_deg, shown_direction_deg
from .preprocess import grid_transform, normalise_stack, resample_stack


def rv_direction_deg(points_rc: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> float:
    """The direction (degrees, counter-clockwise from the viewer's right, so 90 is up) from the LV centre to the
    midpoint of the RV insertion points; ``points_rc`` (3, 2) rows A-RVI, P-RVI, C-LV in pixels. NaN if one is."""
    return midpoint_direction_deg(points_rc, pixel_spacing_mm)


def mean_rv_direction_deg(slices: Sequence) -> float:
    """The circular mean of :func:`rv_direction_deg` over the short-axis slices (``datasets.Slice``: not imported,
    so that the gadget's modules never load the training caches' reader) with all three landmarks:
    a model's ``display_rv_direction_deg`` from its training slices."""
    directions = [rv_direction_deg(s.landmarks_rc, s.pixel_spacing_mm) for s in slices
                  if s.view == "sax" and s.has_all_landmarks]
    if not directions:
        raise ValueError("no short-axis slice with all three landmarks")
    return circular_mean_deg(directions)


class OrientationNet(nn.Module):
    """Four conv-BN-ReLU stages with stride-2 pooling on the whole 64 px field of view, globally pooled, then three
    outputs: the RV direction as (cos, sin) (short where the slice shows no RV, so a stack's sum weighs the slices
    that do) and a logit that the image is the mirror image of the standard display."""

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in widths:
            for inputs in (channels, width):
                layers += [nn.Conv2d(inputs, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))


class OrientationAveraged(nn.Module):
    """``network``'s answer averaged over the 8 ways the same image can be stored (``geometry.ORIENTATIONS``): each
    input is also shown turned and mirrored, each answer mapped back to the input as given, and the 8 averaged. So
    the estimate does not depend on how a file happens to be stored (group averaging; docs/orientation.md, arm 3)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        summed = torch.zeros(images.shape[0], 3)
        for quarter_turns, mirror in ORIENTATIONS:
            shown = torch.rot90(images, quarter_turns, dims=(2, 3))  # as geometry.orient_image: np.rot90, then
            outputs = self.network(shown.flip(3) if mirror else shown).float()  # a left-right mirror
            angle, length = torch.atan2(outputs[:, 1], outputs[:, 0]), torch.hypot(outputs[:, 0], outputs[:, 1])
            if mirror:  # a mirror took a direction a to 180 - a, and the image is not what it was shown as
                angle, outputs[:, 2] = torch.pi - angle, -outputs[:, 2]
            angle = angle - quarter_turns * torch.pi / 2
            summed += torch.stack([length * torch.cos(angle), length * torch.sin(angle), outputs[:, 2]], dim=1)
        return summed / len(ORIENTATIONS)


def orientation_inputs(images: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """(N, H, W) stored images -> (N, 1, S, S) network inputs: magnitude, normalised, the whole field of view around
    the image centre resampled to ``config.ORIENTATION_GRID`` (as training does, without its jitter)."""
    images = np.asarray(images)
    transform = grid_transform(images.shape[-2:], pixel_spacing_mm, ORIENTATION_GRID)
    return resample_stack(normalise_stack(images), [transform] * len(images))[:, np.newaxis]


@dataclass(frozen=True)
class StoredOrientation:
    """What the anatomy of a stack says about how it is stored."""

    rv_direction_deg: float  # in the stored images, as :func:`rv_direction_deg` measures it
    mirrored: bool  # the stored images are the mirror image of the standard display
    certainty: float  # length of the mean (cos, sin), 0-1: short where images disagree or the network is unsure


def estimate_stored_orientation(network: torch.jit.ScriptModule | nn.Module, images: np.ndarray,
                                pixel_spacing_mm: tuple[float, float]) -> StoredOrientation:
    """One estimate for all images of a stack (N, H, W), all stored alike: the direction of the summed (cos, sin)
    outputs and the sign of the mean mirror logit."""
    inputs = torch.from_numpy(np.ascontiguousarray(orientation_inputs(images, pixel_spacing_mm), dtype=np.float32))
    with torch.inference_mode():
        outputs = network(inputs).float().numpy()
    cos, sin = outputs[:, 0].mean(), outputs[:, 1].mean()
    # the network regresses (cos, sin) without normalising them, so a sure one can overshoot the unit circle a little
    return StoredOrientation(float(np.degrees(np.arctan2(sin, cos)) % 360.0), bool(outputs[:, 2].mean() > 0),
                             min(1.0, float(np.hypot(cos, sin))))


def display_orientation(stored: StoredOrientation, target_rv_direction_deg: float) -> tuple[int, bool]:
    """The ``geometry.orient_image`` (quarter_turns, mirror) that undoes a mirror and turns the RV direction
    nearest ``target_rv_direction_deg`` (a landmark model's ``display_rv_direction_deg``)."""
    candidates = [(turns, mirror) for turns, mirror in ORIENTATIONS if mirror == stored.mirrored]
    return min(candidates, key=lambda orientation: angle_between_deg(
        shown_direction_deg(stored.rv_direction_deg, *orientation), target_rv_direction_deg))
