"""Two folders' files of the same models, point by point on the validation slices: for a change that must not move
the points (a model file frozen again, a new export of the same weights), how far it moves them.

    mkdir -p .cache/models_before && git show c2c8e6e:models/manifest.json > .cache/models_before/manifest.json
    for f in sax_cine sax_lge sax_t1 sax_any lax_cine; do
        git show c2c8e6e:models/$f.pt > .cache/models_before/$f.pt
    done
    python scripts/compare_model_files.py --before .cache/models_before --after models

Each model runs in fp32 (the precision the cards' figures are measured in) and with bf16 autocast (what the
gadget runs on a CPU with native bf16), on the validation split of the sets its card is measured on (``sax_t1``
and ``sax_any`` on the cine ones). Printed per model and precision: the mean and largest distance between the two
files' points (every landmark, threshold aside), the largest change of a peak probability, the share of landmarks
found (at the model's threshold) by both or neither, and the mean error against the labels with each file.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import predict
from cmr_landmark.geometry import distances_mm
from cmr_landmark.model_store import read_manifest
from cmr_landmark.training import load_labelled_slices

VALIDATION_SETS = {  # model -> (datasets, view, sequence), as its card is measured
    "sax_cine": (("acdc", "myops", "mnms2"), "sax", "cine"),
    "sax_lge": (("mscmrseg_lge", "myops"), "sax", "lge"),
    "sax_t1": (("acdc", "myops", "mnms2"), "sax", "cine"),
    "sax_any": (("acdc", "myops", "mnms2"), "sax", "cine"),
    "lax_cine": (("mnms2",), "lax", "cine"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="folder with manifest.json and model files")
    parser.add_argument("--after", type=Path, required=True, help="folder with manifest.json and model files")
    args = parser.parse_args(argv)
    before = {spec.name: spec for spec in read_manifest(args.before)}
    for after in read_manifest(args.after):
        if after.name not in before or after.name not in VALIDATION_SETS:
            print(f"{after.name}: not compared (not in {args.before}, or no validation sets known for it)")
            continue
        datasets, view, sequence = VALIDATION_SETS[after.name]
        slices = load_labelled_slices(list(datasets), "val", view, sequence)
        spacing = np.array([s.pixel_spacing_mm for s in slices])[:, None, :]
        truth = np.stack([s.landmarks_rc for s in slices])
        labelled = np.all(np.isfinite(truth), axis=2)
        for bf16 in (False, True):
            points_before, peak_before = predict(Detector(before[after.name], use_bf16=bf16), slices)
            points_after, peak_after = predict(Detector(after, use_bf16=bf16), slices)
            moved = distances_mm(points_after, points_before, spacing)
            error_before, error_after = (distances_mm(p, truth, spacing)[labelled].mean()
                                         for p in (points_before, points_after))
            same_found = np.mean((peak_before >= after.probability_threshold)
                                 == (peak_after >= after.probability_threshold))
            print(f"{after.name} {'bf16' if bf16 else 'fp32'}, {len(slices)} slices: points moved {moved.mean():.4f} "
                  f"mm (largest {moved.max():.3f}), peak probability changed by at most "
                  f"{np.abs(peak_after - peak_before).max():.1e}, found alike {100 * same_found:.2f} %, mean error "
                  f"vs labels {error_before:.4f} -> {error_after:.4f} mm", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
