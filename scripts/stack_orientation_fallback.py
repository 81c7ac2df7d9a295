"""Could a stack's other slices stand in for a slice whose anterior RV insertion was not found?

The AHA segment model is oriented on each slice by the anterior RV insertion's direction from the LV centre
(``measures.anterior_rvi_direction_deg``). Where a slice's A-RVI is missed (mostly at the ends of a stack), the
circular mean of the directions found on the stack's other slices would be the obvious fallback. This measures
how far that mean is from each labelled slice's own direction, beside the slice's own detection (fp32, at each
model's threshold; about 2 min on 2 threads):

    CMR_LANDMARK_BF16=0 python scripts/stack_orientation_fallback.py
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from compare_sax_models import evaluation_sets  # a sibling script (scripts/ is on sys.path when run)

from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import ANGLE_TOLERANCE_DEG, predict
from cmr_landmark.geometry import angle_between_deg, circular_mean_deg
from cmr_landmark.measures import anterior_rvi_direction_deg
from cmr_landmark.model_store import find_model

MODEL_BY_SET = {"cine": "sax_cine", "lge": "sax_lge", "t1_synthetic": "sax_t1"}


def errors_deg(slices: Sequence, points: np.ndarray, probability: np.ndarray, threshold: float
               ) -> tuple[list[float], list[float], list[float], int]:
    """Per labelled slice: its own direction's error where found, the other slices' mean direction's error where
    found and where missed, and how many missed slices had no other slice to borrow from."""
    stacks: dict[tuple, list[int]] = {}
    for index, s in enumerate(slices):
        stacks.setdefault((s.dataset, s.patient, s.phase), []).append(index)
    own, others_where_found, others_where_missed, nothing_to_borrow = [], [], [], 0
    for indices in stacks.values():
        found = {i: anterior_rvi_direction_deg(points[i, 0], points[i, 2], slices[i].pixel_spacing_mm)
                 for i in indices if probability[i, 0] >= threshold and probability[i, 2] >= threshold}
        for i in indices:
            label = slices[i].landmarks_rc
            if not np.isfinite(label[[0, 2]]).all():
                continue
            truth = anterior_rvi_direction_deg(label[0], label[2], slices[i].pixel_spacing_mm)
            others = [direction for j, direction in found.items() if j != i]
            borrowed = angle_between_deg(circular_mean_deg(others), truth) if others else None
            if i in found:
                own.append(angle_between_deg(found[i], truth))
                if borrowed is not None:
                    others_where_found.append(borrowed)
            elif borrowed is not None:
                others_where_missed.append(borrowed)
            else:
                nothing_to_borrow += 1
    return own, others_where_found, others_where_missed, nothing_to_borrow


def summary(errors: Sequence[float]) -> str:
    values = np.asarray(errors)
    return (f"{len(values)}: {values.mean():.1f} deg, {100 * np.mean(values <= ANGLE_TOLERANCE_DEG):.0f} % within "
            f"{ANGLE_TOLERANCE_DEG:g}") if len(values) else "0"


def main() -> int:
    torch.set_num_threads(2)
    sets = evaluation_sets(tuple(MODEL_BY_SET))
    print("| set | model | own direction, where found | the other slices' mean, where found | the other slices' "
          "mean, where missed | missed, nothing to borrow |")
    print("|---|---|---|---|---|---|")
    for set_name, model in MODEL_BY_SET.items():
        spec = find_model("sax", "any", name=model)
        points, probability = predict(Detector(spec, use_bf16=False), sets[set_name])
        own, where_found, where_missed, nothing = errors_deg(sets[set_name], points, probability,
                                                            spec.probability_threshold)
        print(f"| {set_name} | {model} | {summary(own)} | {summary(where_found)} | {summary(where_missed)} | "
              f"{nothing} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
