"""A smaller fine crop for the short-axis models: what it costs in accuracy, chosen on the training split.

The fine U-Net's work grows with the square of its crop (96 px at 1.25 mm = 120 mm, the size it was trained on),
and it is most of the SAX stack's time through the gadget (docs/benchmarks.md). The network is fully
convolutional, so it runs on a smaller crop unchanged: only the field of view around the coarse estimate shrinks.

Rule (written before the runs, docs/benchmarks.md, "A smaller fine crop"): for each model, on its TRAINING split
(fp32, every labelled landmark, threshold aside), a crop size is acceptable when its paired mean distance change
against 96 px has a 95 % upper bound <= +0.05 mm and, at the model's threshold, no landmark's detection rate falls
and no false-positive rate rises by more than 1 percentage point. Ship the smallest acceptable size. The validation
split is measured after the choice and only reported.

    CMR_LANDMARK_BF16=0 python scripts/fine_crop_size_experiment.py --out reports/fine_crop_size.md
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import evaluate_slices, paired_difference
from cmr_landmark.model_store import find_model
from cmr_landmark.training import load_labelled_slices

CROP_SIZES_PX = (96, 88, 80)
MODELS = {  # model name -> (sequence of its slices, sets of its training and validation splits)
    "sax_cine": ("cine", ("acdc", "myops"), ("acdc", "myops", "mnms2")),
    "sax_lge": ("lge", ("mscmrseg_lge", "myops"), ("mscmrseg_lge", "myops")),
}
MAX_MEAN_CHANGE_MM = 0.05  # upper 95 % bound of the paired change
MAX_RATE_CHANGE_PCT = 1.0


def measure(name: str, crop_px: int, slices: list) -> dict:
    spec = find_model("sax", MODELS[name][0], name=name)
    spec = replace(spec, fine_grid=replace(spec.fine_grid, size_px=crop_px))
    evaluation = evaluate_slices(Detector(spec), slices)
    return {"distances_mm": evaluation.distances_mm.ravel(),
            "rows": {row["landmark"]: row for row in evaluation.landmark_rows}}


def rate_changes(candidate: dict, control: dict) -> tuple[float, float]:
    """The largest fall in detection rate and rise in false-positive rate over the landmarks (percentage points)."""
    falls = [control[k]["detection_rate_pct"] - candidate[k]["detection_rate_pct"] for k in control]
    rises = [np.nan_to_num(candidate[k]["false_positive_rate_pct"] - control[k]["false_positive_rate_pct"])
             for k in control]
    return float(max(falls)), float(max(rises))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="markdown table to write")
    args = parser.parse_args(argv)
    lines = ["| model | split | crop (px) | mean (mm) | change vs 96 px (mm, 95 %) | largest detection fall (pt) | "
             "largest false-positive rise (pt) | acceptable |", "|---|---|---|---|---|---|---|---|"]
    for name, (sequence, train_sets, val_sets) in MODELS.items():
        for split, sets in (("train", train_sets), ("val", val_sets)):
            slices = load_labelled_slices(sets, split, "sax", sequence)
            measured = {crop: measure(name, crop, slices) for crop in CROP_SIZES_PX}
            control = measured[CROP_SIZES_PX[0]]
            for crop, result in measured.items():
                mean, half_width = paired_difference(result["distances_mm"], control["distances_mm"])
                fall, rise = rate_changes(result["rows"], control["rows"])
                acceptable = (mean + half_width <= MAX_MEAN_CHANGE_MM and fall <= MAX_RATE_CHANGE_PCT
                              and rise <= MAX_RATE_CHANGE_PCT)
                verdict = ("yes" if acceptable else "no") if split == "train" else "(reported only)"
                lines.append(f"| {name} | {split} ({len(slices)} slices) | {crop} | "
                             f"{np.nanmean(result['distances_mm']):.3f} | {mean:+.3f} +- {half_width:.3f} | "
                             f"{fall:+.1f} | {rise:+.1f} | {verdict} |")
                print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("Fine crop size (`scripts/fine_crop_size_experiment.py`), fp32; distances over every "
                        "labelled landmark, threshold aside; rates at the model's threshold.\n\n"
                        + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
