"""Recipe experiments for `sax_lge` (LGE short-axis landmarks), each arm the shipped `sax_lge`'s recipe from the
shipped `sax_cine` with one thing changed, measured against each other and the shipped model.

Display (2026-12-05): the LGE sets (MS-CMRSeg, MyoPS) are stored in a display that puts the RV at about 195 degrees
(``datasets.ORIENTATION_BY_DATASET``); ACDC, most of `sax_cine`'s training, at about 110, and a scanner's header
display at about 120 (docs/orientation.md). `sax_lge` starts a quarter turn away from what it is shown.

- ``as_set``: the LGE slices in their set's display, as the shipped `sax_lge` was trained;
- ``turned``: the same slices turned a quarter clockwise (RV at about 97 degrees), labels turned with them.

Cine alongside (2026-12-05): 295 LGE slices are few, and fine-tuning on them alone may forget what the cine model
knew about the heart's shape. Both arms see twice the LGE set per epoch, so both take the same steps:

- ``lge_twice``: every LGE training slice twice (the control);
- ``cine_mix``: every LGE training slice once and as many cine training slices (ACDC + MyoPS bSSFP, a fixed random
  draw), the cine slices in their own display.

    python scripts/lge_recipe_experiment.py train --arm ARM --out runs/lge_recipe/ARM --threads 1
    CMR_LANDMARK_BF16=0 python scripts/lge_recipe_experiment.py compare --runs runs/lge_recipe \
        --arms as_set,turned --out reports/lge_display.md

``train`` runs stage 1 (10 coarse + 30 fine epochs, lr 5e-4, from models/sax_cine.pt) into OUT/stage1 and stage 2
(the fine stage 30 more epochs with the distance term, weight 0.3) into OUT/stage2; an interrupted run resumes.
Every arm validates (chooses its epochs) on the LGE validation split. ``compare`` measures each arm's stage 2 in its
own display (mirror averaging, centre-of-mass decoding, as `sax_lge` ships; set CMR_LANDMARK_BF16=0 for fp32) and
the shipped `sax_lge` in the sets' display, on the LGE validation and training splits, over every labelled
landmark, threshold aside; rotation moves no distance, so the arms are paired landmark by landmark. The decision
rules are in docs/training.md ("The LGE sets shown as the cine model saw most", "Cine slices beside the LGE ones").
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cmr_landmark.config import REPO_ROOT
from cmr_landmark.detector import Detector
from cmr_landmark.display_orientation import mean_rv_direction_deg
from cmr_landmark.evaluation import evaluate_slices, paired_difference
from cmr_landmark.geometry import orient_image, oriented_spacing_mm, points_to_original
from cmr_landmark.model_store import find_model
from cmr_landmark.training import load_cascade, load_labelled_slices, train_cascade

LGE_SETS = ("mscmrseg_lge", "myops")
CINE_SETS = ("acdc", "myops")
CINE_DRAW_SEED = 0
ARMS = ("as_set", "turned", "lge_twice", "cine_mix")
CLOCKWISE = -1  # np.rot90 quarter turns: -1 turns the displayed image a quarter clockwise


def turned_clockwise(s):
    """``s`` turned a quarter clockwise: image, masks and spacing, and its landmarks with them."""

    def turn(array):
        return None if array is None else orient_image(array, CLOCKWISE, False)

    image = turn(s.image)
    # the original is the turned image turned back, so its points are "found in" that view of the turned one
    return replace(s, image=image, mask=turn(s.mask), pathology=turn(s.pathology),
                   pixel_spacing_mm=oriented_spacing_mm(s.pixel_spacing_mm, CLOCKWISE),
                   landmarks_rc=points_to_original(s.landmarks_rc, image.shape, -CLOCKWISE, False))


def lge_slices(split: str, arm: str) -> list:
    """The LGE slices of ``split`` as ``arm`` shows them (turned, or in the sets' display)."""
    slices = load_labelled_slices(LGE_SETS, split, "sax", "lge")
    return [turned_clockwise(s) for s in slices] if arm == "turned" else slices


def training_slices(arm: str) -> list:
    """What ``arm`` trains on: the LGE training slices, twice for ``lge_twice``, with as many cine ones for
    ``cine_mix``."""
    lge = lge_slices("train", arm)
    if arm == "lge_twice":
        return lge + lge
    if arm == "cine_mix":
        cine = load_labelled_slices(CINE_SETS, "train", "sax", "cine")
        chosen = np.random.default_rng(CINE_DRAW_SEED).choice(len(cine), size=len(lge), replace=False)
        return lge + [cine[i] for i in sorted(chosen)]
    return lge


def train(arm: str, out: Path, threads: int) -> None:
    train_slices, val_slices = training_slices(arm), lge_slices("val", arm)
    print(f"{arm}: {len(train_slices)} training, {len(val_slices)} validation slices; RV at "
          f"{mean_rv_direction_deg(train_slices):.1f} degrees", flush=True)
    train_cascade(train_slices, val_slices, "sax", out / "stage1", 10, 30, init_from=REPO_ROOT / "models" /
                  "sax_cine.pt", lr=5e-4, threads=threads)
    train_cascade(train_slices, val_slices, "sax", out / "stage2", 0, 30, init_from=out / "stage1", lr=5e-4,
                  threads=threads, distance_weight=0.3)


def distances_mm(model, slices: list) -> np.ndarray:
    """Every labelled landmark's distance (mm), threshold aside, in slice x landmark order (NaN where unlabelled)."""
    return evaluate_slices(model, slices, mirror_average=True, mirror_pooling="mean").distances_mm.ravel()


def paired(a: np.ndarray, b: np.ndarray) -> str:
    mean, half_width = paired_difference(a, b)
    return f"{mean:+.2f} +- {half_width:.2f}"


def compare(runs: Path, control: str, candidate: str, out: Path) -> None:
    """The candidate arm against the control arm and the shipped `sax_lge`, on the LGE validation and training
    splits."""
    lines = [f"| split | shipped `sax_lge` | {control} | {candidate} | {candidate} - {control} | "
             f"{candidate} - shipped |", "|---|---|---|---|---|---|"]
    shipped = Detector(find_model("sax", "lge", name="sax_lge"))
    for split in ("val", "train"):
        measured = {"shipped": distances_mm(shipped, lge_slices(split, "as_set"))}
        for arm in (control, candidate):
            measured[arm] = distances_mm(load_cascade(runs / arm / "stage2", "sax"), lge_slices(split, arm))
        means = {name: np.nanmean(d) for name, d in measured.items()}
        lines.append(f"| {split} | {means['shipped']:.2f} | {means[control]:.2f} | {means[candidate]:.2f} | "
                     f"{paired(measured[candidate], measured[control])} | "
                     f"{paired(measured[candidate], measured['shipped'])} |")
        print(lines[-1], flush=True)
    out.write_text("Mean distance (mm) over every labelled LGE landmark, threshold aside; paired = the same "
                   "landmarks, mean +- 95 % half-width (`scripts/lge_recipe_experiment.py compare`).\n\n"
                   + "\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train one arm (stage 1 and 2; resumes)")
    run.add_argument("--arm", choices=ARMS, required=True)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--threads", type=int, default=1)
    judge = commands.add_parser("compare", help="measure a candidate arm against a control arm and sax_lge")
    judge.add_argument("--runs", type=Path, required=True, help="the folder holding one sub-folder per arm")
    judge.add_argument("--arms", required=True, help="CONTROL,CANDIDATE, e.g. as_set,turned or lge_twice,cine_mix")
    judge.add_argument("--out", type=Path, required=True, help="markdown table to write")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args.arm, args.out, args.threads)
    else:
        control, _, candidate = args.arms.partition(",")
        if control not in ARMS or candidate not in ARMS:
            parser.error(f"--arms needs two of {', '.join(ARMS)}, comma-separated")
        compare(args.runs, control, candidate, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
