"""Detection inside each landmark's labelled run of slices and at its ends, per evaluation set.

The derived labels flip at the ends of a stack's labelled run (where an annotator stopped drawing the RV;
docs/status.md, "Presence"), so detection there says more about the labels than about the model. This splits
every labelled landmark of every set by whether it lies at an end of its run (a neighbouring slice without the
label, or the stack's first or last slice) or inside it, and gives the detection rate of each at the model's
threshold; then, of the landmarks missed inside the runs, whether the point was in place and only below the
threshold; and the detection by the public set each slice comes from, and on the MyoPS slices whose labels mark
scar or oedema and on those whose labels do not (fp32; about 3 min for the seven sets on 2 threads; a training
run is measured by name once `compare_sax_models.py --ship` has put it into a copy of models/ that
CMR_LANDMARK_MODELS points at):

    CMR_LANDMARK_BF16=0 python scripts/detection_by_run_position.py sax_any
    # the synthetic maps with the RV free wall as myocardium (docs/t1.md)
    CMR_LANDMARK_BF16=0 python scripts/detection_by_run_position.py sax_any \
        --sets t1_synthetic_rv_wall,t2_map_rv_wall,t2star_map_rv_wall,ecv_map_rv_wall,t2w_black_blood_rv_wall
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np
import torch
from compare_sax_models import (  # a sibling script (scripts/ is on sys.path when run)
    SET_NAMES,
    evaluation_sets,
    names_option,
)

from cmr_landmark.config import LANDMARKS_BY_VIEW
from cmr_landmark.datasets import stack_indices
from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import predict
from cmr_landmark.geometry import distances_mm
from cmr_landmark.model_store import find_model
from cmr_landmark.synth.contrast import has_lesions

NEAR_MM = 5.0  # a missed point this close to its label was in place, only below the threshold
SETS = ("cine", "lge", "t1_synthetic", "t2_map", "t2star_map", "ecv_map", "t2w_black_blood")


def at_run_end(slices: Sequence) -> np.ndarray:
    """(N, K) True where a labelled landmark lies at an end of its labelled run: the slice before or after it in its
    stack (by slice position) lacks the label, or there is none."""
    labelled = np.array([np.isfinite(s.landmarks_rc).all(axis=1) for s in slices])
    end = np.zeros_like(labelled)
    for indices in stack_indices(slices):
        order = sorted(indices, key=lambda i: slices[i].slice_index)
        for position, i in enumerate(order):
            neighbours = [order[p] for p in (position - 1, position + 1) if 0 <= p < len(order)]
            at_end = len(neighbours) < 2 or np.array([~labelled[j] for j in neighbours]).any(axis=0)
            end[i] = labelled[i] & at_end
    return end


def miss_summary(probability: np.ndarray, distance_mm: np.ndarray) -> str:
    """'count: median peak probability / share within NEAR_MM of the label / median distance' of missed points."""
    if not len(probability):
        return "0"
    return (f"{len(probability)}: {np.median(probability):.2f} / {100 * np.mean(distance_mm <= NEAR_MM):.0f} % / "
            f"{np.median(distance_mm):.1f}")


def origin_groups(slices: Sequence) -> dict[str, np.ndarray]:
    """Slice masks by the public set each slice (or the real slice a synthetic one is made of) comes from, and the
    MyoPS slices split by whether their labels mark scar or oedema (which the synthetic T1 maps and the clinical
    contrasts draw with their own tissue values)."""
    origin = np.array([s.dataset for s in slices])
    lesion = np.array([has_lesions(s.pathology) for s in slices])
    groups = {name: origin == name for name in dict.fromkeys(origin)}
    if (origin == "myops").any():
        groups["myops, scar or oedema"] = (origin == "myops") & lesion
        groups["myops, neither"] = (origin == "myops") & ~lesion
    return groups


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a short-axis model in the manifest")
    parser.add_argument("--sets", default=",".join(SETS),
                        help="comma-separated evaluation sets of scripts/compare_sax_models.py (default: %(default)s)")
    args = parser.parse_args(argv)
    sets = names_option(parser, "--sets", args.sets, SET_NAMES)
    torch.set_num_threads(2)
    spec = find_model("sax", "any", name=args.model)
    detector = Detector(spec, use_bf16=False)
    landmarks = LANDMARKS_BY_VIEW["sax"]
    detection_rows, miss_rows, origin_rows = [], [], []
    for name, slices in evaluation_sets(sets).items():
        points, probability = predict(detector, slices)
        found = probability >= spec.probability_threshold
        labelled = np.array([np.isfinite(s.landmarks_rc).all(axis=1) for s in slices])
        end = at_run_end(slices)
        inside = labelled & ~end
        distances = distances_mm(points, np.stack([s.landmarks_rc for s in slices]),
                                 np.array([s.pixel_spacing_mm for s in slices])[:, None, :])

        def rate(mask: np.ndarray, found: np.ndarray = found) -> str:
            return f"{100 * found[mask].mean():.1f} ({mask.sum()})"

        per_landmark = [f"{100 * found[inside[:, k], k].mean():.1f} / {100 * found[end[:, k], k].mean():.1f}"
                        for k in range(len(landmarks))]
        detection_rows.append(f"| {name} | {rate(labelled)} | {rate(inside)} | {rate(end)} | "
                              + " | ".join(per_landmark) + " |")
        # a miss inside a run: the point in place but below the threshold, or the landmark not seen at all?
        missed = inside & ~found
        miss_rows.append(f"| {name} | " + " | ".join(miss_summary(probability[missed[:, k], k],
                                                                 distances[missed[:, k], k])
                                                    for k in range(len(landmarks))) + " |")
        origin_rows.append(f"| {name} | " + " | ".join(
            f"{group}: {rate(labelled & mask[:, None])}, A-RVI {100 * found[labelled[:, 0] & mask, 0].mean():.0f}"
            for group, mask in origin_groups(slices).items() if labelled[mask, 0].any()) + " |")
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(f"{args.model} at {spec.probability_threshold:g}: detection % (labelled landmarks)\n")
    print("| set | all | inside runs | at run ends | " + " | ".join(f"{name} inside / ends" for name in landmarks)
          + " |")
    print("|---" * (4 + len(landmarks)) + "|")
    print("\n".join(detection_rows))
    print(f"\nMissed inside the runs: count: median peak probability / share within {NEAR_MM:g} mm of the label / "
          "median distance (mm)\n")
    print("| set | " + " | ".join(landmarks) + " |")
    print("|---" * (1 + len(landmarks)) + "|")
    print("\n".join(miss_rows))
    print("\nBy the public set the slices come from: detection % (labelled landmarks), A-RVI detection %\n")
    print("| set | groups |\n|---|---|")
    print("\n".join(origin_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
