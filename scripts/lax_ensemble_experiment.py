"""How far the long-axis recipe's real-image figures move from run to run, and what an ensemble of runs gives.

Every member is a long-axis run folder (``train_lax``'s ``<out>/mixed``, coarse_best.pt + fine_best.pt) or
``shipped`` (models/lax_cine.pt). Each member alone, and the ensemble of those within
``--gate-mm`` on the held-out synthetic slices (``network.LandmarkEnsemble``: each stage's probabilities
averaged; and of all of them, if the gate left any out), runs with the shipped model's inference
settings (grids, 20 mm coarse-guided search, centre-of-mass decoding, fp32) on

    the 150 held-out synthetic slices (seed 77)          -> mean distance (mm) (--held-out-anatomy)
    the real M&Ms-2 4CH ED / ES frames                    -> distance per landmark (mm), LV length error (%)
    the real 25-phase 4CH cine (unlabelled)               -> longitudinal shortening, filled points,
                                                             the smoothed points at the labelled phases (mean of
                                                             three, mm: what the console shows) and, label-free,
                                                             each member's median distance to the ensemble's cine
                                                             points (mm)

    python scripts/lax_ensemble_experiment.py --member runs/lax_ens/s1/slender/mixed ... --out reports/lax_ens.md

``--coarse-from RUN``: every run member is that run's coarse stage with the member's own fine stage.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cmr_landmark.config import LAX_LANDMARKS
from cmr_landmark.detector import Detector, lax_points_rc
from cmr_landmark.lax_evaluation import (
    evaluate_cine,
    evaluate_cine_at_labelled,
    evaluate_labelled,
    evaluate_synthetic_held_out,
    matching_frame,
    mnms2_lax_slices,
    phase_name,
    phases_on_the_mitral_valve,
)
from cmr_landmark.model_store import find_model
from cmr_landmark.network import LandmarkCascade, LandmarkEnsemble
from cmr_landmark.synth.lax import ANATOMY_RANGES
from cmr_landmark.training import load_cascade, load_stage


def load_member(member: str, shipped: Detector, coarse: torch.nn.Module | None) -> torch.nn.Module:
    """A run folder's cascade (with ``coarse``: that coarse stage and the run's fine stage), or the shipped model."""
    if member == "shipped":
        return shipped.model
    if coarse is None:
        return load_cascade(Path(member), "lax")
    return LandmarkCascade(coarse, load_stage(Path(member), "fine", "lax"))


def measure(detector: Detector, labelled: Sequence, cine_phases: Sequence, held_out_family: str | None) -> dict:
    rows = {row["phase"]: row for row in evaluate_labelled(detector, labelled)}
    raw, cine = evaluate_cine(detector, cine_phases)
    cine_points = np.stack([lax_points_rc(found) for found in raw])
    frames = {phase_name(s): matching_frame(s.image, cine_phases) for s in labelled}
    at_labelled = {row["phase"]: {**{name: row[f"{name}_mm"] for name in LAX_LANDMARKS}, "mean": row["mean_mm"],
                                  "lv_length_error_percent": row["lv_length_error_percent"]}
                   for row in evaluate_cine_at_labelled(cine, labelled, frames)}
    return {
        "synthetic_mm": evaluate_synthetic_held_out(detector, held_out_family)["mean"],
        "real_mm": {phase: {name: rows[phase][f"{name}_mm"] for name in LAX_LANDMARKS} for phase in rows},
        "real_mean_mm": float(np.mean([rows[p][f"{n}_mm"] for p in rows for n in LAX_LANDMARKS])),
        "lv_length_error_percent": {phase: rows[phase]["lv_length_error_percent"] for phase in rows},
        "cine_at_labelled_mm": at_labelled,
        "shortening": cine.longitudinal_shortening,
        "filled": int(sum(sum(f.values()) for f in cine.filled)),
        "cine_points_rc": cine_points.tolist(),
        "phases_on_the_mitral_valve": phases_on_the_mitral_valve(cine_points, labelled),
    }


def table(results: dict[str, dict], spacing_mm: float) -> str:
    ensemble_points = np.asarray(results["ensemble"]["cine_points_rc"])
    lines = ["| member | synthetic held-out mm | real ED MV-1 / MV-2 / APEX | real ES MV-1 / MV-2 / APEX | "
             "mean of six | LV length ED / ES | cine, smoothed, at ED / ES: mean of three | cine shortening "
             "(filled) | median distance to the ensemble on the cine (mm) | cine phases on the mitral valve |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        cells = [" / ".join(f"{r['real_mm'][p][n]:.1f}" for n in LAX_LANDMARKS) for p in ("ED", "ES")]
        lengths = " / ".join(f"{r['lv_length_error_percent'][p]:+.1f} %" for p in ("ED", "ES"))
        on_cine = " / ".join(f"{r['cine_at_labelled_mm'][p]['mean']:.1f}" for p in ("ED", "ES"))
        to_ensemble = np.nanmedian(np.linalg.norm(np.asarray(r["cine_points_rc"]) - ensemble_points, axis=-1))
        lines.append(f"| {name} | {r['synthetic_mm']:.2f} | {cells[0]} | {cells[1]} | {r['real_mean_mm']:.1f} | "
                     f"{lengths} | {on_cine} | {100 * r['shortening']:.1f} % ({r['filled']}) | "
                     f"{spacing_mm * to_ensemble:.1f} | "
                     f"{r['phases_on_the_mitral_valve']} of {len(ensemble_points)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", action="append", required=True,
                        help="a long-axis run folder (<out>/mixed) or 'shipped'; repeat")
    parser.add_argument("--out", type=Path, required=True, help="markdown report (a .json beside it)")
    parser.add_argument("--gate-mm", type=float, default=3.0,
                        help="a member joins the ensemble only if its held-out synthetic mean is at most this")
    parser.add_argument("--coarse-from", type=Path, default=None,
                        help="a run folder or checkpoint whose coarse stage replaces every run member's own")
    parser.add_argument("--held-out-anatomy", default=None, choices=sorted(ANATOMY_RANGES),
                        help="anatomy family of the held-out synthetic slices (default: "
                             "lax_evaluation.HELD_OUT_SYNTHETIC's, slender)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    detector = Detector(find_model("lax", "cine", name="lax_cine"), use_bf16=False)
    coarse = load_stage(args.coarse_from, "coarse", "lax") if args.coarse_from else None  # shared by the members
    members = {member: load_member(member, detector, coarse).eval() for member in args.member}
    labelled, cine_phases = mnms2_lax_slices()
    results = {}

    def run(name: str, module: torch.nn.Module) -> None:
        detector.model = module
        results[name] = measure(detector, labelled, cine_phases, args.held_out_anatomy)
        print(name, f"synthetic {results[name]['synthetic_mm']:.2f} mm, real mean {results[name]['real_mean_mm']:.1f}"
              f" mm, shortening {100 * results[name]['shortening']:.1f} %", flush=True)

    for name, module in members.items():
        run(name, module)
    # the gate looks at held-out synthetic slices only: a run that has not learnt the synthetic task is left out
    passed = [name for name in members if results[name]["synthetic_mm"] <= args.gate_mm]
    if not passed:
        raise SystemExit(f"no member is within {args.gate_mm} mm on the held-out synthetic slices")
    run("ensemble", LandmarkEnsemble([members[name] for name in passed]).eval())
    if len(passed) < len(members):
        run("ensemble, ungated", LandmarkEnsemble(list(members.values())).eval())
    individual = [results[name]["real_mean_mm"] for name in members if name != "shipped"]
    summary = (f"Ensemble: {len(passed)} of {len(members)} members ({', '.join(passed)}), those within "
               f"{args.gate_mm} mm on the held-out synthetic slices.\n\n"
               f"Members other than the shipped model: real mean of six {np.median(individual):.1f} mm median, "
               f"{min(individual):.1f}-{max(individual):.1f} mm range over {len(individual)} runs."
               if individual else f"Ensemble: {', '.join(passed)}.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(results, cine_phases[0].pixel_spacing_mm[0]) + "\n\n" + summary + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
