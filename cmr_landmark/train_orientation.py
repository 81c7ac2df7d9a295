"""Train the short-axis orientation network (display_orientation) on the public sets' labelled slices.

Every cached short-axis slice is in its set's display (datasets.ORIENTATION_BY_DATASET), with the standard
chirality. A training item is one slice turned by any angle, mirrored half the time, zoomed and shifted a little,
with the landmark training's intensity augmentation and, for some items, random per-tissue contrast (synth.contrast)
so that T1 maps and other contrasts look familiar. Its targets: the RV direction of its landmarks on the network's
grid as (cos, sin), (0, 0) on a slice without both RV insertion points, and whether it was mirrored. Validation shows
every validation slice in all 8 stored orientations and reports the angle error and mirror accuracy per image and
per stack (a stack is one patient's slices of one phase and sequence, decided together as
``estimate_stored_orientation`` does).

    python -m cmr_landmark.train_orientation --out runs/orientation        # 60 epochs, 31 min on 2 CPU threads
    python -m cmr_landmark.train_orientation --out runs/orientation --export   # models/sax_orientation.pt

A run resumes from ``OUT/last.pt``; ``OUT/best.pt`` keeps the epoch with the best validation score.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .augment import default_intensity_augmentation
from .config import ORIENTATION_GRID, models_dir
from .datasets import Slice, load_slices, stack_indices
from .display_orientation import (
    OrientationNet,
    mean_rv_direction_deg,
    orientation_inputs,
    rv_direction_deg,
)
from .geometry import ORIENTATIONS, angle_between_deg, orient_image, oriented_spacing_mm, shown_direction_deg
from .model_store import edit_manifest, sha256_of
from .preprocess import grid_transform, normalise_intensity, resample_to_grid, to_magnitude
from .synth.contrast import random_tissue_contrast
from .synth.t1 import synthetic_t1_slice

TRAIN_SETS = ("acdc", "myops", "mscmrseg_lge")
VAL_SETS = ("acdc", "myops", "mscmrseg_lge", "mnms2")
RANDOM_CONTRAST_FRACTION = 0.4
MAX_SHIFT_MM = 25.0
SCALE_RANGE = (0.8, 1.25)
STACK_TOLERANCE_DEG = 30.0  # a stack is decided right when its RV direction is this near and its mirror right


def training_item(slice_: Slice, rng: np.random.Generator, synthetic_t1_fraction: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (S, S) grid image and its targets (cos, sin, mirrored). ``synthetic_t1_fraction`` of the
    items become a synthetic T1 map (synth.t1), the next ``RANDOM_CONTRAST_FRACTION`` get random tissue contrast."""
    image = slice_.image
    draw = rng.random()
    if slice_.mask is not None and draw < synthetic_t1_fraction:
        image = synthetic_t1_slice(slice_, rng).image
    elif slice_.mask is not None and draw < synthetic_t1_fraction + RANDOM_CONTRAST_FRACTION:
        image = random_tissue_contrast(image, slice_.mask, rng)
    mirror = bool(rng.random() < 0.5)
    spacing = np.asarray(slice_.pixel_spacing_mm)
    centre = (np.asarray(image.shape) - 1) / 2.0 + rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 2) / spacing
    transform = grid_transform(image.shape, slice_.pixel_spacing_mm, ORIENTATION_GRID, centre_rc=tuple(centre),
                               rotation_rad=rng.uniform(0.0, 2 * np.pi), scale=rng.uniform(*SCALE_RANGE),
                               mirror=mirror)
    grid_image = resample_to_grid(normalise_intensity(to_magnitude(image)), transform)
    grid_image = default_intensity_augmentation()(grid_image, rng, ORIENTATION_GRID.pixel_mm)
    direction = np.zeros(2)
    if slice_.has_all_landmarks:
        angle = np.radians(rv_direction_deg(transform.image_to_grid(slice_.landmarks_rc), (1.0, 1.0)))
        direction = np.array([np.cos(angle), np.sin(angle)])
    return grid_image, np.array([*direction, float(mirror)], dtype=np.float32)


