"""Where a short-axis model's RV-insertion error lies: per set, along or across the RV arc, by slice position in
the stack, and on the training split against the validation split (does the model underfit or overfit?).

    python scripts/sax_error_breakdown.py --model sax_cine --out reports/sax_cine_breakdown.md
    python scripts/sax_error_breakdown.py --model sax_lge --sequence lge --datasets mscmrseg_lge,myops \
        --train-datasets mscmrseg_lge,myops --out reports/sax_lge_breakdown.md

Distances are over every labelled landmark, threshold aside (the model-selection figure of training). "Across"
is the component of the error along the line from the labelled LV centre to the labelled insertion point
(negative = the prediction lies nearer the LV centre), "along" the component perpendicular to it, i.e. along the
RV arc. The slice position is the slice index over the stack's slices (0 = first stored slice; which end is the
base differs between sets).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cmr_landmark.datasets import dataset_names
from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import evaluate_slices, markdown_table
from cmr_landmark.model_store import find_model
from cmr_landmark.training import load_labelled_slices

POSITION_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0001)


def errors_mm(detector: Detector, slices: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 2) error vectors in mm (prediction - label; NaN where not labelled) and labels (N, K, 2) in mm."""
    evaluation = evaluate_slices(detector, slices)
    spacing = evaluation.spacing_mm[:, None]
    return (evaluation.predicted_rc - evaluation.truth_rc) * spacing, evaluation.truth_rc * spacing


def relative_positions(slices: Sequence) -> np.ndarray:
    """Each slice's index over the largest index of its stack (same set, patient and phase), 0..1. Every slice of a
    labelled stack is loaded, those without landmarks included, so that is the stack's own extent."""
    stacks: dict[tuple, int] = {}
    for s in slices:
        key = (s.dataset, s.patient, s.phase)
        stacks[key] = max(stacks.get(key, 0), s.slice_index)
    return np.array([s.slice_index / stacks[(s.dataset, s.patient, s.phase)]
                     if stacks[(s.dataset, s.patient, s.phase)] else 0.5 for s in slices])


def summary_row(label: str, distances: np.ndarray) -> dict:
    distances = distances[np.isfinite(distances)]
    return {"group": label, "landmarks": int(distances.size),
            "mean_mm": float(distances.mean()) if distances.size else float("nan"),
            "median_mm": float(np.median(distances)) if distances.size else float("nan")}


def breakdown(detector: Detector, val: Sequence, train: Sequence) -> str:
    names = detector.spec.landmarks
    error, truth = errors_mm(detector, val)
    distance = np.linalg.norm(error, axis=2)
    sections = []

    rows = []
    for k, name in enumerate(names):
        rows.append(summary_row(f"{name}, all validation", distance[:, k]))
        for dataset in sorted({s.dataset for s in val}):
            chosen = np.array([s.dataset == dataset for s in val])
            rows.append(summary_row(f"{name}, {dataset}", distance[chosen, k]))
    sections.append("### Per set\n\n" + markdown_table(rows))

    rows = []
    centre = truth[:, names.index("C-LV")]
    for k, name in enumerate(names):
        if name == "C-LV":
            continue
        usable = np.isfinite(error[:, k, 0]) & np.isfinite(centre[:, 0])
        radial = truth[usable, k] - centre[usable]
        radial /= np.linalg.norm(radial, axis=1, keepdims=True)
        across = (error[usable, k] * radial).sum(axis=1)
        along = error[usable, k, 0] * -radial[:, 1] + error[usable, k, 1] * radial[:, 0]
        rows.append({"landmark": name, "landmarks": int(usable.sum()), "across_mean_mm": float(across.mean()),
                     "across_sd_mm": float(across.std()), "along_mean_mm": float(along.mean()),
                     "along_sd_mm": float(along.std())})
    sections.append("### Across and along the RV arc (about the labelled LV centre)\n\n" + markdown_table(rows))

    rows = []
    position = relative_positions(val)
    for k, name in enumerate(names):
        for low, high in zip(POSITION_BINS[:-1], POSITION_BINS[1:], strict=True):
            chosen = (position >= low) & (position < high)
            rows.append(summary_row(f"{name}, slice position {low:.1f}-{min(high, 1.0):.1f}", distance[chosen, k]))
    sections.append("### By slice position in the stack\n\n" + markdown_table(rows))

    train_distance = np.linalg.norm(errors_mm(detector, train)[0], axis=2)
    rows = []
    for k, name in enumerate(names):
        rows.append(summary_row(f"{name}, training split", train_distance[:, k]))
        rows.append(summary_row(f"{name}, validation split", distance[:, k]))
    sections.append("### Training split against validation split\n\n" + markdown_table(rows))
    return f"## {detector.spec.name}: where the error lies\n\n" + "\n\n".join(sections) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="manifest name, e.g. sax_cine")
    parser.add_argument("--sequence", default="cine")
    parser.add_argument("--datasets", default="acdc,myops,mnms2", help="validation sets (their val split)")
    parser.add_argument("--train-datasets", default="acdc,myops", help="training sets (their train split)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    detector = Detector(find_model("sax", args.sequence, name=args.model), use_bf16=False)
    val = load_labelled_slices(dataset_names(args.datasets), "val", "sax", args.sequence)
    train = load_labelled_slices(dataset_names(args.train_datasets), "train", "sax", args.sequence)
    text = breakdown(detector, val, train)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
