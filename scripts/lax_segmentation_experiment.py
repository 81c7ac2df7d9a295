"""Long-axis landmarks from a predicted segmentation: does a U-Net that segments the synthetic hearts (LV blood pool,
LV myocardium), with the data sets' own landmark rule applied to its output, find the real mitral valve where the
heatmap models do not? (docs/lax.md, "Landmarks from a predicted segmentation").

The real labels are the rule (landmarks.derive_lax_landmarks) applied to a drawn segmentation; a segmenter is
dense, local supervision, which is what synthetic training transfers best in other work (SynthSeg), whereas a
heatmap model must learn where the valve lies from the synthetic hearts' global shape. The segmenter sees the fine
stage's crop (128 px, 1.25 mm) centred where the shipped ``lax_cine`` puts the three points (its own coarse-to-fine
guess, threshold aside); its map goes back through the rule and the points back to image pixels.

    python scripts/lax_segmentation_experiment.py --train-seed 1 --out runs/lax_seg/s1     # ~8 min, one thread
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from cmr_landmark.augment import RandomAffine, default_intensity_augmentation, sample_on_grid
from cmr_landmark.config import FINE_GRID_BY_VIEW, cache_dir
from cmr_landmark.detector import Detector
from cmr_landmark.landmarks import derive_lax_landmarks
from cmr_landmark.lax_evaluation import mnms2_lax_slices, phase_name
from cmr_landmark.model_store import find_model
from cmr_landmark.network import UNet
from cmr_landmark.preprocess import normalise_intensity, to_magnitude
from cmr_landmark.synth.lax import (
    LV_BLOOD,
    LV_MYOCARDIUM,
    cache_synthetic_lax,
    load_synthetic_lax,
    synthesize_lax_scene,
)

GRID = FINE_GRID_BY_VIEW["lax"]
CLASSES = (LV_BLOOD, LV_MYOCARDIUM)  # class k + 1; everything else background
N_SLICES, SET_SEED, FAMILY = 1000, 1, "slender"
HELD_OUT = 80  # the first slices of the set, as train_lax holds out


def synthetic_masks(slices: list) -> np.ndarray:
    """The label map of every cached synthetic slice as classes 0-2 (scenes are deterministic in their seed; each
    rebuilt scene is checked against its cached slice)."""
    path = cache_dir() / f"synth_lax_{FAMILY}_masks_{N_SLICES}_seed{SET_SEED}.npz"
    if path.exists():
        with np.load(path, allow_pickle=True) as data:
            return data["masks"]
    masks = np.empty(N_SLICES, dtype=object)
    for index in range(N_SLICES):
        scene = synthesize_lax_scene(np.random.default_rng([SET_SEED, index]), family=FAMILY)
        if not np.allclose(scene.landmarks_rc, slices[index].landmarks_rc, equal_nan=True):
            raise RuntimeError(f"scene {index} is not the cached slice: rebuild the synthetic cache")
        masks[index] = sum((k + 1) * (scene.labels == code) for k, code in enumerate(CLASSES)).astype(np.uint8)
    np.savez(path, masks=masks)
    return masks


def crop(image: np.ndarray, spacing: tuple[float, float], centre_rc: np.ndarray, rng: np.random.Generator | None,
         mask: np.ndarray | None = None):
    """(grid image, grid mask or None, transform) of the fine crop at ``centre_rc``, randomly moved when ``rng``
    (the training grid sampling, ``augment.sample_on_grid``; the mask nearest-neighbour through the same map)."""
    affine = RandomAffine(30, scale_range=(0.85, 1.2), max_translation_mm=15.0)(rng) if rng is not None else None
    no_landmarks = np.full((3, 2), np.nan)
    grid_image, _, transform = sample_on_grid(image, spacing, no_landmarks, GRID, "lax", tuple(centre_rc), affine)
    grid_mask = None if mask is None else ndimage.affine_transform(
        mask, transform.matrix, offset=transform.offset, output_shape=(GRID.size_px, GRID.size_px), order=0)
    return grid_image, grid_mask, transform


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice over the two tissues."""
    probabilities = logits.softmax(1)
    one_hot = nn.functional.one_hot(target, len(CLASSES) + 1).permute(0, 3, 1, 2).float()
    overlap = (probabilities * one_hot).sum((0, 2, 3))[1:]
    total = (probabilities + one_hot).sum((0, 2, 3))[1:]
    return nn.functional.cross_entropy(logits, target) + (1 - (2 * overlap + 1) / (total + 1)).mean()


def rule_points(grid_mask: np.ndarray, transform) -> np.ndarray:
    """(MV-1, MV-2, APEX) in image pixels by the data sets' rule on a grid mask (labels 1 LV blood, 2 myocardium)."""
    grid_points = derive_lax_landmarks(grid_mask, pixel_spacing_mm=(GRID.pixel_mm, GRID.pixel_mm))
    return transform.grid_to_image(grid_points)


def predict_mask(model: nn.Module, grid_image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.from_numpy(grid_image[None, None].astype(np.float32)))
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    return float(2 * ((a == label) & (b == label)).sum() / max(1, (a == label).sum() + (b == label).sum()))


