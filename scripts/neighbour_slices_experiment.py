"""Does the fine stage place and decide the short-axis landmarks better when it also sees the neighbouring slices?

    python scripts/neighbour_slices_experiment.py --channels 3 --epochs 12 --out runs/neighbours_3
    python scripts/neighbour_slices_experiment.py --channels 1 --epochs 12 --out runs/neighbours_1   # the control

Both arms start from the shipped `sax_cine` fine stage (the 3-channel arm's first convolution gets the shipped
kernels on its middle channel and zeros on the neighbours', so it starts as the shipped model) and train the same
epochs on the same augmented items (the control takes the middle channel of the very same item): Adam at
``--lr``, heatmap loss + distance term (weight 0.3 per mm), fp32. Input channels: the slice before, the slice,
the slice after in the stack (same set, patient and phase), resampled through the slice's own grid transform; a
slice at an end of its stack repeats itself for the missing neighbour, and training swaps the two neighbours at
random, so the stored slice order (base first or apex first, which differs between sets) carries no meaning.

Validation runs the way the detector does (shipped coarse stage to centre the crop, mirror pass averaged as the
manifest says, centre-of-mass decoding) over the cine validation split of ACDC + MyoPS after every epoch, and
writes per-epoch figures to ``--out/history.json`` (epoch 0: the shipped fine stage) and the best trained epoch's
per-landmark distances and peak probabilities to ``--out/best.npz`` (compare the arms with ``--compare``). Not a
product path: the shipped detector sees one slice.

    python scripts/neighbour_slices_experiment.py --compare runs/neighbours_1 runs/neighbours_3
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from presence_analysis import roc_auc, stacks  # a sibling script (scripts/ is on sys.path when run)
from torch.utils.data import DataLoader

from cmr_landmark.config import FINE_CENTROID_RADIUS_MM
from cmr_landmark.detector import Detector, crop_centres, mirrored_back, pool_mirror_passes
from cmr_landmark.evaluation import paired_difference
from cmr_landmark.heatmaps import decode_heatmaps, render_heatmaps
from cmr_landmark.model_store import find_model
from cmr_landmark.network import UNet, unet_widths
from cmr_landmark.preprocess import grid_transform, normalise_stack, resample_stack
from cmr_landmark.training import (
    HeatmapDataset,
    heatmap_loss,
    load_labelled_slices,
    load_stage_weights,
    point_distance_loss,
)

DISTANCE_WEIGHT_PER_MM = 0.3
LANDMARKS = ("A-RVI", "P-RVI", "C-LV")


def neighbour_indices(slices: Sequence) -> list[tuple[int, int]]:
    """(previous, next) index of each slice in its stack; the slice itself where there is none (no slice one index
    away, or its image has another shape)."""

    def neighbour(index: int, other: int) -> int:
        adjacent = abs(slices[other].slice_index - slices[index].slice_index) == 1
        return other if adjacent and slices[other].image.shape == slices[index].image.shape else index

    pairs = [(index, index) for index in range(len(slices))]
    for stack in stacks(slices):
        for position, index in enumerate(stack):
            previous = neighbour(index, stack[position - 1]) if position > 0 else index
            following = neighbour(index, stack[position + 1]) if position < len(stack) - 1 else index
            pairs[index] = (previous, following)
    return pairs


class NeighbourDataset(HeatmapDataset):
    """Fine-stage items with the neighbouring slices as extra channels (previous, slice, next), all through the
    item's geometry and intensity augmentation; ``channels`` 1 returns the middle channel of the same item."""

    def __init__(self, slices: Sequence, channels: int, seed: int = 0) -> None:
        super().__init__(slices, "sax", "fine", augment=True, seed=seed)
        self.neighbours = neighbour_indices(slices)
        self.channels = channels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        affine = self.geometry(rng)
        centre = self.centre_rc(index, rng)
        image, points = self.on_grid(self.images[index], index, centre, affine)
        previous, following = (self.on_grid(self.images[j], index, centre, affine)[0] for j in self.neighbours[index])
        state = rng.bit_generator.state  # the same shading, gamma, blur and noise draw on every channel
        channels = []
        for grid_image in (previous, image, following):
            rng.bit_generator.state = state
            channels.append(self.intensity(grid_image, rng, self.grid.pixel_mm / affine.scale))
        if rng.random() < 0.5:
            channels[0], channels[2] = channels[2], channels[0]
        stacked = np.stack(channels) if self.channels == 3 else channels[1][None]
        target = render_heatmaps(points, self.grid.size_px, self.grid.sigma_px)
        return torch.from_numpy(stacked.copy()), torch.from_numpy(target)


def initial_network(channels: int) -> UNet:
    state = load_stage_weights(Path(find_model("sax", "cine").file), "fine")
    network = UNet(len(LANDMARKS), unet_widths(state), in_channels=channels)
    if channels == 3:
        kernel = state["encoders.0.0.weight"]
        widened = torch.zeros(kernel.shape[0], 3, *kernel.shape[2:], dtype=kernel.dtype)
        widened[:, 1:2] = kernel
        state = {**state, "encoders.0.0.weight": widened}
    network.load_state_dict({key: value.float() for key, value in state.items()})
    return network


