"""How steady is the threshold rule of `compare_sax_models.py --ship` (docs/t1.md, "The threshold rule")?

Each named short-axis model runs (fp32) once on the images `--ship` chooses its threshold on (every labelled SAX
training slice as the kind of image the model is for); the rule (`evaluation.choose_threshold`, detection minus
false-positive rate) is then applied to all of them and to bootstrap draws of 400 slices, the size the rule used
before. About 30 s per model on 2 threads:

    CMR_LANDMARK_BF16=0 python scripts/threshold_stability.py sax_any
    CMR_LANDMARK_BF16=0 CMR_LANDMARK_MODELS=<folder with arms> python scripts/threshold_stability.py sax_any G R
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from compare_sax_models import threshold_images  # a sibling script (scripts/ is on sys.path when run)

from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import choose_threshold, evaluate_slices
from cmr_landmark.model_store import find_model

DRAW_SLICES = 400
DRAWS = 200


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="short-axis model names in the manifest")
    parser.add_argument("--seed", type=int, default=0, help="of the bootstrap draws")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    images: dict[str, list] = {}
    print(f"| model | on all | {DRAW_SLICES}-slice draws: 5th / 50th / 95th percentile | manifest |")
    print("|---|---|---|---|")
    for name in args.models:
        spec = find_model("sax", "any", name=name)
        if spec.view != "sax" or spec.sequence not in ("any", "t1"):
            # sax_cine and sax_lge got theirs from `cmr-landmark export`, on their own sequence's training slices
            parser.error(f"{name} ({spec.view}/{spec.sequence}): the rule measured here is --ship's, for the "
                         "short-axis 'any' and 't1' models")
        if spec.sequence not in images:  # made once per kind (setdefault would make them again for every model)
            images[spec.sequence] = threshold_images(spec.sequence)
        slices = images[spec.sequence]
        evaluation = evaluate_slices(Detector(spec, use_bf16=False), slices, 0.5)
        rng = np.random.default_rng(args.seed)
        draws = []
        for _ in range(DRAWS):  # rows resampled with replacement: what another 400 slices might have said
            rows = rng.choice(len(slices), DRAW_SLICES, replace=True)
            draws.append(choose_threshold(replace(evaluation, predicted_rc=evaluation.predicted_rc[rows],
                                                  probability=evaluation.probability[rows],
                                                  truth_rc=evaluation.truth_rc[rows],
                                                  spacing_mm=evaluation.spacing_mm[rows])))
        low, middle, high = np.percentile(draws, [5, 50, 95])
        print(f"| {name} ({len(slices)} slices) | {choose_threshold(evaluation):.3f} | {low:.3f} / {middle:.3f} / "
              f"{high:.3f} | {spec.probability_threshold:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
