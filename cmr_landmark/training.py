"""Training of the two-stage landmark cascade, top to bottom.

    slices -> HeatmapDataset (normalise once, augment, resample to the stage grid, render Gaussian targets)
           -> UNet logits -> loss = KL(target || softmax) + soft Dice over landmark channels (Xue et al. 2021)
           -> Adam, ReduceLROnPlateau on the validation distance -> best checkpoint by mean distance in mm

The coarse stage sees the whole image on COARSE_GRID around the image centre; the fine stage sees a
FINE_GRID crop around the landmarks' mean (what the detector centres on: the weighted mean of the coarse
landmarks) moved by up to +-12 mm, so it learns to correct coarse errors. Validation runs the real decode path
(decode_heatmaps, and for the fine stage the exported cascade through Detector).

Knowledge distillation (``teachers``): DistillationDataset also gives each item's teacher its view of the same
anatomy, and the target becomes a mix of the label heatmaps and the teacher's softmax maps (distilled_targets).

Python API (stable; other modules train on synthetic slices with it):

    train_cascade(train_slices, val_slices, view, out_dir, epochs_coarse, epochs_fine, init_from=None, lr=1e-3,
                  threads=1, resume=True, batch_size=24, seed=0) -> (LandmarkCascade, validation metrics dict)

Runs under torchrun (DDP, gloo on CPU / nccl on GPU, DistributedSampler); rank 0 validates and checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from .augment import (
    AffineParameters,
    RandomAffine,
    SmoothDeformation,
    default_intensity_augmentation,
    sample_on_grid,
    warp_image,
    warp_points,
)
from .config import (
    COARSE_GRID,
    DEFAULT_WIDTHS,
    FINE_CENTROID_RADIUS_MM,
    FINE_GRID_BY_VIEW,
    LANDMARKS_BY_VIEW,
    MODEL_SEQUENCES,
    StageGrid,
)
from .detector import bf16_faster_on_cpu
from .export import load_training_state
from .geometry import distances_mm
from .heatmaps import centres_of_mass, decode_heatmaps, render_heatmaps, window_centroids
from .network import LandmarkCascade, UNet, unet_widths
from .output_paths import write_json_atomically, written_beside
from .preprocess import grid_transform, normalise_intensity, to_magnitude
from .synth.contrast import with_random_contrast

STAGES = ("coarse", "fine")
KEPT_AS_GIVEN = -1  # the "best epoch" of a stage given 0 epochs: its starting weights, not trained here
FINE_JITTER_MM = 12.0  # the coarse stage's errors the fine stage must absorb (coarse grid is 4 mm)
DEFAULT_MAX_ROTATION_DEG = 30.0  # augmentation: rotations within +- this
FRESH_IMAGE_STREAM = 1  # HeatmapDataset.item_image's generator: (seed, epoch, index, this)
PAIRED_VIEW_STREAM = 2  # the intensity augmentation of a consistency pair's second view: (seed, epoch, index, this)
DEFORMATION_STREAM = 3  # HeatmapDataset.item_displacement's generator: (seed, epoch, index, this)


class LabelledSlice(Protocol):
    """What training needs of a slice (cmr_landmark.datasets.Slice and synthetic slices both fit)."""

    image: np.ndarray  # (H, W) in standard orientation
    pixel_spacing_mm: tuple[float, float]  # (row, col)
    landmarks_rc: np.ndarray  # (3, 2) image pixels, NaN rows absent


@dataclasses.dataclass(frozen=True)
class FreshImages:
    """A share of the training items given a new synthetic image every epoch (SynthSeg's domain randomisation: a
    fixed set of synthetic copies is a finite set of contrasts a long run can learn).

    ``synthesise(slice, rng) -> slice`` draws the new image from the slice's tissue mask and keeps its landmarks:
    :func:`synth.contrast.with_random_contrast` (random per-tissue contrast) or :func:`synth.t1.synthetic_t1_slice`
    (a MOLLI T1 map in ms). ``fraction``: the share of the items, drawn afresh every epoch.
    """

    synthesise: Callable[[LabelledSlice, np.random.Generator], LabelledSlice]
    fraction: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"the fresh images' fraction is a share, 0..1, got {self.fraction!r}")


def stage_grid(stage: str, view: str) -> StageGrid:
    return COARSE_GRID if stage == "coarse" else FINE_GRID_BY_VIEW[view]


def crop_centre_rc(landmarks_rc: np.ndarray) -> np.ndarray | None:
    """Mean of the present landmarks: where the detector centres the fine crop (weighted mean of coarse points)."""
    present = np.all(np.isfinite(landmarks_rc), axis=1)
    return landmarks_rc[present].mean(axis=0) if np.any(present) else None


# --- data -------------------------------------------------------------------------------------------------------


class HeatmapDataset(torch.utils.data.Dataset):
    """(grid image (1, S, S), heatmap target (K+1, S, S)) pairs of one stage, augmented when ``augment``.

    Images are magnitude-normalised once at construction (the preprocessed sample cache); each item draws its
    augmentation from a generator seeded by (seed, epoch, index), so an epoch is reproducible on any rank and
    after a resume.

    ``fresh_images`` (with ``augment``): that share of the items, drawn afresh every epoch, get a new synthetic
    image from their slice's mask (:class:`FreshImages`) before the augmentation, so that no contrast is seen
    twice. Slices without a mask stay as they are. ``random_convolution_fraction`` (with ``augment``): that share
    of the items also goes through :class:`augment.RandomConvolutions`. ``max_rotation_deg``: each item is turned
    by a uniform angle within +- that (180: any orientation; docs/lax.md, "The real frames at every orientation").
    ``deformation_fraction`` (with ``augment``): that share of the items, drawn afresh every epoch, is also warped
    by a :class:`augment.SmoothDeformation` after the affine (both views of a pair alike; docs/t1.md, arm EL).

    ``consistency_pairs`` (with ``augment``): items are (image, target, second image). The first is the slice's own
    image, never a fresh one, augmented as the plain item is; the second is the image the item would have without
    pairs (a fresh synthetic one for ``fresh_images.fraction`` of them) through the same geometry, with intensity
    augmentation drawn apart, so that :func:`consistency_loss` can ask the two for the same maps (AugMix's
    consistency, Hendrycks et al. 2020).
    """

    def __init__(self, slices: Sequence[LabelledSlice], view: str, stage: str, augment: bool, seed: int = 0,
                 fresh_images: FreshImages | None = None, random_convolution_fraction: float = 0.0,
                 max_rotation_deg: float = DEFAULT_MAX_ROTATION_DEG, consistency_pairs: bool = False,
                 deformation_fraction: float = 0.0) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.view, self.stage, self.augment, self.seed = view, stage, augment, seed
        self.grid = stage_grid(stage, view)
        self.slices = list(slices)  # the sources of the fresh images
        self.images = [normalise_intensity(to_magnitude(s.image)) for s in slices]
        self.fresh_images = fresh_images if augment and fresh_images and fresh_images.fraction else None
        self.spacings = [tuple(float(v) for v in s.pixel_spacing_mm) for s in slices]
        self.landmarks = [np.asarray(s.landmarks_rc, dtype=np.float64) for s in slices]
        for landmarks in self.landmarks:
            if landmarks.shape != (len(LANDMARKS_BY_VIEW[view]), 2):
                raise ValueError(f"landmarks_rc must be ({len(LANDMARKS_BY_VIEW[view])}, 2), got {landmarks.shape}")
        if not 0 <= max_rotation_deg <= 180:
            raise ValueError(f"max_rotation_deg must be within 0-180, got {max_rotation_deg!r}")
        if not 0 <= deformation_fraction <= 1:
            raise ValueError(f"deformation_fraction is a share, 0..1, got {deformation_fraction!r}")
        self.deformation_fraction = deformation_fraction if augment else 0.0
        if stage == "coarse":
            self.geometry = RandomAffine(max_rotation_deg, scale_range=(0.8, 1.25), max_translation_mm=30)
        else:
            self.geometry = RandomAffine(max_rotation_deg, scale_range=(0.85, 1.2), max_translation_mm=FINE_JITTER_MM)
        self.intensity = default_intensity_augmentation(random_convolution_fraction)
        if consistency_pairs and not augment:
            raise ValueError("consistency pairs are two augmented views of an item: they need augment")
        self.consistency_pairs = consistency_pairs
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def centre_rc(self, index: int, rng: np.random.Generator | None) -> tuple[float, float] | None:
        """Sampling centre before jitter: image centre (coarse), landmark mean (fine; random if none)."""
        if self.stage == "coarse":
            return None
        centre = crop_centre_rc(self.landmarks[index])
        if centre is not None:
            return tuple(centre)
        shape = np.asarray(self.images[index].shape, dtype=np.float64)
        centre = (shape - 1) / 2.0
        if rng is not None:  # a slice outside the heart: show the fine stage any central part of it
            centre = centre + rng.uniform(-0.25, 0.25, 2) * shape
        return tuple(centre)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if not self.consistency_pairs:
            image, target, _, _ = self.augmented_item(index)
            return image, target
        image, target, affine, centre = self.augmented_item(index, self.images[index])
        second, _ = self.on_grid(self.item_image(index), index, centre, affine)
        rng = np.random.default_rng([self.seed, self.epoch, index, PAIRED_VIEW_STREAM])
        second = self.intensity(second, rng, self.grid.pixel_mm / affine.scale)
        return image, target, torch.from_numpy(second[None].copy())

    def augmented_item(self, index: int, image: np.ndarray | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, AffineParameters | None, tuple[float, float] | None]:
        """(image, target) of item ``index`` and the geometry they were drawn with (affine, sampling centre);
        ``image``: one in the item's pixels instead of :meth:`item_image`."""
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment else None
        affine = self.geometry(rng) if rng is not None else None
        centre = self.centre_rc(index, rng)
        image, points = self.on_grid(self.item_image(index) if image is None else image, index, centre, affine)
        if rng is not None:
            image = self.intensity(image, rng, self.grid.pixel_mm / affine.scale)
        target = render_heatmaps(points, self.grid.size_px, self.grid.sigma_px)
        return torch.from_numpy(image[None].copy()), torch.from_numpy(target), affine, centre

    def item_image(self, index: int) -> np.ndarray:
        """Item ``index``'s normalised image this epoch: the slice's own, or a fresh synthetic one."""
        if self.fresh_images is None or getattr(self.slices[index], "mask", None) is None:
            return self.images[index]
        # a generator of its own, so the geometry and intensity augmentation are those of the plain item
        rng = np.random.default_rng([self.seed, self.epoch, index, FRESH_IMAGE_STREAM])
        if rng.random() >= self.fresh_images.fraction:
            return self.images[index]
        return normalise_intensity(to_magnitude(self.fresh_images.synthesise(self.slices[index], rng).image))

    def on_grid(self, image: np.ndarray, index: int, centre_rc: tuple[float, float] | None,
                affine: AffineParameters | None) -> tuple[np.ndarray, np.ndarray]:
        """``image`` (item ``index``'s, or one in its pixels) and the item's landmarks sampled on the stage grid,
        warped by the item's displacement this epoch where it has one."""
        grid_image, points, _ = sample_on_grid(image, self.spacings[index], self.landmarks[index], self.grid,
                                               self.view, centre_rc=centre_rc, affine=affine)
        displacement = self.item_displacement(index)
        if displacement is None:
            return grid_image, points
        return warp_image(grid_image, displacement), warp_points(points, displacement)

    def item_displacement(self, index: int) -> np.ndarray | None:
        """Item ``index``'s warp this epoch (grid pixels), or None; the same on every call, so that a pair's two
        views and a teacher's image are warped alike."""
        if not self.deformation_fraction:  # nothing to draw (the warp's generator is its own stream either way)
            return None
        rng = np.random.default_rng([self.seed, self.epoch, index, DEFORMATION_STREAM])
        if rng.random() >= self.deformation_fraction:
            return None
        return SmoothDeformation().displacement_px((self.grid.size_px, self.grid.size_px), self.grid.pixel_mm, rng)


