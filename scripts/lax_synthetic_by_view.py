"""Long-axis models on the held-out synthetic slices, per view (4CH, 2CH, 3CH): mean distance (mm) per landmark.

No labelled real 2- or 3-chamber image exists here, so the synthetic slices are the only measure of those views.
Members as in ``lax_ensemble_experiment.py``: ``shipped`` (models/lax_cine.pt) or a ``train_lax`` run folder
(``<out>/mixed``); each runs with the shipped model's inference settings, fp32.

    python scripts/lax_synthetic_by_view.py --member shipped --member runs/lax_t2/both_s1/mixed
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmr_landmark.config import LAX_LANDMARKS
from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import evaluate_slices
from cmr_landmark.lax_evaluation import HELD_OUT_SYNTHETIC, held_out_synthetic_slices
from cmr_landmark.model_store import find_model
from cmr_landmark.synth.lax import ANATOMY_RANGES, LAX_VIEWS
from cmr_landmark.training import load_cascade


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", action="append", required=True, help="'shipped' or a train_lax run folder")
    parser.add_argument("--family", default=HELD_OUT_SYNTHETIC["family"], choices=sorted(ANATOMY_RANGES),
                        help=f"anatomy of the held-out slices (default {HELD_OUT_SYNTHETIC['family']})")
    args = parser.parse_args(argv)
    slices = held_out_synthetic_slices(args.family)
    views = np.array([s.lax_view for s in slices])
    detector = Detector(find_model("lax", "cine", name="lax_cine"), use_bf16=False)
    shipped = detector.model
    print(f"{len(slices)} held-out synthetic slices ({args.family}, seed {HELD_OUT_SYNTHETIC['seed']}): mean mm "
          f"{' / '.join(LAX_LANDMARKS)} per view")
    print("| member | " + " | ".join(f"{view} ({(views == view).sum()})" for view in LAX_VIEWS) + " | all |")
    print("|---" * (len(LAX_VIEWS) + 2) + "|")
    for member in args.member:
        detector.model = shipped if member == "shipped" else load_cascade(Path(member), "lax").eval()
        distances = evaluate_slices(detector, slices, 0.0).distances_mm
        cells = [" / ".join(f"{value:.2f}" for value in np.nanmean(distances[views == view], axis=0))
                 for view in LAX_VIEWS]
        print(f"| {member} | " + " | ".join(cells) + f" | {np.nanmean(distances):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
