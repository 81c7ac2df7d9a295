"""Weight averages of `sax_any` with the sequence-specific short-axis models, on the TRAINING split (docs/t1.md).

All four short-axis models descend from one `sax_cine` release by fine-tuning; this averages their embedded
training states key by key (BatchNorm statistics included), exports each mix as `sax_any` is exported, and
measures it on training-split cine, LGE and new random- and clinical-contrast draws (fp32, threshold aside for the
distances; detection at `sax_any`'s threshold). About 5 min on 2 threads:

    CMR_LANDMARK_BF16=0 python scripts/weight_average_experiment.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from cmr_landmark.config import COARSE_GRID, FINE_GRID_BY_VIEW, REPO_ROOT
from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import evaluate_slices
from cmr_landmark.export import export_cascade, load_training_state
from cmr_landmark.model_store import find_model
from cmr_landmark.network import LandmarkCascade, UNet, unet_widths
from cmr_landmark.synth.clinical_contrasts import CLINICAL_CONTRASTS, clinical_contrast_slices
from cmr_landmark.synth.contrast import random_contrast_slices
from cmr_landmark.training import STAGES, load_labelled_slices

MIXES = {
    "sax_any": {"sax_any": 1.0},
    "sax_cine": {"sax_cine": 1.0},
    "sax_lge": {"sax_lge": 1.0},
    "0.7 sax_any + 0.3 sax_cine": {"sax_any": 0.7, "sax_cine": 0.3},
    "0.5 sax_any + 0.5 sax_cine": {"sax_any": 0.5, "sax_cine": 0.5},
    "a third of each": {"sax_any": 1 / 3, "sax_cine": 1 / 3, "sax_lge": 1 / 3},
}


def averaged_cascade(states: dict, mix: dict[str, float]) -> LandmarkCascade:
    stages = {}
    for stage in STAGES:
        reference = states["sax_any"][stage]
        weights = {key: sum(share * states[name][stage][key] for name, share in mix.items())
                   if value.is_floating_point() else value for key, value in reference.items()}
        stages[stage] = UNet(3, unet_widths(weights))
        stages[stage].load_state_dict(weights)
    return LandmarkCascade(stages["coarse"], stages["fine"]).eval()


def main() -> int:
    torch.set_num_threads(2)
    states = {name: load_training_state(REPO_ROOT / "models" / f"{name}.pt") for name in ("sax_any", "sax_cine",
                                                                                          "sax_lge")}
    any_spec = find_model("sax", "any", name="sax_any")
    cine = load_labelled_slices(["acdc", "myops"], "train", "sax", "cine")[::4]
    lge = load_labelled_slices(["mscmrseg_lge", "myops"], "train", "sax", "lge")
    both = cine[::2] + lge[::2]
    sets = {"cine": cine, "LGE": lge, "random contrast": random_contrast_slices(both, seed=11),
            "clinical contrasts": [s for kind in CLINICAL_CONTRASTS
                                   for s in clinical_contrast_slices(both[::4], kind, seed=12)]}
    print("| weights | " + " | ".join(f"{name} ({len(slices)})" for name, slices in sets.items()) + " |")
    print("|---" * (len(sets) + 1) + "|")
    folder = Path(tempfile.mkdtemp())
    for label, mix in MIXES.items():
        export_cascade(averaged_cascade(states, mix), "candidate", "sax", "any", COARSE_GRID, FINE_GRID_BY_VIEW["sax"],
                       any_spec.probability_threshold, folder, mirror_average=True,
                       mirror_pooling=any_spec.mirror_pooling)
        detector = Detector(find_model("sax", "any", name="candidate", folder=folder))
        cells = []
        for slices in sets.values():
            evaluation = evaluate_slices(detector, slices)
            found = evaluation.detected & evaluation.labelled
            cells.append(f"{np.nanmean(evaluation.distances_mm):.2f} mm, "
                         f"{100 * found.sum() / evaluation.labelled.sum():.0f} %")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