class DistillationDataset(HeatmapDataset):
    """Augmented items that also carry what a teacher model sees (knowledge distillation, docs/t1.md).

    Items are (image, target, teacher image, teacher index). The teacher image is the slice's ``source_image`` (the
    real image a random-contrast copy was made from; the slice's own image for a real slice) through the same
    geometry and without the intensity augmentation; the teacher is the one for the slice's ``sequence``
    (``teacher_sequences`` order), so a copy of an LGE slice is judged by the LGE model on the real LGE image.
    """

    def __init__(self, slices: Sequence[LabelledSlice], view: str, stage: str, seed: int,
                 teacher_sequences: Sequence[str], max_rotation_deg: float = DEFAULT_MAX_ROTATION_DEG,
                 deformation_fraction: float = 0.0) -> None:
        super().__init__(slices, view, stage, augment=True, seed=seed, max_rotation_deg=max_rotation_deg,
                         deformation_fraction=deformation_fraction)
        missing = sorted({s.sequence for s in slices} - set(teacher_sequences))
        if missing:
            raise ValueError(f"no teacher for the {missing} slices (teachers: {list(teacher_sequences)})")
        self.teacher_index = [list(teacher_sequences).index(s.sequence) for s in slices]
        # A copy's source is usually a real slice of the same set, already normalised above: share that array.
        normalised = {id(s.image): own for s, own in zip(slices, self.images, strict=True)}
        self.teacher_images = []
        for s, own in zip(slices, self.images, strict=True):
            source = getattr(s, "source_image", None)
            if source is None:
                image = own
            elif id(source) in normalised:
                image = normalised[id(source)]
            else:
                image = normalise_intensity(to_magnitude(source))
            self.teacher_images.append(image)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image, target, affine, centre = self.augmented_item(index)
        teacher_image, _ = self.on_grid(self.teacher_images[index], index, centre, affine)
        return image, target, torch.from_numpy(teacher_image[None].copy()), torch.tensor(self.teacher_index[index])