def loss_of(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Squared error of the (cos, sin) pair, whose best guess under uncertainty is their mean and so shorter, plus
    binary cross-entropy of the mirror logit."""
    return (nn.functional.mse_loss(outputs[:, :2], targets[:, :2]) * 2
            + nn.functional.binary_cross_entropy_with_logits(outputs[:, 2], targets[:, 2]))


def stored_orientation_outputs(model: nn.Module, slices: Sequence[Slice]) -> np.ndarray:
    """(N, 8, 3) outputs for every slice stored in each of the 8 ORIENTATIONS (``orient_image`` of its display)."""
    inputs = []
    for s in slices:
        for turns, mirror in ORIENTATIONS:
            inputs.append(orientation_inputs(orient_image(s.image, turns, mirror)[np.newaxis],
                                             oriented_spacing_mm(s.pixel_spacing_mm, turns))[0])
    batch = torch.from_numpy(np.stack(inputs).astype(np.float32))
    model.eval()
    with torch.inference_mode():
        outputs = torch.cat([model(part) for part in torch.split(batch, 256)]).float().numpy()
    return outputs.reshape(len(slices), len(ORIENTATIONS), 3)


def evaluate(model: nn.Module, slices: Sequence[Slice]) -> dict[str, float]:
    """Angle error (degrees) and mirror accuracy (%) per image and per stack over ``slices`` stored in all 8
    orientations; a stack's truth is the circular mean of its slices' RV directions."""
    outputs = stored_orientation_outputs(model, slices)
    truth = np.array([rv_direction_deg(s.landmarks_rc, s.pixel_spacing_mm) for s in slices])  # NaN without RVI
    mirrors = np.array([mirror for _, mirror in ORIENTATIONS])
    shown_truth = np.array([[shown_direction_deg(t, *o) for o in ORIENTATIONS] for t in truth])
    estimated = np.degrees(np.arctan2(outputs[..., 1], outputs[..., 0])) % 360
    labelled = np.isfinite(truth)
    image_errors = np.vectorize(angle_between_deg)(estimated, shown_truth)[labelled]
    image_mirror_right = (outputs[..., 2] > 0) == mirrors
    stack_errors, stack_mirror_right = [], []
    for members in stack_indices(slices):
        members = np.array(members)
        known = members[labelled[members]]
        if len(known) == 0:
            continue
        stack_direction = mean_rv_direction_deg([slices[i] for i in known])
        for o, orientation in enumerate(ORIENTATIONS):
            stack_truth = shown_direction_deg(stack_direction, *orientation)
            summed = outputs[members, o, :2].sum(axis=0)
            stack_errors.append(angle_between_deg(np.degrees(np.arctan2(summed[1], summed[0])), stack_truth))
            stack_mirror_right.append((outputs[members, o, 2].mean() > 0) == orientation[1])
    stack_errors, stack_mirror_right = np.array(stack_errors), np.array(stack_mirror_right)
    return {"images": len(slices), "stacks": len(stack_errors) // len(ORIENTATIONS),
            "image_median_error_deg": float(np.median(image_errors)),
            "image_p95_error_deg": float(np.percentile(image_errors, 95)),
            "image_mirror_right_pct": 100.0 * float(image_mirror_right.mean()),
            "stack_median_error_deg": float(np.median(stack_errors)),
            "stack_max_error_deg": float(stack_errors.max()),
            "stack_mirror_right_pct": 100.0 * float(stack_mirror_right.mean()),
            "stack_right_pct": 100.0 * float(np.mean((stack_errors <= STACK_TOLERANCE_DEG) & stack_mirror_right))}


def sax_slices(datasets: Sequence[str], split: str) -> list[Slice]:
    return [s for dataset in datasets for s in load_slices(dataset, split) if s.view == "sax"]


def score(measured: dict) -> tuple[float, float]:
    """Validation score for keeping the best epoch: stacks decided right first, then the image error."""
    return (measured["stack_right_pct"], -measured["image_median_error_deg"])


def train(out: Path, epochs: int, batch_size: int, lr: float, seed: int, synthetic_t1_fraction: float = 0.0) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_slices, val_slices = sax_slices(TRAIN_SETS, "train"), sax_slices(VAL_SETS, "val")
    model = OrientationNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    start_epoch, best = 0, (-1.0, -np.inf)
    if (out / "last.pt").exists():  # resume
        state = torch.load(out / "last.pt", weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, best, history = state["epoch"], tuple(state["best"]), state["history"]
        if "rng" in state:  # the stream goes on where it stopped: a resumed run trains as an uninterrupted one
            rng.bit_generator.state = state["rng"]
        else:  # a checkpoint from before the stream was saved
            rng = np.random.default_rng([seed, start_epoch])
    print(f"{len(train_slices)} training slices, {len(val_slices)} validation slices; "
          f"epochs {start_epoch + 1}-{epochs}")
    for epoch in range(start_epoch, epochs):
        began = time.monotonic()
        model.train()
        order = rng.permutation(len(train_slices))
        losses = []
        for batch_start in range(0, len(order), batch_size):
            items = [training_item(train_slices[i], rng, synthetic_t1_fraction)
                     for i in order[batch_start:batch_start + batch_size]]
            inputs = torch.from_numpy(np.stack([image for image, _ in items])[:, np.newaxis])
            targets = torch.from_numpy(np.stack([target for _, target in items]))
            loss = loss_of(model(inputs), targets)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        schedule.step()
        measured = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **evaluate(model, val_slices),
                    "seconds": time.monotonic() - began}
        history.append(measured)
        print(json.dumps(measured), flush=True)
        if score(measured) > best:
            best = score(measured)
            torch.save(model.state_dict(), out / "best.pt")
        partial = out / "last.pt.partial"  # written beside and renamed: an interrupted save leaves the last one whole
        torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                    "epoch": epoch + 1, "best": best, "history": history, "rng": rng.bit_generator.state}, partial)
        partial.replace(out / "last.pt")
        (out / "history.json").write_text(json.dumps(history, indent=1))


def export(out: Path, folder: Path | None = None) -> Path:
    """``OUT/best.pt`` as TorchScript ``sax_orientation.pt`` in the models folder, listed in its manifest under
    ``orientation_network`` with its sha256 and the validation figures of its best epoch."""
    folder = Path(folder) if folder is not None else models_dir()
    model = OrientationNet()
    model.load_state_dict(torch.load(out / "best.pt", weights_only=True))
    path = folder / "sax_orientation.pt"
    torch.jit.script(model.eval()).save(str(path))
    best = max(json.loads((out / "history.json").read_text()), key=score)
    entry = {"file": path.name, "sha256": sha256_of(path), "card": "sax_orientation.md",
             "grid": asdict(ORIENTATION_GRID),
             "validation": {key: value for key, value in best.items() if key not in ("train_loss", "seconds")}}
    edit_manifest(folder, lambda manifest: manifest.update(orientation_network=entry))
    return path


def record_display_direction(model_name: str, sources: Sequence[tuple[str, str]], folder: Path | None = None
                             ) -> float:
    """Write ``display_rv_direction_deg`` into a manifest entry: the circular mean RV direction of the training
    split's slices of ``sources`` ((dataset, sequence) pairs, those the model was trained on; its card names them).
    ``cmr-landmark export`` records it itself; this is for models exported before it did."""
    folder = Path(folder) if folder is not None else models_dir()
    slices = [s for dataset, sequence in sources for s in load_slices(dataset, "train") if s.sequence == sequence]
    direction = round(mean_rv_direction_deg(slices), 1)

    def set_direction(manifest: dict) -> None:
        entry = next((m for m in manifest["models"] if m["name"] == model_name), None)
        if entry is None or entry["view"] != "sax":
            raise ValueError(f"no short-axis model {model_name!r} in {folder / 'manifest.json'}")
        entry["display_rv_direction_deg"] = direction

    edit_manifest(folder, set_direction)
    return direction


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--synthetic-t1-fraction", type=float, default=0.2,
                        help="fraction of training items drawn as synthetic T1 maps (docs/orientation.md)")
    parser.add_argument("--export", action="store_true", help="export OUT/best.pt to the models folder and stop")
    parser.add_argument("--display-direction", action="append", default=[], metavar="MODEL=SET:SEQ,...",
                        help="record a shipped model's display_rv_direction_deg from the sets it was trained on, "
                             "e.g. sax_cine=acdc:cine,myops:cine; repeat; then stop")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.display_direction:
        for item in args.display_direction:
            name, _, sources = item.partition("=")
            pairs = [tuple(source.split(":")) for source in sources.split(",")]
            print(f"{name}: display_rv_direction_deg {record_display_direction(name, pairs)}")
        return
    if args.export:
        print(f"wrote {export(args.out)}")
        return
    train(args.out, args.epochs, args.batch_size, args.lr, args.seed, args.synthetic_t1_fraction)


if __name__ == "__main__":
    main()
