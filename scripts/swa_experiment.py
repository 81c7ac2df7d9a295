"""Stochastic weight averaging along one run of `sax_cine`'s fine stage (docs/training.md, "Weights averaged along
one run").

From the shipped file's embedded training state, the fine stage trains on with the shipped recipe's loss (heatmap
+ distance term, 0.3 per mm) at a constant learning rate, one `train_stage` epoch at a time, and its weights are
averaged after every epoch. Nothing in the loop looks at the validation split (no epoch is chosen, no plateau
halves the rate), so the validation figures are as honest as the training-split ones. BatchNorm statistics of
the average are then recomputed over augmented training items, as SWA prescribes. Each candidate is exported as
`sax_cine` is (coarse stage unchanged, mirror averaging, its threshold) and measured on both splits, paired per
landmark against the shipped file. About 15 min on 2 threads for 12 epochs:

    CMR_LANDMARK_BF16=0 python scripts/swa_experiment.py --epochs 12 --out runs/swa
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import update_bn

from cmr_landmark.config import COARSE_GRID, FINE_GRID_BY_VIEW, REPO_ROOT
from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import evaluate_slices, paired_difference
from cmr_landmark.export import export_cascade, load_training_state
from cmr_landmark.model_store import find_model
from cmr_landmark.network import LandmarkCascade, UNet, unet_widths
from cmr_landmark.training import HeatmapDataset, load_labelled_slices, train_stage


def unet(state: dict) -> UNet:
    network = UNet(3, unet_widths(state))
    network.load_state_dict(state)
    return network.eval()


def with_training_statistics(state: dict, slices: list, seed: int) -> dict:
    """``state`` with its BatchNorm running statistics recomputed over one augmented pass of ``slices``."""
    network = unet(state)
    loader = torch.utils.data.DataLoader(HeatmapDataset(slices, "sax", "fine", augment=True, seed=seed),
                                         batch_size=24, shuffle=False)
    update_bn(loader, network)
    return network.state_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2.5e-4)
    parser.add_argument("--out", type=Path, required=True, help="run folder (resumable: finished epochs are kept)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    shipped_path = REPO_ROOT / "models" / "sax_cine.pt"
    shipped = load_training_state(shipped_path)
    train = load_labelled_slices(["acdc", "myops"], "train", "sax", "cine")
    val = load_labelled_slices(["acdc", "myops", "mnms2"], "val", "sax", "cine")

    args.out.mkdir(parents=True, exist_ok=True)
    epoch_states = []
    for epoch in range(1, args.epochs + 1):
        saved = args.out / f"fine_epoch{epoch}.pt"
        if not saved.exists():
            train_stage("fine", train, [], "sax", args.out, epoch, lambda _model: (0.0, {}),
                        init_state=shipped["fine"], lr=args.lr, seed=1, distance_weight=0.3,
                        lr_hold_epochs=args.epochs)
            weights = torch.load(args.out / "fine_last.pt", map_location="cpu", weights_only=False)["model"]
            torch.save(weights, saved)
        epoch_states.append(torch.load(saved, map_location="cpu", weights_only=True))
    average = {key: torch.stack([state[key].float() for state in epoch_states]).mean(0)
               if value.is_floating_point() else value for key, value in epoch_states[-1].items()}
    candidates = {"shipped": shipped["fine"], "last epoch": epoch_states[-1],
                  f"average of {args.epochs} epochs": with_training_statistics(average, train, seed=99)}

    spec = find_model("sax", "cine", name="sax_cine")
    folder = Path(tempfile.mkdtemp())
    distances = {}
    print("| fine stage | split | mean mm (every labelled landmark) | A-RVI / P-RVI / C-LV mm | detection % | "
          "false positives % | paired vs shipped mm |")
    print("|---|---|---|---|---|---|---|")
    for label, fine in candidates.items():
        cascade = LandmarkCascade(unet(shipped["coarse"]), unet(fine)).eval()
        export_cascade(cascade, "candidate", "sax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["sax"],
                       spec.probability_threshold, folder, mirror_average=True, mirror_pooling=spec.mirror_pooling)
        detector = Detector(find_model("sax", "cine", name="candidate", folder=folder))
        for split, slices in (("training", train), ("validation", val)):
            evaluation = evaluate_slices(detector, slices)
            distances[label, split] = evaluation.distances_mm
            per_landmark = " / ".join(f"{v:.2f}" for v in np.nanmean(evaluation.distances_mm, axis=0))
            rows = evaluation.landmark_rows
            detection = " / ".join(f"{row['detection_rate_pct']:.1f}" for row in rows)
            false_positives = " / ".join(f"{row['false_positive_rate_pct']:.1f}" for row in rows)
            mean, half_width = paired_difference(evaluation.distances_mm, distances["shipped", split])
            print(f"| {label} | {split} | {np.nanmean(evaluation.distances_mm):.3f} | {per_landmark} | {detection} | "
                  f"{false_positives} | {mean:+.3f} +- {half_width:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