def distilled_targets(targets: torch.Tensor, teacher_images: torch.Tensor, teacher_index: torch.Tensor,
                      teachers: Sequence[nn.Module], stage: str, weight: float) -> torch.Tensor:
    """``(1 - weight) * targets + weight * teacher probabilities`` (both (N, K+1, S, S) distributions per pixel);
    item i is judged by ``teachers[teacher_index[i]]``, a shipped cascade, on ``teacher_images[i]``."""
    soft = targets.clone()
    with torch.no_grad():  # not inference_mode: the targets are saved for the backward pass
        for index, teacher in enumerate(teachers):
            chosen = teacher_index == index
            if chosen.any():
                inputs = teacher_images[chosen].to(targets.device)
                probabilities = (teacher.coarse_probabilities(inputs) if stage == "coarse"
                                 else teacher.fine_probabilities(inputs))
                soft[chosen] = probabilities.float()
    return (1.0 - weight) * targets + weight * soft


# --- loss ------------------------------------------------------------------------------------------------------


def heatmap_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel KL divergence of the softmax from the target distribution, plus soft Dice of landmark channels.

    Dice of a channel whose landmark is absent is 1 - 1/(1 + sum of its probabilities): it pushes the map to 0.
    """
    log_probabilities = torch.log_softmax(logits.float(), dim=1)
    kl = (target * (torch.log(target.clamp_min(1e-8)) - log_probabilities)).sum(dim=1).mean()
    probabilities = log_probabilities.exp()[:, 1:]
    landmark_target = target[:, 1:]
    overlap = (probabilities * landmark_target).sum(dim=(2, 3))
    dice = (2 * overlap + 1) / (probabilities.sum(dim=(2, 3)) + landmark_target.sum(dim=(2, 3)) + 1)
    return kl + (1 - dice).mean()


def consistency_loss(logits: torch.Tensor, paired_logits: torch.Tensor, toward_first: bool = False) -> torch.Tensor:
    """Per-pixel divergence between the softmax maps of two views of the same items, averaged over the pixels as
    :func:`heatmap_loss` averages its KL divergence: 0 when the two views give the same maps.

    Jensen-Shannon, which pulls each view toward the other; with ``toward_first`` the KL divergence of the second
    view's maps from the first's, held fixed (no gradient through ``logits``), which pulls only the second view: the
    real image's sharp maps teach the synthetic contrast's, and are not softened toward them (docs/t1.md, arm E).
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    log_q = torch.log_softmax(paired_logits.float(), dim=1)
    if toward_first:
        log_p = log_p.detach()
        return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    log_mean = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2.0)
    kl_p = (log_p.exp() * (log_p - log_mean)).sum(dim=1)
    kl_q = (log_q.exp() * (log_q - log_mean)).sum(dim=1)
    return (0.5 * (kl_p + kl_q)).mean()


def consistency_options_problem(weight: float, toward_real: bool) -> str | None:
    """What is wrong with the command-line options ``--consistency-weight`` / ``--consistency-toward-real``, or None
    (``cmr-landmark train`` and scripts/train_sax_synthetic.py check them before loading any data)."""
    if not (math.isfinite(weight) and weight >= 0):
        return "--consistency-weight is a weight, a finite number >= 0"
    if toward_real and not weight:
        return "--consistency-toward-real says how the --consistency-weight term pulls: give both"
    return None


def uses_bf16(device: torch.device) -> bool:
    """Whether training on ``device`` runs in bf16 autocast: GPUs, and CPUs where it is measured faster than fp32
    (:func:`detector.bf16_faster_on_cpu`); fp32 elsewhere."""
    return device.type == "cuda" or bf16_faster_on_cpu()


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast where :func:`uses_bf16`, else fp32."""
    if uses_bf16(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- validation through the real decode path -------------------------------------------------------------------


def coarse_predictions(model: nn.Module, slices: Sequence[LabelledSlice], device: torch.device) -> np.ndarray:
    """Coarse-stage landmark estimates (N, K, 2) in image pixels: the detector's coarse pass on ``model``."""
    dataset = HeatmapDataset(slices, view_of(slices), "coarse", augment=False)
    model.eval()
    points = []
    with torch.inference_mode(), autocast_context(device):
        for start in range(0, len(dataset), 64):
            items = [dataset[i] for i in range(start, min(start + 64, len(dataset)))]
            x = torch.stack([image for image, _ in items]).to(device)
            grid_points, _ = decode_heatmaps(torch.softmax(model(x).float(), dim=1).cpu())
            for offset, grid_rc in enumerate(grid_points):
                index = start + offset
                # the transform dataset[index] sampled with (no augmentation: the image centre, unturned)
                transform = grid_transform(dataset.images[index].shape, dataset.spacings[index], dataset.grid)
                points.append(transform.grid_to_image(grid_rc))
    return np.stack(points) if points else np.zeros((0, len(LANDMARKS_BY_VIEW[dataset.view]), 2))


NO_VALIDATION_LANDMARK = "the validation slices need at least one labelled landmark to choose the best epoch by"


def has_labelled_landmark(slices: Sequence[LabelledSlice]) -> bool:
    """Whether any slice has a labelled landmark: the best epoch is the one with the least validation distance,
    which without one is NaN and never improves."""
    return any(np.isfinite(np.asarray(s.landmarks_rc, dtype=np.float64)).all(axis=-1).any() for s in slices)


def view_of(slices: Sequence[LabelledSlice]) -> str:
    views = {getattr(s, "view", None) for s in slices}
    if len(views) != 1 or None in views:
        raise ValueError(f"slices must all carry one view attribute, got {views}")
    return views.pop()


