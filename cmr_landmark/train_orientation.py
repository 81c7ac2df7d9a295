"""Train the short-axis orientation classifier (display_orientation) on the public sets' labelled slices.

Every cached short-axis slice is in the standard display (datasets.ORIENTATION_BY_DATASET). A training item is one
slice stored in a random one of the 8 orientations, with a little rotation, zoom and shift, the landmark training's
intensity augmentation and, for some items, random per-tissue contrast (synth.contrast) so that T1 maps and other
contrasts look familiar; its class is the orientation that brings it back. Validation shows every validation slice
in all 8 orientations and reports per-image and per-stack accuracy (a stack is one patient's slices of one phase
and sequence, decided together as ``estimate_display_orientation`` does).

    python -m cmr_landmark.train_orientation --out runs/orientation --epochs 30
    python -m cmr_landmark.train_orientation --out runs/orientation --export   # models/sax_orientation.pt

A run resumes from ``OUT/last.pt``; ``OUT/best.pt`` keeps the epoch with the best validation per-image accuracy.
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
from torch import nn

from .augment import default_intensity_augmentation
from .config import ORIENTATION_GRID, models_dir
from .datasets import Slice, load_slices
from .display_orientation import ORIENTATION_MODEL_FILE, OrientationNet, inverse_orientation, orientation_inputs
from .geometry import ORIENTATIONS, orient_image
from .preprocess import grid_transform, normalise_intensity, resample_to_grid, to_magnitude
from .synth.contrast import random_tissue_contrast

TRAIN_SETS = ("acdc", "myops", "mscmrseg_lge")
VAL_SETS = ("acdc", "myops", "mscmrseg_lge", "mnms2")
RANDOM_CONTRAST_FRACTION = 0.4
MAX_ROTATION_DEG = 20.0  # well inside the 45 degrees that separate a quarter turn from its neighbour
MAX_SHIFT_MM = 25.0
SCALE_RANGE = (0.8, 1.25)


def stored_as(image: np.ndarray, pixel_spacing_mm: tuple[float, float], orientation_class: int
              ) -> tuple[np.ndarray, tuple[float, float]]:
    """A standard-display image as it would be stored if ``ORIENTATIONS[orientation_class]`` brings it back."""
    quarter_turns, mirror = inverse_orientation(*ORIENTATIONS[orientation_class])
    spacing = (pixel_spacing_mm[1], pixel_spacing_mm[0]) if quarter_turns % 2 else pixel_spacing_mm
    return orient_image(image, quarter_turns, mirror), spacing


def training_item(slice_: Slice, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One augmented (S, S) grid image and its class."""
    image = slice_.image
    if slice_.mask is not None and rng.random() < RANDOM_CONTRAST_FRACTION:
        image = random_tissue_contrast(image, slice_.mask, rng)
    orientation_class = int(rng.integers(len(ORIENTATIONS)))
    stored, spacing = stored_as(image, slice_.pixel_spacing_mm, orientation_class)
    shift_px = rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 2) / np.asarray(spacing)
    centre = (np.asarray(stored.shape) - 1) / 2.0 + shift_px
    transform = grid_transform(stored.shape, spacing, ORIENTATION_GRID, centre_rc=tuple(centre),
                               rotation_rad=np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)),
                               scale=rng.uniform(*SCALE_RANGE))
    grid_image = resample_to_grid(normalise_intensity(to_magnitude(stored)), transform)
    return default_intensity_augmentation()(grid_image, rng, ORIENTATION_GRID.pixel_mm), orientation_class


def validation_inputs(slices: Sequence[Slice]) -> tuple[np.ndarray, np.ndarray]:
    """Every slice in all 8 orientations: inputs (N * 8, 1, S, S) and classes (N * 8,), slice-major."""
    inputs, classes = [], []
    for s in slices:
        for orientation_class in range(len(ORIENTATIONS)):
            stored, spacing = stored_as(s.image, s.pixel_spacing_mm, orientation_class)
            inputs.append(orientation_inputs(stored[np.newaxis], spacing)[0])
            classes.append(orientation_class)
    return np.stack(inputs).astype(np.float32), np.array(classes)