class Validation:
    """The validation crops as the detector makes them, with both neighbours, computed once."""

    def __init__(self, slices: Sequence) -> None:
        self.detector = Detector(find_model("sax", "cine"), use_bf16=False)
        spec = self.detector.spec
        neighbours = neighbour_indices(slices)
        normalised = [normalise_stack(s.image[None].astype(np.float32))[0] for s in slices]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, slice_ in enumerate(slices):
            groups[(slice_.image.shape, tuple(slice_.pixel_spacing_mm))].append(index)
        size = spec.fine_grid.size_px
        self.inputs = np.zeros((len(slices), 3, size, size), np.float32)
        self.transforms = [None] * len(slices)
        for (shape, spacing), indices in groups.items():
            stack = np.stack([slices[i].image for i in indices]).astype(np.float32)
            # The detector's own coarse step, so the crops are centred exactly where the shipped detector centres them.
            coarse_points, coarse_peak = self.detector._coarse_landmarks(
                stack, np.stack([normalised[i] for i in indices]), spacing)
            for index, centre in zip(indices, crop_centres(coarse_points, coarse_peak), strict=True):
                transform = grid_transform(shape, spacing, spec.fine_grid, centre_rc=tuple(centre))
                self.transforms[index] = transform
                previous, following = neighbours[index]
                self.inputs[index] = resample_stack(np.stack([normalised[previous], normalised[index],
                                                              normalised[following]]), [transform] * 3)
        self.truth_rc = np.stack([s.landmarks_rc for s in slices])
        self.spacing_mm = np.array([s.pixel_spacing_mm for s in slices])
        self.labelled = np.isfinite(self.truth_rc[..., 0])

    @torch.no_grad()
    def __call__(self, network: UNet, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-landmark distances in mm (NaN where not labelled) and peak probabilities."""
        network.eval()
        spec = self.detector.spec
        x = torch.from_numpy(self.inputs if channels == 3 else self.inputs[:, 1:2])
        direct = torch.cat([torch.softmax(network(b), 1) for b in x.split(64)])
        mirrored = torch.cat([torch.softmax(network(b.flip(-1)), 1) for b in x.split(64)])
        probabilities = pool_mirror_passes(direct, mirrored_back(mirrored, "sax"), spec.mirror_pooling)
        points_grid, peak = decode_heatmaps(probabilities, FINE_CENTROID_RADIUS_MM / spec.fine_grid.pixel_mm)
        predicted = np.stack([t.grid_to_image(p) for p, t in zip(points_grid, self.transforms, strict=True)])
        distances = np.linalg.norm((predicted - self.truth_rc) * self.spacing_mm[:, None], axis=-1)
        network.train()
        return np.where(self.labelled, distances, np.nan), np.asarray(peak)


def summary(distances: np.ndarray, peak: np.ndarray, labelled: np.ndarray) -> dict:
    return {"mean_all_mm": float(np.nanmean(distances)),
            **{f"{name} mm": float(np.nanmean(distances[:, k])) for k, name in enumerate(LANDMARKS)},
            **{f"{name} AUC": roc_auc(peak[:, k], labelled[:, k]) for k, name in enumerate(LANDMARKS)}}


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    train_slices = load_labelled_slices(["acdc", "myops"], "train", "sax", "cine")
    val_slices = load_labelled_slices(["acdc", "myops"], "val", "sax", "cine")
    validation = Validation(val_slices)
    network = initial_network(args.channels)
    dataset = NeighbourDataset(train_slices, args.channels)
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(dataset, batch_size=24, shuffle=True, drop_last=True, generator=generator)
    optimiser = torch.optim.Adam(network.parameters(), lr=args.lr)
    radius_px = FINE_CENTROID_RADIUS_MM / dataset.grid.pixel_mm
    distances, peak = validation(network, args.channels)
    history = [{"epoch": 0, **summary(distances, peak, validation.labelled)}]
    print(history[-1], flush=True)
    best = np.inf  # the best *trained* epoch: epoch 0 is the shipped model in both arms
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        dataset.set_epoch(epoch)
        generator.manual_seed(epoch)
        losses = []
        for images, targets in loader:
            logits = network(images)
            loss = heatmap_loss(logits, targets) + DISTANCE_WEIGHT_PER_MM * dataset.grid.pixel_mm * (
                point_distance_loss(logits, targets, radius_px))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        distances, peak = validation(network, args.channels)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - start,
                        **summary(distances, peak, validation.labelled)})
        print(history[-1], flush=True)
        if history[-1]["mean_all_mm"] < best:
            best = history[-1]["mean_all_mm"]
            np.savez(args.out / "best.npz", distances=distances, peak=peak, labelled=validation.labelled, epoch=epoch)
            torch.save(network.state_dict(), args.out / "fine_best.pt")
        (args.out / "history.json").write_text(json.dumps(history, indent=1))


def compare(runs: Sequence[Path]) -> None:
    """The best epochs of two arms: means, AUCs and the paired difference (second minus first)."""
    first, second = (np.load(run / "best.npz") for run in runs)
    for run, result in zip(runs, (first, second), strict=True):
        print(run, "epoch", int(result["epoch"]), summary(result["distances"], result["peak"], result["labelled"]))
    labelled = first["labelled"]
    mean, half_width = paired_difference(second["distances"][labelled], first["distances"][labelled])
    print(f"paired difference {runs[1]} - {runs[0]}: {mean:+.2f} +- {half_width:.2f} mm "
          f"over {int(labelled.sum())} labelled landmarks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2.5e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", type=Path, nargs=2, metavar="RUN")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare:
        compare(args.compare)
    elif args.out is None:
        parser.error("--out is required for training")
    else:
        train(args)


if __name__ == "__main__":
    main()