def mean_distance_mm(predicted_rc: np.ndarray, slices: Sequence[LabelledSlice]) -> tuple[float, list[float]]:
    """Mean distance over all labelled landmarks (threshold ignored: model selection by localisation alone)."""
    truth = np.stack([np.asarray(s.landmarks_rc, dtype=np.float64) for s in slices])
    spacing = np.stack([np.asarray(s.pixel_spacing_mm, dtype=np.float64) for s in slices])[:, None, :]
    errors = distances_mm(predicted_rc, truth, spacing)
    return float(np.nanmean(errors)), per_landmark_means(errors)


def per_landmark_means(errors_mm: np.ndarray) -> list[float]:
    """Mean of each column (landmark) of (slices, K) distances over its finite entries; NaN for a column with none."""
    return [float(np.nanmean(column)) if np.isfinite(column).any() else math.nan for column in errors_mm.T]


# --- distributed -----------------------------------------------------------------------------------------------


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def setup_distributed() -> torch.device:
    """Join the torchrun process group when launched by torchrun; the device this rank trains on."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def broadcast_float(value: float, device: torch.device) -> float:
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


# --- checkpoints -----------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, **state) -> None:
    """Written beside and renamed: a killed run never leaves half a checkpoint behind."""
    with written_beside(path) as partial:
        torch.save(state, partial)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())  # a checkpoint loaded onto a GPU carries it there; it lives on the CPU


def load_stage_weights(source: Path, stage: str) -> dict:
    """A stage's state_dict from a run folder (``<stage>_best.pt``), a checkpoint file, or a shipped model."""
    source = Path(source)
    if source.is_dir():
        source = source / f"{stage}_best.pt"
    if not source.is_file():
        raise FileNotFoundError(f"no {stage} stage weights at {source}")
    with zipfile.ZipFile(source) as archive:
        is_torchscript = any(name.endswith("constants.pkl") for name in archive.namelist())
    if is_torchscript:  # a shipped cascade carries its unfrozen weights for fine-tuning
        return load_training_state(source)[stage]
    return torch.load(source, map_location="cpu", weights_only=False)["model"]


# --- one stage -------------------------------------------------------------------------------------------------