def evaluate(model: nn.Module, slices: Sequence[Slice]) -> dict[str, float]:
    """Per-image and per-stack accuracy (%) over ``slices`` shown in all 8 orientations, and where it errs."""
    inputs, classes = validation_inputs(slices)
    model.eval()
    with torch.inference_mode():
        log_probabilities = torch.cat([torch.log_softmax(model(torch.from_numpy(batch)), dim=1)
                                       for batch in np.array_split(inputs, max(1, len(inputs) // 256))]).numpy()
    per_image_right = log_probabilities.argmax(1) == classes
    stacks: dict[tuple, list[int]] = defaultdict(list)
    for index, s in enumerate(slices):
        stacks[(s.dataset, s.patient, s.phase, s.sequence)].append(index)
    stack_right = []
    by_class = log_probabilities.reshape(len(slices), len(ORIENTATIONS), len(ORIENTATIONS))  # slice, shown, class
    for members in stacks.values():
        summed = by_class[members].sum(axis=0)  # (shown, class)
        stack_right.extend(summed.argmax(axis=1) == np.arange(len(ORIENTATIONS)))
    mirror_only = [ORIENTATIONS[p][0] == ORIENTATIONS[c][0] for p, c in
                   zip(log_probabilities.argmax(1)[~per_image_right], classes[~per_image_right], strict=True)]
    return {"images": len(slices), "stacks": len(stacks),
            "image_accuracy_pct": 100.0 * float(per_image_right.mean()),
            "stack_accuracy_pct": 100.0 * float(np.mean(stack_right)),
            "image_errors_turn_right_mirror_wrong": int(np.sum(mirror_only))}


def sax_slices(datasets: Sequence[str], split: str) -> list[Slice]:
    return [s for dataset in datasets for s in load_slices(dataset, split) if s.view == "sax"]


def train(out: Path, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_slices, val_slices = sax_slices(TRAIN_SETS, "train"), sax_slices(VAL_SETS, "val")
    model = OrientationNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    start_epoch, best = 0, -1.0
    if (out / "last.pt").exists():  # resume
        state = torch.load(out / "last.pt", weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, best, history = state["epoch"], state["best"], state["history"]
        rng = np.random.default_rng([seed, start_epoch])
    print(f"{len(train_slices)} training slices, {len(val_slices)} validation slices; epochs {start_epoch + 1}-{epochs}")
    for epoch in range(start_epoch, epochs):
        began = time.monotonic()
        model.train()
        order = rng.permutation(len(train_slices))
        losses = []
        for batch_start in range(0, len(order), batch_size):
            items = [training_item(train_slices[i], rng) for i in order[batch_start:batch_start + batch_size]]
            inputs = torch.from_numpy(np.stack([image for image, _ in items])[:, np.newaxis])
            classes = torch.tensor([orientation_class for _, orientation_class in items])
            loss = nn.functional.cross_entropy(model(inputs), classes)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        schedule.step()
        measured = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **evaluate(model, val_slices),
                    "seconds": time.monotonic() - began}
        history.append(measured)
        print(json.dumps(measured), flush=True)
        if measured["image_accuracy_pct"] > best:
            best = measured["image_accuracy_pct"]
            torch.save(model.state_dict(), out / "best.pt")
        torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                    "epoch": epoch + 1, "best": best, "history": history}, out / "last.pt")
    (out / "history.json").write_text(json.dumps(history, indent=1))


def export(out: Path) -> Path:
    """``OUT/best.pt`` as TorchScript in models/."""
    model = OrientationNet()
    model.load_state_dict(torch.load(out / "best.pt", weights_only=True))
    path = models_dir() / ORIENTATION_MODEL_FILE
    torch.jit.script(model.eval()).save(str(path))
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--export", action="store_true", help="export OUT/best.pt to models/ and stop")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.export:
        print(f"wrote {export(args.out)}")
        return
    train(args.out, args.epochs, args.batch_size, args.lr, args.seed)


if __name__ == "__main__":
    main()
