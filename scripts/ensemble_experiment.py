"""Does averaging the fine stages of several SAX models beat the shipped one? (an inference-only experiment)

    python scripts/ensemble_experiment.py --sequence cine --member sax_cine --member sax_cine@3ac6d7c \
        --out reports/ensemble_cine.md

Each member is a manifest name, optionally ``@COMMIT`` for the file that commit shipped under that name (read with
``git show``). The first member is the base: its coarse stage places the fine crop, its threshold and decoding are
kept, and each member's fine heatmaps (with that member's own mirror passes and pooling) are averaged per pixel
before decoding. Every candidate ensemble (the base with each further member, and all together) is
measured on the training split (which chooses) and on the validation split (which checks), over every labelled
landmark, threshold aside, and paired against the base alone.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import evaluate_slices, paired_difference
from cmr_landmark.model_store import find_model, sha256_of
from cmr_landmark.training import load_labelled_slices

DATASETS = {"cine": ["acdc", "myops"], "lge": ["mscmrseg_lge", "myops"]}


class EnsembleDetector(Detector):
    """The base detector with its fine heatmaps averaged with those of further members on the same crops."""

    def __init__(self, base: Detector, members: list[Detector]) -> None:
        super().__init__(base.spec, base.device, use_bf16=base.use_bf16, optimised=base.optimised)
        self.base, self.members = base, members

    def fine_probabilities(self, fine_inputs: np.ndarray) -> torch.Tensor:
        maps = torch.stack([self.base.fine_probabilities(fine_inputs)]
                           + [member.fine_probabilities(fine_inputs) for member in self.members])
        return maps.mean(dim=0)


def load_member(text: str, sequence: str, folder: Path) -> Detector:
    """A shipped model by name, or ``NAME@COMMIT``: the file that commit shipped, with today's manifest settings."""
    name, _, commit = text.partition("@")
    spec = find_model("sax", sequence, name=name)
    if commit:
        path = folder / f"{name}_{commit}.pt"
        path.write_bytes(subprocess.run(["git", "show", f"{commit}:models/{spec.file.name}"], check=True,
                                        capture_output=True).stdout)
        spec = replace(spec, file=path, sha256=sha256_of(path))
    return Detector(spec, use_bf16=False)


def distances(detector: Detector, slices: list) -> np.ndarray:
    evaluation = evaluate_slices(detector, slices)
    return evaluation.distances_mm[evaluation.labelled]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequence", choices=sorted(DATASETS), required=True)
    parser.add_argument("--member", action="append", required=True, help="NAME or NAME@COMMIT; the first is the base")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    splits = {split: load_labelled_slices(DATASETS[args.sequence], split, "sax", args.sequence)
              for split in ("train", "val")}
    with tempfile.TemporaryDirectory() as folder:
        detectors = [load_member(text, args.sequence, Path(folder)) for text in args.member]
        base = detectors[0]
        candidates = {f"{args.member[0]} + {text}": [detector] for text, detector in zip(args.member[1:],
                                                                                            detectors[1:], strict=True)}
        if len(detectors) > 2:
            candidates["all"] = detectors[1:]
        base_distances = {split: distances(base, slices) for split, slices in splits.items()}
        lines = [f"# Fine-stage ensembles, SAX {args.sequence} (mean pooling)", "",
                 f"Base {args.member[0]} alone: training {base_distances['train'].mean():.3f} mm "
                 f"({len(base_distances['train'])} landmarks), validation {base_distances['val'].mean():.3f} mm "
                 f"({len(base_distances['val'])}).", "",
                 "| ensemble | training mm | paired | validation mm | paired |", "|---|---|---|---|---|"]
        for label, members in candidates.items():
            ensemble = EnsembleDetector(base, members)
            cells = []
            for split, slices in splits.items():
                found = distances(ensemble, slices)
                mean, half_width = paired_difference(found, base_distances[split])
                cells += [f"{found.mean():.3f}", f"{mean:+.3f} +- {half_width:.3f}"]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
