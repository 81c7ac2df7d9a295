"""Train the long-axis cascade on synthetic slices (cmr_landmark.synth.lax) with the project's training pipeline.

    cache synthetic slices per variant (npz under cache_dir()) -> training.train_stage for the coarse and the
    fine U-Net (in parallel processes: the fine stage trains on crops around the true landmarks, so it does not
    wait for the coarse one) -> run folder <out>/<variant>/{coarse,fine}_best.pt -> training.load_cascade.

Model selection uses held-out synthetic slices only: the one labelled real long-axis subject (M&Ms-2 001) is
kept for the final measurement (cmr_landmark.synth.evaluate_lax), never for training or choosing an epoch.

    python -m cmr_landmark.synth.train_lax --variants mixed,bssfp --slices 4000 --workers 16 \
        --epochs-coarse 30 --epochs-fine 25 --out runs/lax
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..augment import sample_on_grid
from ..heatmaps import decode_heatmaps
from ..training import (
    HeatmapDataset,
    coarse_predictions,
    distances_mm,
    mean_distance_mm,
    setup_distributed,
    train_stage,
)
from .lax import VARIANTS, CachedLaxSlice, cache_synthetic_lax, load_synthetic_lax

VALIDATION_FRACTION = 0.08  # of the synthetic slices, held out to choose epochs


def fine_validation(model: nn.Module, slices: Sequence[CachedLaxSlice], device: torch.device) -> tuple[float, dict]:
    """Mean distance (mm) of the fine stage alone on crops centred on the true landmarks' mean (no augmentation)."""
    dataset = HeatmapDataset(slices, "lax", "fine", augment=False)
    model.eval()
    errors = []
    with torch.inference_mode():
        for start in range(0, len(dataset), 64):
            indices = range(start, min(start + 64, len(dataset)))
            x = torch.stack([dataset[i][0] for i in indices]).to(device)
            points, _ = decode_heatmaps(torch.softmax(model(x).float(), dim=1).cpu())
            for offset, index in enumerate(indices):
                truth_grid = grid_truth(dataset, index)
                errors.append(distances_mm(points[offset], truth_grid, np.full(2, dataset.grid.pixel_mm)))
    errors = np.stack(errors)
    return float(np.nanmean(errors)), {"per_landmark_mm": np.nanmean(errors, axis=0).tolist()}


def grid_truth(dataset: HeatmapDataset, index: int) -> np.ndarray:
    """The true landmarks of item ``index`` in the fine grid's pixels (as the un-augmented item samples it)."""
    _, points, _ = sample_on_grid(
        dataset.images[index], dataset.spacings[index], dataset.landmarks[index], dataset.grid, "lax",
        centre_rc=dataset.centre_rc(index, None),
    )
    return points


def _train_one_stage(args: tuple[str, str, int, int, int, Path, int, int]) -> dict:
    variant, stage, n_slices, seed, epochs, out_dir, threads, batch_size = args
    torch.set_num_threads(threads)
    slices = load_synthetic_lax(cache_synthetic_lax(n_slices, seed, variant))
    n_val = max(1, int(VALIDATION_FRACTION * len(slices)))
    train, val = slices[n_val:], slices[:n_val]
    device = setup_distributed()
    if stage == "coarse":
        def validate(model: nn.Module) -> tuple[float, dict]:
            mean_mm, per_landmark = mean_distance_mm(coarse_predictions(model, val, device), val)
            return mean_mm, {"per_landmark_mm": per_landmark}
    else:
        def validate(model: nn.Module) -> tuple[float, dict]:
            return fine_validation(model, val, device)
    _, metrics = train_stage(stage, train, val, "lax", out_dir, epochs, validate, batch_size=batch_size, seed=seed)
    return {"variant": variant, "stage": stage, **metrics}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmr_landmark.synth.train_lax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="mixed", help=f"comma-separated, of {sorted(VARIANTS)}")
    parser.add_argument("--slices", type=int, default=4000, help="synthetic slices per variant (8%% held out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes synthesizing the data")
    parser.add_argument("--epochs-coarse", type=int, default=30)
    parser.add_argument("--epochs-fine", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training process")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    for variant in variants:
        print(f"synthesizing {args.slices} slices of variant {variant!r}", flush=True)
        cache_synthetic_lax(args.slices, args.seed, variant, workers=args.workers)
    jobs = [
        (variant, stage, args.slices, args.seed, epochs, args.out / variant, args.threads, args.batch_size)
        for variant in variants
        for stage, epochs in (("coarse", args.epochs_coarse), ("fine", args.epochs_fine))
    ]
    # one process per stage and variant: stages are independent (the fine stage crops around the truth)
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        results = pool.map(_train_one_stage, jobs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "synthetic_validation.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(json.dumps(results, default=float), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
