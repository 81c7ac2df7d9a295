"""Train the short-axis models for contrasts the public sets lack, on synthetic images, with the team's trainer.

    # T1 maps: fine-tune a shipped SAX model on synthetic MOLLI maps of the training split (Xue et al.'s
    # transfer learning: lr 5e-4, ~10 epochs), validated on synthetic maps of the validation split
    python scripts/train_sax_synthetic.py t1 --init-from models/sax_cine.pt --lr 5e-4 --epochs 10 \
        --out .cache/runs/sax_t1

    # contrast-agnostic: real cine and LGE slices plus random per-tissue contrast copies, validated on real
    # cine and LGE validation slices
    python scripts/train_sax_synthetic.py any --epochs 12 --out .cache/runs/sax_any

    # the same with a fresh random contrast for two thirds of the items every epoch instead of fixed copies (how
    # the shipped sax_any was trained: docs/t1.md)
    python scripts/train_sax_synthetic.py any --copies 0 --fresh-fraction 0.667 --epochs 12 \
        --out .cache/runs/sax_any_fresh

    # the same, distilled: each image's target is half its label heatmaps, half what the sequence-specific model
    # says on the real image (for a random-contrast copy: on the image it was made from)
    python scripts/train_sax_synthetic.py any --init-from models/sax_cine.pt --lr 5e-4 \
        --distil-from cine=models/sax_cine.pt --distil-from lge=models/sax_lge.pt --out .cache/runs/sax_any_distilled

Sources are every labelled SAX slice of the ACDC, MyoPS (bSSFP and LGE, with scar/oedema) and MS-CMRSeg
training splits (cmr_landmark/splits.json). One thread by default (the machine is shared).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cmr_landmark.datasets import Slice
from cmr_landmark.synth.contrast import random_contrast_slices, with_random_contrast
from cmr_landmark.synth.t1 import (
    POST_CONTRAST_PROBABILITY,
    synthetic_t1_slice,
    synthetic_t1_slices,
    with_fitted_map_look,
)
from cmr_landmark.training import FreshImages, consistency_options_problem, load_labelled_slices, train_cascade

SOURCE_SETS: dict[str, tuple[str, ...]] = {"cine": ("acdc", "myops"), "lge": ("mscmrseg_lge", "myops")}
SYNTHESIS_SEED = {"train": 1, "val": 2}


def real_sax_slices(split: str) -> list:
    """Labelled SAX cine and LGE slices of ``split`` from every set that has them."""
    return [s for sequence, names in SOURCE_SETS.items() for s in load_labelled_slices(names, split, "sax", sequence)]


def maybe_with_map_look(slice_: Slice, rng: np.random.Generator, fraction: float) -> Slice:
    """``slice_`` (a random-contrast image) given, with probability ``fraction``, the look of a fitted parameter
    map (synth.t1.with_fitted_map_look): the quantitative maps (T2, T2*, ECV) a contrast-agnostic model meets
    share it, whatever their tissue values. No draw at 0, so a recipe without the look keeps its random stream."""
    if fraction and rng.random() < fraction:
        return dataclasses.replace(slice_, image=with_fitted_map_look(slice_.image, slice_.source_image, slice_.mask,
                                                                       rng))
    return slice_


def with_map_look(slices: list, fraction: float, seed: int) -> list:
    """``slices`` (the fixed random-contrast copies), ``fraction`` of them, chosen at random, with the map look."""
    return [maybe_with_map_look(s, np.random.default_rng([seed, index, 7]), fraction) for index, s in enumerate(slices)]


def random_contrast_with_map_look(slice_: Slice, rng: np.random.Generator, map_look_fraction: float = 0.0,
                                  uneven_blood_fraction: float = 0.0, myocardial_lesion_fraction: float = 0.0,
                                  rv_wall_fraction: float = 0.0, infarct_fraction: float = 0.0) -> Slice:
    """A fresh random-contrast image of ``slice_`` ('any' with --fresh-fraction), ``uneven_blood_fraction`` of them
    with patchy blood (synth.contrast.uneven_blood_signal), ``myocardial_lesion_fraction`` with lesion-like patches
    in the myocardium (synth.contrast.add_myocardial_lesions), ``rv_wall_fraction`` with an RV free wall of the
    myocardium's intensity (synth.contrast.draw_rv_wall), ``infarct_fraction`` with scar and oedema of their own
    intensities (synth.contrast.add_infarct), ``map_look_fraction`` with the map look, as :func:`with_map_look`
    gives the fixed copies."""
    return maybe_with_map_look(with_random_contrast(slice_, rng, uneven_blood_fraction, myocardial_lesion_fraction,
                                                    rv_wall_fraction, infarct_fraction), rng, map_look_fraction)


def random_contrast_or_t1_map(slice_: Slice, rng: np.random.Generator, t1_map_fraction: float,
                              random_contrast: Callable[[Slice, np.random.Generator], Slice],
                              t1_map: Callable[[Slice, np.random.Generator], Slice]) -> Slice:
    """A fresh image for the contrast-agnostic model: a synthetic T1 map for ``t1_map_fraction`` of them, else a
    random contrast."""
    return t1_map(slice_, rng) if rng.random() < t1_map_fraction else random_contrast(slice_, rng)


def fresh_synthesis(kind: str, map_look_fraction: float, uneven_blood_fraction: float = 0.0,
                    myocardial_lesion_fraction: float = 0.0, rv_wall_fraction: float = 0.0,
                    post_contrast_fraction: float = POST_CONTRAST_PROBABILITY, t1_map_fraction: float = 0.0,
                    infarct_fraction: float = 0.0) -> Callable[[Slice, np.random.Generator], Slice]:
    """What --fresh-fraction draws anew every epoch: a T1 map ('t1', ``post_contrast_fraction`` of them
    post-contrast) or a random contrast ('any'; with ``t1_map_fraction``, that share of them a T1 map instead);
    ``infarct_fraction`` of either with scar and oedema (the slice's labels, else a drawn infarct)."""
    t1_map = functools.partial(synthetic_t1_slice, uneven_blood_fraction=uneven_blood_fraction,
                               rv_wall_fraction=rv_wall_fraction, post_contrast_probability=post_contrast_fraction,
                               infarct_fraction=infarct_fraction)
    if kind == "t1":
        return t1_map
    random_contrast = functools.partial(random_contrast_with_map_look, map_look_fraction=map_look_fraction,
                                        uneven_blood_fraction=uneven_blood_fraction,
                                        myocardial_lesion_fraction=myocardial_lesion_fraction,
                                        rv_wall_fraction=rv_wall_fraction, infarct_fraction=infarct_fraction)
    if not t1_map_fraction:  # no draw for the choice: every earlier recipe's images as they were
        return random_contrast
    return functools.partial(random_contrast_or_t1_map, t1_map_fraction=t1_map_fraction,
                             random_contrast=random_contrast, t1_map=t1_map)


def training_sets(kind: str, copies: int, max_val_slices: int | None, lge_repeats: int = 1,
                  val_contrast_copies: int = 0, map_look_fraction: float = 0.0, uneven_blood_fraction: float = 0.0,
                  myocardial_lesion_fraction: float = 0.0) -> tuple[list, list]:
    """(training, validation) slices; ``lge_repeats``: every LGE training slice (real and copies) that many times,
    as LGE is a sixth of the real slices; ``val_contrast_copies`` ('any'): random-contrast copies of each validation
    slice added to its real ones, drawn apart from the training copies, so that the epoch is chosen for contrasts the
    model has not seen, which is what a contrast-agnostic model is used on; ``map_look_fraction`` ('any'): that share
    of the training copies looks like a fitted parameter map (:func:`with_map_look`; the validation copies do not);
    ``uneven_blood_fraction``: that share of every synthetic image, training and validation (random-contrast copies
    or T1 maps), has patchy blood (synth.contrast.uneven_blood_signal); ``myocardial_lesion_fraction`` ('any'): that
    share of the random-contrast copies has lesion-like patches in the myocardium
    (synth.contrast.add_myocardial_lesions)."""
    train, val = real_sax_slices("train"), real_sax_slices("val")
    if max_val_slices is not None and len(val) > max_val_slices:  # evenly spaced: every set and patient kept
        val = [val[i] for i in np.linspace(0, len(val) - 1, max_val_slices).round().astype(int)]
    if kind == "t1":  # with no fixed copies the real slices are the items, each a fresh map (--fresh-fraction)
        return (synthetic_t1_slices(train, SYNTHESIS_SEED["train"], copies, uneven_blood_fraction) if copies else train,
                synthetic_t1_slices(val, SYNTHESIS_SEED["val"], uneven_blood_fraction=uneven_blood_fraction))
    train = train + with_map_look(random_contrast_slices(train, SYNTHESIS_SEED["train"], copies,
                                                         uneven_blood_fraction, myocardial_lesion_fraction),
                                  map_look_fraction, SYNTHESIS_SEED["train"])
    val = val + random_contrast_slices(val, SYNTHESIS_SEED["val"], val_contrast_copies, uneven_blood_fraction,
                                       myocardial_lesion_fraction)
    return train + [s for s in train if s.sequence == "lge"] * (lge_repeats - 1), val


def argument_parser() -> argparse.ArgumentParser:
    """The command's options; scripts/compare_sax_models.py writes a run's rerun line in them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("t1", "any"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--init-from", type=Path, default=None, help="run folder or shipped model to start from")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each stage (see --epochs-fine)")
    parser.add_argument("--epochs-fine", type=int, default=None, help="epochs of the fine stage (default --epochs)")
    parser.add_argument("--copies", type=int, default=1,
                        help="synthetic images per source slice, drawn once (t1 with 0: --fresh-fraction 1 draws a new "
                             "map of every real slice every epoch)")
    parser.add_argument("--max-steps-per-epoch", type=int, default=None)
    parser.add_argument("--max-val-slices", type=int, default=None, help="validate on this many (evenly spaced)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0,
                        help="weights' start, shuffles, augmentation and fresh images (a replicate run: another seed)")
    parser.add_argument("--lge-repeats", type=int, default=1, help="any: each LGE training image this many times")
    parser.add_argument("--val-contrast-copies", type=int, default=0,
                        help="any: random-contrast copies of each validation slice, validated on beside the real ones")
    parser.add_argument("--map-look-fraction", type=float, default=0.0,
                        help="any: share of the random-contrast training images (fixed copies and fresh ones) "
                             "given the look of a fitted map")
    parser.add_argument("--uneven-blood-fraction", type=float, default=0.0,
                        help="share of the synthetic images (random contrasts or T1 maps, training and validation) "
                             "whose blood pools get patches of signal (synth.contrast.uneven_blood_signal)")
    parser.add_argument("--myocardial-lesion-fraction", type=float, default=0.0,
                        help="any: share of the random-contrast images (training and validation) whose myocardium "
                             "gets lesion-like patches (synth.contrast.add_myocardial_lesions)")
    parser.add_argument("--rv-wall-fraction", type=float, default=0.0,
                        help="share of the fresh synthetic training images (--fresh-fraction) whose unlabelled RV "
                             "free wall gets the myocardium's value (synth.contrast.draw_rv_wall); validation images "
                             "have none")
    parser.add_argument("--post-contrast-fraction", type=float, default=POST_CONTRAST_PROBABILITY,
                        help="t1: share of the fresh training maps (--fresh-fraction) that are post-contrast "
                             f"(default {POST_CONTRAST_PROBABILITY:g}); the validation maps keep the default")
    parser.add_argument("--t1-map-fraction", type=float, default=0.0,
                        help="any: share of the fresh images (--fresh-fraction) that are synthetic T1 maps, "
                             "--post-contrast-fraction of them post-contrast, instead of random contrasts")
    parser.add_argument("--infarct-fraction", type=float, default=0.0,
                        help="fresh training images (--fresh-fraction) with an infarct: this share of the T1 maps "
                             "of slices without lesion labels gets one drawn in (synth.contrast.draw_infarct; a "
                             "map always shows the MyoPS labels' lesions), this share of the random contrasts the "
                             "slice's MyoPS lesions or a drawn infarct at intensities of their own "
                             "(synth.contrast.add_infarct); no validation image gets a drawn one")
    parser.add_argument("--fresh-fraction", type=float, default=0.0,
                        help="share of the training items given a new synthetic image every epoch "
                             "(training.FreshImages): 'any', a random contrast, beside or instead of the fixed "
                             "--copies; 't1', a T1 map of every real slice (with --copies 0 and 1)")
    parser.add_argument("--distil-from", action="append", default=[], metavar="SEQUENCE=MODEL",
                        help="teacher model file for the slices of SEQUENCE (repeat for each sequence)")
    parser.add_argument("--distil-weight", type=float, default=0.5, help="weight of the teachers in the targets")
    parser.add_argument("--consistency-weight", type=float, default=0.0,
                        help="fine stage: every item is a pair, its real image and a second view (a fresh synthetic "
                             "image for --fresh-fraction of them), asked for the same maps with this weight "
                             "(training.consistency_loss); each step runs twice the images")
    parser.add_argument("--consistency-toward-real", action="store_true",
                        help="with --consistency-weight: pull only the second view's maps toward the real image's "
                             "(held fixed), instead of each toward the other")
    parser.add_argument("--deformation-fraction", type=float, default=0.0,
                        help="share of the training items (real or fresh, drawn every epoch) also warped by a smooth "
                             "random deformation of up to 3 mm RMS (augment.SmoothDeformation; docs/t1.md, arm EL)")
    parser.add_argument("--distance-loss-weight", type=float, default=0.0,
                        help="fine stage: weight (per mm) of the reported point's distance to its label "
                             "(training.point_distance_loss)")
    return parser


def main() -> int:
    parser = argument_parser()
    args = parser.parse_args()
    if args.kind == "t1" and (args.val_contrast_copies or args.lge_repeats != 1 or args.map_look_fraction
                              or args.myocardial_lesion_fraction):
        parser.error("--val-contrast-copies, --lge-repeats, --map-look-fraction and --myocardial-lesion-fraction are "
                     "for the contrast-agnostic model ('any')")
    if args.kind == "t1" and not ((args.copies and not args.fresh_fraction)
                                  or (not args.copies and args.fresh_fraction == 1.0)):
        parser.error("t1 trains on synthetic maps, drawn once (--copies N) or afresh every epoch from the real slices "
                     "(--copies 0 --fresh-fraction 1)")
    if not all(0.0 <= share <= 1.0 for share in (args.map_look_fraction, args.fresh_fraction,
                                                  args.uneven_blood_fraction, args.myocardial_lesion_fraction,
                                                  args.rv_wall_fraction, args.post_contrast_fraction,
                                                  args.t1_map_fraction, args.infarct_fraction,
                                                  args.deformation_fraction)):
        parser.error("--map-look-fraction, --fresh-fraction, --uneven-blood-fraction, --myocardial-lesion-fraction, "
                     "--rv-wall-fraction, --post-contrast-fraction, --t1-map-fraction, --infarct-fraction and "
                     "--deformation-fraction are shares, 0..1")
    if args.t1_map_fraction and not (args.kind == "any" and args.fresh_fraction):
        parser.error("--t1-map-fraction makes a share of the contrast-agnostic model's fresh images T1 maps: give "
                     "kind any and --fresh-fraction")
    if args.post_contrast_fraction != POST_CONTRAST_PROBABILITY and not (
            args.fresh_fraction and (args.kind == "t1" or args.t1_map_fraction)):
        parser.error("--post-contrast-fraction sets the share of post-contrast maps among the fresh T1 maps: give kind "
                     "t1 (or any with --t1-map-fraction) and --fresh-fraction")
    for option, share in (("--rv-wall-fraction", args.rv_wall_fraction), ("--infarct-fraction", args.infarct_fraction)):
        if share and not args.fresh_fraction:
            parser.error(f"{option} draws in the fresh images: give --fresh-fraction too")
    if problem := consistency_options_problem(args.consistency_weight, args.consistency_toward_real):
        parser.error(problem)
    if args.consistency_weight and (args.copies or args.epochs or args.distil_from):
        # a pair's first view is the slice's own image: a fixed synthetic copy would be one; the coarse stage keeps
        # --fresh-fraction's plain meaning; a teacher sees the source image
        parser.error("--consistency-weight pairs each real slice with a fresh synthetic view in the fine stage: give "
                     "--copies 0 and --epochs 0 (the coarse stage from --init-from), without --distil-from")
    if args.distil_from and args.fresh_fraction:  # training.train_stage refuses it, after the slices are made
        parser.error("--distil-from does not combine with --fresh-fraction (the teacher sees the source image)")
    if any("=" not in item for item in args.distil_from):
        parser.error("--distil-from takes SEQUENCE=MODEL, e.g. cine=models/sax_cine.pt")
    teachers = {sequence: torch.jit.load(path, map_location="cpu")
                for sequence, path in (item.split("=", 1) for item in args.distil_from)}
    start = time.perf_counter()
    train, val = training_sets(args.kind, args.copies, args.max_val_slices, args.lge_repeats,
                               args.val_contrast_copies, args.map_look_fraction, args.uneven_blood_fraction,
                               args.myocardial_lesion_fraction)
    print(f"{len(train)} training and {len(val)} validation slices, made in {time.perf_counter() - start:.0f} s",
          flush=True)
    epochs_fine = args.epochs if args.epochs_fine is None else args.epochs_fine
    _, metrics = train_cascade(train, val, "sax", args.out, args.epochs, epochs_fine, init_from=args.init_from,
                               lr=args.lr, threads=args.threads, max_steps_per_epoch=args.max_steps_per_epoch,
                               teachers=teachers or None, distil_weight=args.distil_weight,
                               distance_weight=args.distance_loss_weight,
                               fresh_images=FreshImages(fresh_synthesis(args.kind, args.map_look_fraction,
                                                                        args.uneven_blood_fraction,
                                                                        args.myocardial_lesion_fraction,
                                                                        args.rv_wall_fraction,
                                                                        args.post_contrast_fraction,
                                                                        args.t1_map_fraction,
                                                                        args.infarct_fraction),
                                                        args.fresh_fraction), seed=args.seed,
                               consistency_weight=args.consistency_weight,
                               consistency_toward_real=args.consistency_toward_real,
                               deformation_fraction=args.deformation_fraction)
    # a rerun resumes from the checkpoints in --out: count the earlier runs' time too
    run_path = args.out / "run.json"
    earlier_s = json.loads(run_path.read_text())["wall_s"] if run_path.exists() else 0.0
    (args.out / "run.json").write_text(json.dumps(
        {"kind": args.kind, "sources": SOURCE_SETS, "train_slices": len(train), "val_slices": len(val),
         "copies": args.copies, "lge_repeats": args.lge_repeats,
         "val_contrast_copies": args.val_contrast_copies, "map_look_fraction": args.map_look_fraction,
         "uneven_blood_fraction": args.uneven_blood_fraction,
         "myocardial_lesion_fraction": args.myocardial_lesion_fraction,
         "rv_wall_fraction": args.rv_wall_fraction,
         "post_contrast_fraction": args.post_contrast_fraction, "t1_map_fraction": args.t1_map_fraction,
         "infarct_fraction": args.infarct_fraction, "deformation_fraction": args.deformation_fraction,
         "fresh_fraction": args.fresh_fraction,
         "epochs": args.epochs, "epochs_fine": epochs_fine,
         "lr": args.lr,
         "init_from": str(args.init_from or ""), "distil_from": args.distil_from,
         "distil_weight": args.distil_weight if teachers else None,
         "distance_loss_weight": args.distance_loss_weight, "consistency_weight": args.consistency_weight,
         "consistency_toward_real": args.consistency_toward_real,
         "max_steps_per_epoch": args.max_steps_per_epoch, "max_val_slices": args.max_val_slices,
         "threads": args.threads, "seed": args.seed, "wall_s": earlier_s + time.perf_counter() - start,
         "metrics": metrics},
        indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
