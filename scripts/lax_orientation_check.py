"""Does a long-axis model find the real mitral valve whatever the orientation the image is stored in?

Each member (a ``train_lax`` run folder ``<out>/mixed``, or ``shipped`` for models/lax_cine.pt), optionally with
the labelled M&Ms-2 4CH phase to measure it on (``RUN:ES``; default both ED and ES), detects that frame in 8
orientations (quarter turns, each with and without a mirror; ``lax_evaluation.evaluate_orientations``), with the
shipped model's inference settings in fp32:

    per orientation   -> mean distance of the two mitral points from the two mitral labels (as a set), apex (mm)
    orientation score -> mean over the 8 orientations of the three distances

    python scripts/lax_orientation_check.py --member shipped --member runs/lax_rot/ED_s1/mixed:ES ... \
        --out reports/lax_rot_orientations.md

(docs/lax.md, "The real frames at every orientation").
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cmr_landmark.detector import Detector
from cmr_landmark.geometry import ORIENTATIONS
from cmr_landmark.lax_evaluation import evaluate_orientations, mnms2_lax_slices, phase_name, trained_long_axis_deg
from cmr_landmark.model_store import find_model
from cmr_landmark.training import load_cascade


def orientation_score(rows: Sequence[dict]) -> float:
    """Mean over the rows (orientations, frames) of the three distances: the mitral pair counts twice."""
    return float(np.mean([(2 * row["mitral_mm"] + row["APEX_mm"]) / 3 for row in rows]))


def table(results: dict[str, list[dict]]) -> str:
    header = " | ".join(f"{90 * turns}{' m' if mirror else ''}" for turns, mirror in ORIENTATIONS)
    lines = [f"| member (frames) | {header} | orientation score (mm) |",
             "|---|" + "---|" * len(ORIENTATIONS) + "---|"]
    for name, rows in results.items():
        cells = []
        for turns, mirror in ORIENTATIONS:
            here = [r for r in rows if r["rotation_deg"] == 90 * turns and r["mirror"] == mirror]
            cells.append(f"{np.mean([r['mitral_mm'] for r in here]):.1f} / {np.mean([r['APEX_mm'] for r in here]):.1f}")
        frames = "+".join(sorted({r["phase"] for r in rows}))
        lines.append(f"| {name} ({frames}) | {' | '.join(cells)} | {orientation_score(rows):.1f} |")
    return "\n".join(lines) + ("\n\nCells: mitral pair / apex, mm from the labels; 'm' = mirrored. Orientation 0 is "
                               "the frame as stored.\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", action="append", required=True,
                        help="'shipped' or a run folder (<out>/mixed), optionally ':ED' or ':ES'; repeat")
    parser.add_argument("--out", type=Path, required=True, help="markdown report (a .json beside it)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--turn-to-long-axis", action="store_true",
                        help="a second pass with each image turned to the apex-to-mitral direction of the frames "
                             "the member was trained on (the other frame for RUN:PHASE, both otherwise; docs/lax.md, "
                             "arm C)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    detector = Detector(find_model("lax", "cine", name="lax_cine"), use_bf16=False)
    shipped, spec = detector.model, detector.spec
    labelled, _ = mnms2_lax_slices()
    results = {}
    for member in args.member:
        source, _, phase = member.partition(":")
        if phase and phase not in ("ED", "ES"):
            parser.error(f"--member {member}: the phase after ':' is ED or ES")
        detector.model = shipped if source == "shipped" else load_cascade(Path(source), "lax").eval()
        trained_on = [s for s in labelled if not phase or phase_name(s) != phase]
        detector.spec = replace(spec, display_long_axis_deg=trained_long_axis_deg(trained_on)
                                if args.turn_to_long_axis else None)
        rows = [row for s in labelled if not phase or phase_name(s) == phase
                for row in evaluate_orientations(detector, s)]
        results[member] = rows
        print(f"{member}: orientation score {orientation_score(rows):.1f} mm", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(results))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