def distances_mm(predicted: np.ndarray, labels: np.ndarray, spacing: tuple[float, float],
                 best_order: bool = False) -> np.ndarray:
    """Distances of MV-1, MV-2, APEX as the evaluation measures them (lax_evaluation: fixed order); with
    ``best_order`` the two mitral points matched in the order that fits better (where the valve is, whichever end
    is called 1: the rule's order depends on the image)."""
    s = np.asarray(spacing)
    straight = np.linalg.norm((predicted - labels) * s, axis=1)
    swapped = np.linalg.norm((predicted[[1, 0, 2]] - labels) * s, axis=1)
    return swapped if best_order and np.nansum(swapped[:2]) < np.nansum(straight[:2]) else straight


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--widths", default="16,32,64,128")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--evaluate-only", action="store_true", help="measure the segmenter.pt already in --out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    slices = load_synthetic_lax(cache_synthetic_lax(N_SLICES, SET_SEED, ("mixed",), FAMILY)[0])
    masks = synthetic_masks(slices)
    images = [normalise_intensity(to_magnitude(s.image)) for s in slices]
    centres = [np.nanmean(s.landmarks_rc, axis=0) for s in slices]
    intensity = default_intensity_augmentation()
    torch.manual_seed(args.train_seed)
    model = UNet(len(CLASSES), tuple(int(w) for w in args.widths.split(",")))  # background + the two tissues
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_indices = np.arange(HELD_OUT, N_SLICES)
    started = time.perf_counter()
    if args.evaluate_only:
        model.load_state_dict(torch.load(args.out / "segmenter.pt")["model"])
    for epoch in range(0 if args.evaluate_only else args.epochs):
        model.train()
        order = np.random.default_rng([args.train_seed, epoch]).permutation(train_indices)
        losses = []
        for batch in np.array_split(order, len(order) // 16):
            grid_images, grid_masks = [], []
            for index in batch:
                rng = np.random.default_rng([args.train_seed, epoch, int(index)])
                grid_image, grid_mask, _ = crop(images[index], slices[index].pixel_spacing_mm, centres[index], rng,
                                                masks[index])
                grid_images.append(intensity(grid_image, rng, GRID.pixel_mm))
                grid_masks.append(grid_mask)
            loss = segmentation_loss(model(torch.from_numpy(np.stack(grid_images)[:, None])),
                                     torch.from_numpy(np.stack(grid_masks).astype(np.int64)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        print(f"epoch {epoch + 1}/{args.epochs} loss {np.mean(losses):.4f} {time.perf_counter() - started:.0f} s",
              flush=True)
    model.eval()
    if not args.evaluate_only:
        torch.save({"model": model.state_dict()}, args.out / "segmenter.pt")

    # held-out synthetic slices (crops centred on the true points, which flatters them a little): the rule on the
    # predicted map, and its floor, the rule on the true map through the same crop, both against the rule on the
    # whole true map (what a real label is; the training targets of 3CH slices are geometric points instead)
    synthetic_mm, floor_mm = [], []
    for index in range(HELD_OUT):
        spacing = slices[index].pixel_spacing_mm
        target = derive_lax_landmarks(masks[index], pixel_spacing_mm=spacing)
        grid_image, true_grid_mask, transform = crop(images[index], spacing, centres[index], None, masks[index])
        synthetic_mm.append(distances_mm(rule_points(predict_mask(model, grid_image), transform), target, spacing))
        floor_mm.append(distances_mm(rule_points(true_grid_mask, transform), target, spacing))
    synthetic_mm, floor_mm = np.array(synthetic_mm), np.array(floor_mm)

    # the real subject: the crop where the shipped model puts its points
    detector = Detector(find_model("lax", "cine"), use_bf16=False)
    labelled, _ = mnms2_lax_slices()
    real = []
    for s in labelled:
        found = detector.detect([s.image], s.pixel_spacing_mm, probability_threshold=0.0)[0]
        guess = np.array([(found[n].row, found[n].col) for n in ("MV-1", "MV-2", "APEX")])
        grid_image, true_grid_mask, transform = crop(normalise_intensity(to_magnitude(s.image)), s.pixel_spacing_mm,
                                                     guess.mean(axis=0), None,
                                                     np.where(np.isin(s.mask, (1, 2)), s.mask, 0).astype(np.uint8))
        predicted_mask = predict_mask(model, grid_image)
        points = rule_points(predicted_mask, transform)
        distances = distances_mm(points, s.landmarks_rc, s.pixel_spacing_mm)
        phase = phase_name(s)
        best_order = distances_mm(points, s.landmarks_rc, s.pixel_spacing_mm, best_order=True)
        real.append({"patient": s.patient, "phase": phase,
                     "MV-1_mm": distances[0], "MV-2_mm": distances[1], "APEX_mm": distances[2],
                     "best_order_mm": best_order.tolist(),
                     "floor_mm": distances_mm(rule_points(true_grid_mask, transform), s.landmarks_rc,
                                              s.pixel_spacing_mm).tolist(),
                     "dice_lv_blood": dice(predicted_mask, true_grid_mask, 1),
                     "dice_myocardium": dice(predicted_mask, true_grid_mask, 2)})
        np.save(args.out / f"mask_{s.patient}_{phase}.npy", np.stack([grid_image, predicted_mask, true_grid_mask]))
    summary = {"train_seed": args.train_seed, "epochs": args.epochs,
               "train_seconds": time.perf_counter() - started,
               "synthetic_held_out_mm": [float(np.nanmean(c)) for c in synthetic_mm.T],
               "synthetic_held_out_floor_mm": [float(np.nanmean(c)) for c in floor_mm.T],
               "synthetic_held_out_found_pct": float(100 * np.isfinite(synthetic_mm).all(axis=1).mean()),
               "real": real,
               "real_mean_mm": float(np.mean([[r["MV-1_mm"], r["MV-2_mm"], r["APEX_mm"]] for r in real]))}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
