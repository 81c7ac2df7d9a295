"""Re-measure what a shipped short-axis model's manifest entry and card claim, after a change of an inference
setting (``--fine-centroid-radius-mm``) or of the labels it is measured against (``--why``, e.g. a new landmark
rule): the model file stays as it is (same sha256), its validation figures follow the change.

    python scripts/remeasure_model.py --model sax_cine --datasets acdc,myops,mnms2 --fine-centroid-radius-mm 15
    python scripts/remeasure_model.py --model sax_lge --sequence lge --datasets mscmrseg_lge,myops \
        --why "against the labels of the 1.5-pixel RV contact rule (docs/data.md)"

The manifest's ``validation`` entry is replaced, and so is the table section of the card written at export
(``## Validation accuracy``); a note on the change goes under it. Cards without that section (models exported by
scripts/compare_sax_models.py) keep their text: rerun that script for their tables.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch

from cmr_landmark.config import models_dir
from cmr_landmark.datasets import dataset_names
from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import evaluate_slices, report_markdown, summary
from cmr_landmark.model_store import edit_manifest, find_model
from cmr_landmark.training import load_labelled_slices

VALIDATION_SECTION = re.compile(r"## Validation accuracy\n.*?(?=\n## |\Z)", re.DOTALL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="manifest name, e.g. sax_cine")
    parser.add_argument("--sequence", default="cine", help="sequence of the validation slices")
    parser.add_argument("--datasets", required=True, help="validation sets (their val split), as the card says")
    parser.add_argument("--fine-centroid-radius-mm", default=None,
                        help="window of the centre-of-mass decode in mm, or 'none' for the peak (default: unchanged)")
    parser.add_argument("--why", default=None, help="what changed, when not the decode window (goes on the card)")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = args.models_dir or models_dir()
    if (args.fine_centroid_radius_mm is None) == (args.why is None):
        parser.error("give either --fine-centroid-radius-mm or --why")
    spec = find_model("sax", args.sequence, name=args.model, folder=folder)
    radius = spec.fine_centroid_radius_mm
    if args.fine_centroid_radius_mm is not None:
        radius = None if args.fine_centroid_radius_mm == "none" else float(args.fine_centroid_radius_mm)
        spec = replace(spec, fine_centroid_radius_mm=radius)
    slices = load_labelled_slices(dataset_names(args.datasets), "val", spec.view, args.sequence)
    detector = Detector(spec, use_bf16=False)  # fp32: the figures must not depend on the CPU they were taken on
    evaluation = evaluate_slices(detector, slices)

    def set_radius(manifest: dict) -> dict:
        entry = next(e for e in manifest["models"] if e["name"] == args.model)
        entry["fine_centroid_radius_mm"] = radius
        if "validation" in entry:
            entry["validation"] = summary(evaluation)
        return entry

    entry = edit_manifest(folder, set_radius)

    card_path = folder / entry["card"] if entry.get("card") else None
    decoder = "the peak" if radius is None else f"the centre of mass within {radius:g} mm of the peak"
    change = args.why or f"with the fine points read as {decoder} (manifest `fine_centroid_radius_mm`)"
    section = (f"## Validation accuracy\n\nRe-measured on {date.today().isoformat()} {change} "
               f"(`scripts/remeasure_model.py`, fp32); the model file and its probability threshold "
               f"({spec.probability_threshold:g}, as chosen at export) are unchanged.\n\n"
               f"{report_markdown(evaluation, f'{args.model} on the validation split')}")
    if card_path and card_path.exists() and VALIDATION_SECTION.search(card_path.read_text()):
        card_path.write_text(VALIDATION_SECTION.sub(lambda _: section, card_path.read_text(), count=1))
        print(f"updated {card_path}")
    elif "validation" in entry:
        print(f"warning: the manifest's figures changed but {card_path} has no '## Validation accuracy' section; "
              "update its tables by hand", file=sys.stderr)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
