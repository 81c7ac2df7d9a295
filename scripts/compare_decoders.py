"""How a shipped model's fine-stage points should be read off its heatmaps: the peak (parabola-refined) against the
centre of mass within a window around it, on the training split (where the radius is chosen) and on the
validation split (where the choice is checked).

    python scripts/compare_decoders.py --model sax_cine --out reports/decoders_sax_cine.md
    python scripts/compare_decoders.py --model sax_lge --sequence lge --datasets mscmrseg_lge,myops \
        --train-datasets mscmrseg_lge,myops --out reports/decoders_sax_lge.md
    python scripts/compare_decoders.py --model sax_any --sequence cine --out reports/decoders_sax_any_cine.md
    python scripts/compare_decoders.py --model sax_t1 --synthetic-t1 --out reports/decoders_sax_t1.md

``--synthetic-t1``: the slices are synthetic T1 maps (cmr_landmark.synth.t1) of the cine and LGE slices of each
split, as scripts/compare_sax_models.py makes them (seed 1 for training, 3 for validation).

Distances are over every labelled landmark, threshold aside (the decoder moves points, not peak probabilities).
The mean is what the training issue's targets are stated in; the median is given because the window helps most
on the spread-out maps that make the mean's tail. The script runs fp32, so that the figures do not depend on the CPU
(bf16 autocast moves a few ambiguous points by millimetres).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from compare_sax_models import EVALUATION_SEED_T1  # sibling scripts (scripts/ is on sys.path when run)
from train_sax_synthetic import SYNTHESIS_SEED, real_sax_slices

from cmr_landmark.datasets import dataset_names
from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import evaluate_slices, markdown_table
from cmr_landmark.model_store import ModelSpec, find_model
from cmr_landmark.synth.t1 import synthetic_t1_slices
from cmr_landmark.training import load_labelled_slices

# the maps the T1 model was trained on and judged on
T1_SEEDS = {"train": SYNTHESIS_SEED["train"], "val": EVALUATION_SEED_T1}


def comparison_rows(spec: ModelSpec, radii_mm: Sequence[float | None], splits: dict[str, list]) -> list[dict]:
    """One row per split and decoder: per-landmark mean/median distance (mm) and the paired change against the
    first decoder of ``radii_mm`` (None = the peak)."""
    detectors = {radius: Detector(replace(spec, fine_centroid_radius_mm=radius), use_bf16=False)
                 for radius in radii_mm}
    rows = []
    for split, slices in splits.items():
        baseline = None
        for radius, detector in detectors.items():
            distance = evaluate_slices(detector, slices).distances_mm  # NaN where not labelled
            if baseline is None:
                baseline = distance
            row = {"split": split, "decoder": "peak" if radius is None else f"centroid {radius:g} mm"}
            for k, name in enumerate(spec.landmarks):
                row[f"{name}_mean_mm"] = float(np.nanmean(distance[:, k]))
                row[f"{name}_median_mm"] = float(np.nanmedian(distance[:, k]))
            labelled = np.isfinite(distance)
            row["all_mean_mm"] = float(distance[labelled].mean())
            row["paired_vs_peak_mm"] = float((distance - baseline)[labelled].mean())
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="manifest name, e.g. sax_cine")
    parser.add_argument("--sequence", default="cine", help="sequence of the slices to measure on")
    parser.add_argument("--datasets", default="acdc,myops,mnms2", help="validation sets (their val split)")
    parser.add_argument("--train-datasets", default="acdc,myops", help="training sets (their train split)")
    parser.add_argument("--radii-mm", default="none,5,10,15,20,25",
                        help="comma-separated window radii in mm; 'none' is the peak")
    parser.add_argument("--synthetic-t1", action="store_true",
                        help="measure on synthetic T1 maps of the cine and LGE splits instead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    radii = [None if r == "none" else float(r) for r in args.radii_mm.split(",")]
    radii = [None] + [r for r in dict.fromkeys(radii) if r is not None]  # the paired column is against the peak
    spec = find_model("sax", args.sequence, name=args.model)
    if args.synthetic_t1:  # the sources are the T1 training's: --datasets / --train-datasets do not apply
        splits = {split: synthetic_t1_slices(real_sax_slices(split), seed) for split, seed in T1_SEEDS.items()}
    else:
        splits = {
            "train": load_labelled_slices(dataset_names(args.train_datasets), "train", "sax", args.sequence),
            "val": load_labelled_slices(dataset_names(args.datasets), "val", "sax", args.sequence),
        }
    contrast = "synthetic T1 maps" if args.synthetic_t1 else args.sequence
    text = (f"## {args.model} on {contrast}: peak against window centroid\n\n"
            f"{markdown_table(comparison_rows(spec, radii, splits))}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
