"""Could a stack's other slices stand in for a slice whose anterior RV insertion was not found?

The AHA segment model is oriented on each slice by the anterior RV insertion's direction from the LV centre
(``measures.anterior_rvi_direction_deg``). Where a slice's A-RVI is missed (mostly at the ends of a stack), the
circular mean of the directions found on the stack's other slices, or the direction of the nearest slice where it
was found, would be the obvious fallbacks. This measures how far each is from every labelled slice's own direction,
beside the slice's own detection (fp32, at each model's threshold; about 2 min on 2 threads):

    CMR_LANDMARK_BF16=0 python scripts/stack_orientation_fallback.py
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from compare_sax_models import evaluation_sets  # a sibling script (scripts/ is on sys.path when run)

from cmr_landmark.datasets import stack_indices
from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import ANGLE_TOLERANCE_DEG, predict
from cmr_landmark.geometry import angle_between_deg, circular_mean_deg
from cmr_landmark.measures import anterior_rvi_direction_deg
from cmr_landmark.model_store import find_model

MODEL_BY_SET = {"cine": "sax_cine", "lge": "sax_lge", "t1_synthetic": "sax_t1"}


def direction_or_none(points_rc: np.ndarray, pixel_spacing_mm: Sequence[float]) -> float | None:
    """The anterior insertion's direction from the LV centre (rows A-RVI and C-LV of ``points_rc``), None where the
    two coincide or one is not there (NaN)."""
    if not np.isfinite(points_rc[[0, 2]]).all():
        return None
    try:
        return anterior_rvi_direction_deg(points_rc[0], points_rc[2], pixel_spacing_mm)
    except ValueError:
        return None


def errors_deg(slices: Sequence, points: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, list]:
    """Per labelled slice, the error (deg) of its own direction where found; of the other slices' mean direction
    and of the nearest slice's (by position; two equally near: their mean) where found and where missed; and
    under ``nothing to borrow`` the indices of the missed slices no other slice of their stack could lend to."""
    errors: dict[str, list] = {key: [] for key in ("own", "mean where found", "nearest where found",
                                                   "mean where missed", "nearest where missed", "nothing to borrow")}
    for indices in stack_indices(slices):
        found = {}
        for i in indices:
            if probability[i, 0] >= threshold and probability[i, 2] >= threshold:
                direction = direction_or_none(points[i], slices[i].pixel_spacing_mm)
                if direction is not None:
                    found[i] = direction
        for i in indices:
            truth = direction_or_none(slices[i].landmarks_rc, slices[i].pixel_spacing_mm)
            if truth is None:  # not labelled
                continue
            others = {j: direction for j, direction in found.items() if j != i}
            where = "where found" if i in found else "where missed"
            if i in found:
                errors["own"].append(angle_between_deg(found[i], truth))
            if not others:
                if i not in found:
                    errors["nothing to borrow"].append(i)
                continue
            gap = min(abs(slices[j].slice_index - slices[i].slice_index) for j in others)
            nearest = [d for j, d in others.items() if abs(slices[j].slice_index - slices[i].slice_index) == gap]
            errors[f"mean {where}"].append(angle_between_deg(circular_mean_deg(list(others.values())), truth))
            errors[f"nearest {where}"].append(angle_between_deg(circular_mean_deg(nearest), truth))
    return errors


def summary(errors: Sequence[float]) -> str:
    values = np.asarray(errors)
    return (f"{len(values)}: {values.mean():.1f} deg, {100 * np.mean(values <= ANGLE_TOLERANCE_DEG):.0f} % within "
            f"{ANGLE_TOLERANCE_DEG:g}") if len(values) else "0"


def main() -> int:
    torch.set_num_threads(2)
    sets = evaluation_sets(tuple(MODEL_BY_SET))
    columns = ("own", "mean where found", "nearest where found", "mean where missed", "nearest where missed")
    print("| set | model | " + " | ".join(columns) + " | missed, nothing to borrow |")
    print("|---" * (len(columns) + 3) + "|")
    for set_name, model in MODEL_BY_SET.items():
        spec = find_model("sax", "any", name=model)
        points, probability = predict(Detector(spec, use_bf16=False), sets[set_name])
        errors = errors_deg(sets[set_name], points, probability, spec.probability_threshold)
        print(f"| {set_name} | {model} | " + " | ".join(summary(errors[c]) for c in columns) +
              f" | {len(errors['nothing to borrow'])} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