def plateau_patience(epochs: int) -> int:
    """Epochs without a better validation distance before the learning rate is halved.

    A tenth of the run, at least 3: the validation distance of a few hundred slices is noisy by ~0.2 mm from epoch
    to epoch, and a fixed patience of 3 halved the rate down to 3e-5 by epoch 37 of 40 while the model still
    underfitted its training slices (docs/training.md, "Run history").
    """
    return max(3, epochs // 10)


def point_distance_loss(logits: torch.Tensor, target: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Mean distance (grid pixels) from each labelled landmark to the centre of mass of its predicted map within
    ``radius_px`` of the map's peak pixel (:func:`heatmaps.window_centroids`), the point the detector reports
    (which centres the window on the sub-pixel peak of the mirror-averaged map).

    The heatmap loss teaches the maps' shape; this term teaches where their centre of mass lies, which is what the
    evaluation measures. ``target`` must be the label heatmaps (not distilled ones): a channel's centre of mass is
    its landmark, except within ~2 sigma of the grid's edge, where the cut blob puts it up to ~2 px inward; an
    empty channel is an absent landmark and is left to the heatmap loss.
    """
    probabilities = torch.softmax(logits.float(), dim=1)[:, 1:]
    n, k, h, w = probabilities.shape
    target_rc, mass = centres_of_mass(target[:, 1:].float())
    present = mass > 1.0  # a rendered blob holds ~2 pi sigma^2 >> 1; an absent landmark's channel is empty
    if not present.any():
        return probabilities.sum() * 0.0
    with torch.no_grad():
        peak = probabilities.reshape(n, k, h * w).argmax(dim=2)
        peak_rc = torch.stack([peak // w, peak % w], dim=-1).float()
    predicted_rc = window_centroids(probabilities, peak_rc, radius_px)
    distance = torch.sqrt(((predicted_rc - target_rc) ** 2).sum(dim=-1) + 1e-6)
    return distance[present].mean()


def train_stage(
    stage: str,
    train_slices: Sequence[LabelledSlice],
    val_slices: Sequence[LabelledSlice],
    view: str,
    out_dir: Path,
    epochs: int,
    validate: Callable[[nn.Module], tuple[float, dict]],
    init_state: dict | None = None,
    lr: float = 1e-3,
    batch_size: int = 24,
    resume: bool = True,
    seed: int = 0,
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    max_steps_per_epoch: int | None = None,
    teachers: dict[str, nn.Module] | None = None,
    distil_weight: float = 0.5,
    distance_weight: float = 0.0,
    fresh_images: FreshImages | None = None,
    lr_hold_epochs: int = 0,
    random_convolution_fraction: float = 0.0,
    max_rotation_deg: float = DEFAULT_MAX_ROTATION_DEG,
    consistency_weight: float = 0.0,
    consistency_toward_real: bool = False,
    deformation_fraction: float = 0.0,
) -> tuple[UNet, dict]:
    """Train one U-Net; ``validate(model) -> (mean distance mm, metrics)`` picks the best epoch.

    The learning rate is halved when the validation stops improving (:func:`plateau_patience`), but not in the
    first ``lr_hold_epochs`` epochs: a coarse stage trained from scratch keeps diffuse maps for many epochs, and
    halving on validation distances that are noise until the maps localise slows its escape (docs/lax.md,
    "Telling the valves apart").

    ``fresh_images``: a share of the items gets a new synthetic image each epoch (:class:`HeatmapDataset`);
    ``random_convolution_fraction``: a share goes through random convolutions (:class:`augment.RandomConvolutions`);
    ``max_rotation_deg``: the augmentation's rotation range and ``deformation_fraction`` the share of items warped
    (:class:`HeatmapDataset`).

    ``consistency_weight``: every item is a pair, its own image and a second view (a fresh synthetic image for
    ``fresh_images.fraction`` of them; :class:`HeatmapDataset` ``consistency_pairs``); both learn the labels, and
    this weight times :func:`consistency_loss` asks them for the same maps (``consistency_toward_real``: the second
    view's toward the real image's, held fixed). A step then runs twice the images, and the history's
    ``train_loss`` includes the term.

    ``distance_weight`` (per mm; fine stage only) adds :func:`point_distance_loss` over the detector's centroid
    window (``config.FINE_CENTROID_RADIUS_MM``) to the heatmap loss, measured against the labels (also when
    distilling).

    With ``init_state`` the network takes that state's widths (fine-tuning keeps the architecture).
    ``teachers`` (sequence -> shipped cascade): knowledge distillation; the target of each item is
    :func:`distilled_targets` with ``distil_weight`` (:class:`DistillationDataset` pairs each item with its teacher).

    Checkpoints ``<stage>_last.pt`` every epoch and ``<stage>_best.pt`` on improvement; with ``resume`` a
    ``<stage>_last.pt`` is continued (model, optimiser, scheduler, epoch, RNG, history). Returns the best model
    (loaded on every rank) and its validation metrics.
    """
    if not (math.isfinite(distance_weight) and distance_weight >= 0):
        raise ValueError(f"distance_weight must be a finite number >= 0, got {distance_weight!r}")
    if distance_weight and stage != "fine":
        raise ValueError("the distance term is for the fine stage (the coarse stage's points are its peaks)")
    if not (math.isfinite(consistency_weight) and consistency_weight >= 0):
        raise ValueError(f"consistency_weight must be a finite number >= 0, got {consistency_weight!r}")
    if consistency_weight and teachers:
        raise ValueError("consistency pairs do not combine with distillation (the teacher sees the source image)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = setup_distributed()
    torch.manual_seed(seed)
    last_path, best_path = out_dir / f"{stage}_last.pt", out_dir / f"{stage}_best.pt"
    checkpoint = torch.load(last_path, map_location=device, weights_only=False) if resume and last_path.exists() \
        else None
    if checkpoint is not None:  # the network the run has been training, whatever widths this call was given
        widths = tuple(checkpoint["widths"])
    elif init_state is not None:
        widths = unet_widths(init_state)
    model = UNet(len(LANDMARKS_BY_VIEW[view]), widths)
    if checkpoint is None and init_state is not None:
        model.load_state_dict(init_state)
    # channels-last weights: they set the layout every layer runs in (a 1-channel input is both layouts at once)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="min", factor=0.5,
                                                           patience=plateau_patience(epochs))
    start_epoch, best_mm, history, seconds_before = 0, math.inf, [], 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        restore_rng_state(checkpoint["rng"])
        start_epoch, best_mm, history = checkpoint["epoch"] + 1, checkpoint["best_mm"], checkpoint["history"]
        seconds_before = checkpoint.get("train_seconds", 0.0)
        if is_main_process():
            print(f"[{stage}] resuming after epoch {start_epoch} (best {best_mm:.2f} mm)", flush=True)  # from 1

    if teachers:
        if (fresh_images is not None and fresh_images.fraction) or random_convolution_fraction:
            raise ValueError("distillation combines with neither fresh synthetic images nor random convolutions (the "
                             "teacher sees the source image)")
        dataset = DistillationDataset(train_slices, view, stage, seed, teacher_sequences=list(teachers),
                                      max_rotation_deg=max_rotation_deg, deformation_fraction=deformation_fraction)
        teacher_models = [teacher.to(device).eval() for teacher in teachers.values()]
    else:
        dataset = HeatmapDataset(train_slices, view, stage, augment=True, seed=seed, fresh_images=fresh_images,
                                 random_convolution_fraction=random_convolution_fraction,
                                 max_rotation_deg=max_rotation_deg, consistency_pairs=consistency_weight > 0,
                                 deformation_fraction=deformation_fraction)
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed) if dist.is_initialized() else None
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
                        generator=generator if sampler is None else None)
    steps_per_epoch = len(loader) if max_steps_per_epoch is None else min(len(loader), max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} training slices are fewer than one batch of {batch_size}")
    network = DistributedDataParallel(model) if dist.is_initialized() else model
    distance_radius_px = FINE_CENTROID_RADIUS_MM / dataset.grid.pixel_mm
    stage_start = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        dataset.set_epoch(epoch)
        generator.manual_seed(seed + epoch)  # the shuffle of an epoch does not depend on where a run resumed
        if sampler is not None:
            sampler.set_epoch(epoch)
        network.train()
        losses = []
        bar = tqdm(loader, total=steps_per_epoch, desc=f"{stage} {epoch + 1}/{epochs}", disable=not is_main_process(),
                   mininterval=20, leave=False)
        for step, (images, targets, *item_extras) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            label_targets = targets = targets.to(device)
            if teachers:
                targets = distilled_targets(targets, *item_extras, teacher_models, stage, distil_weight)
            images = images.to(device)
            if consistency_weight:  # one pass over both views: the pair shares the batch statistics
                images = torch.cat([images, item_extras[0].to(device)])
                label_targets = targets = torch.cat([targets, targets])
            with autocast_context(device):
                logits = network(images)
            loss = heatmap_loss(logits, targets)
            if distance_weight:
                loss = loss + distance_weight * dataset.grid.pixel_mm * point_distance_loss(
                    logits, label_targets, distance_radius_px)
            if consistency_weight:
                loss = loss + consistency_weight * consistency_loss(*logits.chunk(2), consistency_toward_real)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        bar.close()

        val_mm, metrics = validate(model) if is_main_process() else (math.nan, {})
        val_mm = broadcast_float(val_mm, device)
        if epoch >= lr_hold_epochs:
            scheduler.step(val_mm)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_mean_mm": val_mm,
                  "lr": optimiser.param_groups[0]["lr"], **metrics}
        history.append(record)
        improved = val_mm < best_mm
        best_mm = min(best_mm, val_mm)
        if is_main_process():
            if improved:
                save_checkpoint(best_path, model=model.state_dict(), epoch=epoch, val_mean_mm=val_mm, metrics=metrics,
                                widths=list(widths), view=view, stage=stage)
            elapsed = time.perf_counter() - stage_start
            save_checkpoint(last_path, model=model.state_dict(), optimiser=optimiser.state_dict(),
                            scheduler=scheduler.state_dict(), rng=rng_state(), epoch=epoch, best_mm=best_mm,
                            history=history, widths=list(widths), train_seconds=seconds_before + elapsed)
            done = epoch + 1 - start_epoch
            eta_s = elapsed / done * (epochs - epoch - 1)
            print(f"[{stage}] epoch {epoch + 1}/{epochs} loss {record['train_loss']:.4f} val {val_mm:.2f} mm"
                  f"{' *' if improved else ''} lr {record['lr']:.1e} elapsed {elapsed:.0f} s eta {eta_s:.0f} s",
                  flush=True)
        if dist.is_initialized():
            dist.barrier()

    if epochs == 0 and not (resume and best_path.exists()):
        # A stage given no epochs keeps the weights it started from (the other stage alone is trained); whatever an
        # earlier run left in out_dir is not this stage.
        if init_state is None:
            raise ValueError(f"the {stage} stage is given 0 epochs and no weights to start from")
        if is_main_process():
            last_path.unlink(missing_ok=True)
            val_mm, metrics = validate(model)
            save_checkpoint(best_path, model=model.state_dict(), epoch=KEPT_AS_GIVEN, val_mean_mm=val_mm,
                            metrics=metrics, widths=list(widths), view=view, stage=stage)
    if dist.is_initialized():
        dist.barrier()
    if best_path.exists():
        best = torch.load(best_path, map_location=device, weights_only=False)
        model.load_state_dict(best["model"])
        seconds = (torch.load(last_path, map_location="cpu", weights_only=False).get("train_seconds", math.nan)
                   if last_path.exists() else 0.0)
        return model, {"val_mean_mm": best["val_mean_mm"], "epoch": best["epoch"], "train_seconds": seconds,
                       **best["metrics"]}
    return model, {}


# --- the cascade -----------------------------------------------------------------------------------------------


def train_cascade(
    train_slices: Sequence[LabelledSlice],
    val_slices: Sequence[LabelledSlice],
    view: str,
    out_dir: Path,
    epochs_coarse: int,
    epochs_fine: int,
    init_from: Path | None = None,
    lr: float = 1e-3,
    threads: int = 1,
    resume: bool = True,
    batch_size: int = 24,
    seed: int = 0,
    max_steps_per_epoch: int | None = None,
    widths_coarse: tuple[int, ...] = DEFAULT_WIDTHS,
    widths_fine: tuple[int, ...] = DEFAULT_WIDTHS,
    teachers: dict[str, nn.Module] | None = None,
    distil_weight: float = 0.5,
    init_coarse_from: Path | None = None,
    distance_weight: float = 0.0,
    fresh_images: FreshImages | None = None,
    consistency_weight: float = 0.0,
    consistency_toward_real: bool = False,
    deformation_fraction: float = 0.0,
) -> tuple[LandmarkCascade, dict]:
    """Train coarse then fine U-Net on labelled slices of one ``view``; validation metrics of the whole cascade.

    ``init_from``: a run folder, a stage checkpoint, or a shipped model file to start from (transfer learning).
    ``init_coarse_from``: the same for the coarse stage only (it overrides ``init_from`` there); with
    ``epochs_coarse`` 0 the coarse stage is kept as it is and only the fine stage trains (e.g. a wider fine stage
    behind a shipped coarse stage).
    ``teachers``, ``distil_weight``: knowledge distillation from shipped models (:func:`train_stage`).
    ``distance_weight``: the fine stage also learns where its maps' centre of mass lies (:func:`train_stage`).
    ``fresh_images``: a share of the items with a new synthetic image each epoch, both stages (:class:`FreshImages`).
    ``consistency_weight``, ``consistency_toward_real``: the fine stage trains on pairs of views asked for the same
    maps (:func:`train_stage`).
    ``deformation_fraction``: that share of the items warped smoothly, both stages (:class:`HeatmapDataset`).
    ``out_dir`` holds the checkpoints (each stage's history inside its ``<stage>_last.pt``); rerunning with
    ``resume`` continues where it stopped.
    """
    from .evaluation import evaluate_slices  # evaluation exports the cascade and runs Detector on it

    if not has_labelled_landmark(val_slices):
        raise ValueError(NO_VALIDATION_LANDMARK)
    torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    device = setup_distributed()

    coarse_source = init_coarse_from or init_from

    def validate_coarse(model: nn.Module) -> tuple[float, dict]:
        mean_mm, per_landmark = mean_distance_mm(coarse_predictions(model, val_slices, device), val_slices)
        return mean_mm, {"per_landmark_mm": per_landmark}

    coarse, coarse_metrics = train_stage(
        "coarse", train_slices, val_slices, view, out_dir, epochs_coarse, validate_coarse,
        init_state=load_stage_weights(coarse_source, "coarse") if coarse_source else None,
        lr=lr, batch_size=batch_size, resume=resume, seed=seed, widths=widths_coarse,
        max_steps_per_epoch=max_steps_per_epoch, teachers=teachers, distil_weight=distil_weight,
        fresh_images=fresh_images, deformation_fraction=deformation_fraction,
    )

    def validate_fine(model: nn.Module) -> tuple[float, dict]:
        cascade = LandmarkCascade(copy.deepcopy(coarse).cpu(), copy.deepcopy(model).cpu())
        evaluation = evaluate_slices(cascade, val_slices)
        per_landmark = per_landmark_means(np.where(evaluation.labelled, evaluation.distances_mm, np.nan))
        detection = {row["landmark"]: [row["detection_rate_pct"], row["false_positive_rate_pct"]]
                     for row in evaluation.landmark_rows}
        return evaluation.mean_distance_mm, {"per_landmark_mm": per_landmark, "detection_fp_pct": detection}

    fine, fine_metrics = train_stage(
        "fine", train_slices, val_slices, view, out_dir, epochs_fine, validate_fine,
        init_state=load_stage_weights(init_from, "fine") if init_from else None,
        lr=lr, batch_size=batch_size, resume=resume, seed=seed + 1, widths=widths_fine,
        max_steps_per_epoch=max_steps_per_epoch, teachers=teachers, distil_weight=distil_weight,
        distance_weight=distance_weight, fresh_images=fresh_images, consistency_weight=consistency_weight,
        consistency_toward_real=consistency_toward_real, deformation_fraction=deformation_fraction,
    )
    cascade = LandmarkCascade(coarse.cpu().float(), fine.cpu().float()).eval()
    metrics = {"coarse": coarse_metrics, "fine": fine_metrics}
    if is_main_process():
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    return cascade, metrics


def load_stage(source: Path, stage: str, view: str) -> UNet:
    """One stage's U-Net (eval mode) from a run folder, a checkpoint file or a shipped model
    (:func:`load_stage_weights`)."""
    state = load_stage_weights(source, stage)
    unet = UNet(len(LANDMARKS_BY_VIEW[view]), unet_widths(state))
    unet.load_state_dict(state)
    return unet.eval()


def load_cascade(run_dir: Path, view: str) -> LandmarkCascade:
    """The best coarse and fine U-Nets of a finished run folder."""
    return LandmarkCascade(load_stage(run_dir, "coarse", view), load_stage(run_dir, "fine", view)).eval()


# --- command line ----------------------------------------------------------------------------------------------


def load_labelled_slices(dataset_names: Sequence[str], split: str, view: str, sequence: str) -> list:
    """Labelled slices of ``view`` and ``sequence`` from the named sets' ``split`` (patient-level, splits.json)."""
    from .datasets import load_slices

    slices = []
    for name in dataset_names:
        slices.extend(s for s in load_slices(name, split) if s.view == view and s.sequence == sequence and s.labelled)
    if not slices:
        raise ValueError(f"no labelled {view} {sequence} slices in split {split!r} of {', '.join(dataset_names)}")
    return slices


def run_slices(run: dict, split: str) -> list:
    """The train or val slices a finished run (its run.json) used."""
    if run.get("via"):
        from .via import read_via_slices

        train_json, val_json, images_dir, spacing = run["via"]
        return read_via_slices(Path(train_json if split == "train" else val_json), run["view"], run["sequence"],
                               Path(images_dir) if images_dir else None, spacing)
    names = run["datasets"] if split == "train" else run["val_datasets"]
    return load_labelled_slices(names, split, run["view"], run["sequence"])


def refuse_changed_resume(parser: argparse.ArgumentParser, out: Path, recorded: dict, settings: dict) -> None:
    """Refuse (one line) a ``--resume`` whose ``settings`` differ from those the run in ``out`` was started with
    (``recorded``; keys it lacks, from an older run, are not compared): its checkpoints would carry on the old run
    while its records described the new command."""
    if changed := [f"{key} {settings[key]!r} (the run's: {recorded[key]!r})" for key in settings
                   if key in recorded and json.loads(json.dumps(settings[key])) != recorded[key]]:
        parser.error(f"--resume continues the run in {out} as it was started; these differ: {'; '.join(changed)}. "
                     "Give them as before, or another --out for a new run")


def start_widths(parser: argparse.ArgumentParser, init_from: Path | None, init_coarse_from: Path | None,
                 widths_coarse: tuple[int, ...], widths_fine: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The (coarse, fine) widths a run trains with: each stage's start weights' where it has some
    (:func:`train_stage` takes them), else the given ones. Start weights that cannot be read (a mistyped path, a
    model file exported without its training state, a file that is not a checkpoint) are refused in one line,
    before any data is loaded."""
    sources = {"coarse": ("--init-coarse-from", init_coarse_from) if init_coarse_from else ("--init-from", init_from),
               "fine": ("--init-from", init_from)}
    widths = {"coarse": widths_coarse, "fine": widths_fine}
    for stage, (option, source) in sources.items():
        if source is None:
            continue
        if not source.exists():
            parser.error(f"{option} {source}: no such file or folder")
        try:
            widths[stage] = tuple(unet_widths(load_stage_weights(source, stage)))
        except (OSError, ValueError, RuntimeError, zipfile.BadZipFile) as error:
            parser.error(f"{option} {source}: {error}")
    return widths["coarse"], widths["fine"]


def main_train(argv: Sequence[str] | None = None) -> int:
    """``cmr-landmark train``: train a cascade on named data sets' train split, validate on their val split."""
    parser = argparse.ArgumentParser(prog="cmr-landmark train", description=main_train.__doc__)
    parser.add_argument("--view", choices=sorted(LANDMARKS_BY_VIEW), required=True)
    parser.add_argument("--sequence", default="cine", choices=MODEL_SEQUENCES,
                        help="the slices' sequence, and the model's in the manifest (default cine)")
    parser.add_argument("--datasets", default="", help="comma-separated data sets, e.g. acdc,myops")
    parser.add_argument("--val-datasets", default="", help="extra data sets used for validation only")
    parser.add_argument("--via", type=Path, default=None,
                        help="training labels: a VIA project JSON (docs/training.md); not with --datasets")
    parser.add_argument("--via-val", type=Path, default=None, help="validation labels: a VIA project JSON")
    parser.add_argument("--via-images", type=Path, default=None, help="folder of the VIA projects' images")
    parser.add_argument("--pixel-spacing-mm", type=float, nargs=2, default=None, help="for PNG/JPEG VIA images")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of each stage (default 20; see --epochs-fine)")
    parser.add_argument("--epochs-fine", type=int, default=None, help="epochs of the fine stage (default: --epochs)")
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, run.json, metrics.json")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    parser.add_argument("--init-from", type=Path, default=None, help="run folder, checkpoint or shipped model")
    parser.add_argument("--init-coarse-from", type=Path, default=None,
                        help="the coarse stage's start (overrides --init-from there); with --epochs 0 (and "
                             "--epochs-fine N) it is kept as is and only the fine stage trains")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, halved on plateau (default 1e-3)")
    parser.add_argument("--distance-loss-weight", type=float, default=0.0,
                        help="fine stage: weight (per mm) of the distance from each label to its map's centre of "
                             "mass, added to the heatmap loss (docs/training.md)")
    parser.add_argument("--fresh-contrast-fraction", type=float, default=0.0,
                        help="share of the training items given a new random per-tissue contrast every epoch, "
                             "drawn from their label masks (FreshImages; docs/t1.md)")
    parser.add_argument("--consistency-weight", type=float, default=0.0,
                        help="fine stage: every item is a pair, its own image and a second view (a fresh random "
                             "contrast for --fresh-contrast-fraction of them, else the image again with other "
                             "intensity augmentation), asked for the same maps with this weight (consistency_loss; "
                             "docs/t1.md); each step runs twice the images")
    parser.add_argument("--consistency-toward-real", action="store_true",
                        help="with --consistency-weight: pull only the second view's maps toward the own image's "
                             "(held fixed), as the shipped sax_any was trained, instead of each toward the other")
    parser.add_argument("--batch-size", type=int, default=24, help="items per step and process (default 24)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--widths", default=",".join(map(str, DEFAULT_WIDTHS)),
                        help="coarse U-Net channels per level, e.g. 16,32,64,128")
    parser.add_argument("--widths-fine", default=None, help="fine U-Net channels per level (default: --widths)")
    args = parser.parse_args(argv)
    from .datasets import DATASETS, dataset_names

    try:
        widths_coarse = tuple(int(w) for w in args.widths.split(","))
        widths_fine = tuple(int(w) for w in args.widths_fine.split(",")) if args.widths_fine else widths_coarse
    except ValueError:
        parser.error("--widths and --widths-fine are positive whole numbers separated by commas, e.g. 16,32,64,128")
    epochs_fine = args.epochs if args.epochs_fine is None else args.epochs_fine
    # everything a run would otherwise discover only after hours of its first stage
    if min(widths_coarse + widths_fine) < 1 or args.batch_size < 1 or min(args.epochs, epochs_fine) < 0:
        parser.error("--widths, --batch-size must be positive and --epochs, --epochs-fine not negative")
    if args.epochs == 0 and not (args.init_from or args.init_coarse_from or args.resume):
        parser.error("--epochs 0 keeps the coarse stage as given: it needs --init-from or --init-coarse-from")
    if epochs_fine == 0 and not (args.init_from or args.resume):
        parser.error("--epochs-fine 0 keeps the fine stage as given: it needs --init-from")
    if problem := consistency_options_problem(args.consistency_weight, args.consistency_toward_real):
        parser.error(problem)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file")
    if args.resume and not any((args.out / f"{stage}_{kind}.pt").exists() for stage in STAGES
                               for kind in ("last", "best")):  # a mistyped --out would start afresh, unsaid
        parser.error(f"--resume: --out {args.out} holds no checkpoints of a run to continue; without --resume a "
                     "run starts afresh there")
    if args.via and (args.datasets or args.val_datasets):  # one run trains on one kind of labels (run.json)
        parser.error("--via trains on your VIA labels only: give --datasets/--val-datasets or --via/--via-val, "
                     "not both")
    run_path = args.out / "run.json"
    recorded = json.loads(run_path.read_text()) if args.resume and run_path.exists() else {}
    # A resume starts a stage not yet begun from the run's own start weights: those it recorded unless given again
    # (a different file is refused below).
    init_from = args.init_from or (Path(recorded["init_from"]) if recorded.get("init_from") else None)
    init_coarse_from = args.init_coarse_from or (
        Path(recorded["init_coarse_from"]) if recorded.get("init_coarse_from") else None)
    widths_coarse, widths_fine = start_widths(parser, init_from, init_coarse_from, widths_coarse, widths_fine)
    names = dataset_names(args.datasets)  # a set named twice is loaded once
    val_names = dataset_names(f"{args.datasets},{args.val_datasets}")
    if unknown := sorted(set(val_names) - set(DATASETS)):
        parser.error(f"unknown data set(s) {', '.join(unknown)}; the public sets are {', '.join(DATASETS)}")
    try:  # FreshImages checks the share
        fresh_images = FreshImages(with_random_contrast, args.fresh_contrast_fraction)
    except ValueError as error:
        parser.error(f"--fresh-contrast-fraction: {error}")
    if args.via:
        from .via import read_via_slices

        if args.fresh_contrast_fraction:
            parser.error("--fresh-contrast-fraction draws from label masks, which VIA point labels do not have")

        if not args.via_val:
            parser.error("--via needs --via-val (labelled images of other patients to choose the best epoch)")
        try:
            train_slices, val_slices = (read_via_slices(path, args.view, args.sequence, args.via_images,
                                                        args.pixel_spacing_mm) for path in (args.via, args.via_val))
        except ValueError as error:  # ViaError: the file, and each image it cannot use, one line each
            parser.exit(2, f"cmr-landmark train: {error}\n")
        if shared := sorted({s.patient for s in train_slices} & {s.patient for s in val_slices}):
            # allowed (a quick trial on one project), but the best epoch is then chosen on images it trained on
            print(f"warning: --via and --via-val share patients {', '.join(shared[:5])}"
                  f"{' ...' if len(shared) > 5 else ''}: the validation figures will be optimistic", file=sys.stderr)
    elif names:
        try:
            train_slices = load_labelled_slices(names, "train", args.view, args.sequence)
            val_slices = load_labelled_slices(val_names, "val", args.view, args.sequence)
        except (ValueError, OSError) as error:  # no such slices, or the data folder missing
            parser.error(str(error))
    else:
        parser.error("give --datasets or --via/--via-val")
    if not has_labelled_landmark(val_slices):
        parser.error(NO_VALIDATION_LANDMARK)
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun: each process trains on its share, in batches
    if len(train_slices) // processes < args.batch_size:  # else train_stage stops with a traceback after loading
        parser.error(f"{len(train_slices)} training images over {processes} process(es) are fewer than one batch "
                     f"of {args.batch_size} per process: give --batch-size {max(1, len(train_slices) // processes)} "
                     "or less")
    if not args.resume and any((args.out / f"{stage}_last.pt").exists() for stage in ("coarse", "fine")):
        parser.error(f"--out {args.out} holds an earlier run's checkpoints: --resume continues it, another --out "
                     "starts afresh")
    device = setup_distributed()  # the ranks known before run.json is replaced
    settings = {  # what a run is: a resume must not change it (epochs and threads may)
        "datasets": names, "val_datasets": val_names, "sequence": args.sequence, "view": args.view,
        "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed, "widths": list(widths_coarse),
        "widths_fine": list(widths_fine), "distance_loss_weight": args.distance_loss_weight,
        "fresh_contrast_fraction": args.fresh_contrast_fraction, "consistency_weight": args.consistency_weight,
        "consistency_toward_real": args.consistency_toward_real,
        # absolute, so that export and evaluate find them from any folder
        "via": [str(args.via.resolve()), str(args.via_val.resolve()),
                str(args.via_images.resolve()) if args.via_images else "", args.pixel_spacing_mm]
        if args.via else None,
        "init_from": str(init_from.resolve()) if init_from else "",
        "init_coarse_from": str(init_coarse_from.resolve()) if init_coarse_from else "",
    }
    if recorded:
        refuse_changed_resume(parser, args.out, recorded, settings)
    if dist.is_initialized():
        dist.barrier()  # every rank has read run.json before rank 0 replaces it
    if is_main_process():
        print(f"{len(train_slices)} training and {len(val_slices)} validation slices", flush=True)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        # metrics.json marks a finished run (export): a resumed one is not finished until it ends again
        (Path(args.out) / "metrics.json").unlink(missing_ok=True)
        write_json_atomically(run_path, {**settings, "epochs": args.epochs, "epochs_fine": epochs_fine})
    start = time.perf_counter()
    _, metrics = train_cascade(
        train_slices, val_slices, args.view, args.out, args.epochs, epochs_fine,
        init_from=init_from, lr=args.lr, threads=args.threads, resume=args.resume,
        batch_size=args.batch_size, seed=args.seed, widths_coarse=widths_coarse, widths_fine=widths_fine,
        init_coarse_from=init_coarse_from, distance_weight=args.distance_loss_weight,
        fresh_images=fresh_images, consistency_weight=args.consistency_weight,
        consistency_toward_real=args.consistency_toward_real,
    )
    if is_main_process():
        wall_s = time.perf_counter() - start
        write_json_atomically(run_path, {
            **settings, "train_slices": len(train_slices), "val_slices": len(val_slices), "wall_s": wall_s,
            "threads": args.threads, "epochs": args.epochs, "epochs_fine": epochs_fine,
            "precision": "bf16 autocast" if uses_bf16(device) else "fp32"})
        print(json.dumps(metrics, default=float), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
