"""Short-axis models on synthetic T1 maps of one scenario at a time: native or post-contrast, 1.5 or 3 T.

The evaluation set ``t1_synthetic`` mixes the scenarios (a third post-contrast); this draws one map of every cine
and LGE validation slice per scenario (seed 7, other draws than the comparison's) and prints, per model, the mean
distance over every labelled landmark (threshold aside), detection at the model's threshold, and the RV insertion
angle's share within 10 degrees; then where the intensity normalisation puts the myocardium and the LV blood pool
(median over the slices of each tissue's median, after preprocess.normalise_intensity), and with
``--clip-at-myocardium F`` the models again on maps clipped at F times their myocardium's median, an oracle (it
needs the labels) for how much of a scenario's loss is the normalised range (fp32; about 1 min per model and
scenario on 2 threads; docs/t1.md, "Post-contrast T1 maps"). ``--slices myops_lesions`` keeps the MyoPS slices
whose labels carry scar or oedema; ``--lesions none`` draws every map without its lesion labels, ``--lesions
drawn`` with an infarct in every slice that has none (synth.contrast.draw_infarct; docs/t1.md, "Where the misses
come from, and infarcts in the T1 maps"):

    CMR_LANDMARK_BF16=0 python scripts/t1_scenario_breakdown.py sax_t1 sax_any
    CMR_LANDMARK_BF16=0 python scripts/t1_scenario_breakdown.py sax_t1 --slices myops_lesions --lesions none
    CMR_LANDMARK_BF16=0 python scripts/t1_scenario_breakdown.py sax_any --rv-wall --scenarios post_1.5
    CMR_LANDMARK_BF16=0 python scripts/t1_scenario_breakdown.py sax_any --clip-at-myocardium 2 --scenarios post_1.5
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

import numpy as np
from compare_sax_models import evaluation_sets, names_option  # a sibling script (scripts/ is on sys.path when run)

from cmr_landmark.datasets import Slice
from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import ANGLE_TOLERANCE_DEG, evaluate_slices
from cmr_landmark.model_store import find_model
from cmr_landmark.preprocess import normalise_intensity
from cmr_landmark.synth.contrast import LV_BLOOD_LABEL, LV_MYOCARDIUM_LABEL, has_lesions
from cmr_landmark.synth.t1 import INFARCT_STREAM, synthetic_t1_slice

SEED = 7
# name: (field strength in T, post-contrast)
SCENARIOS = {"native_1.5": (1.5, False), "native_3": (3.0, False), "post_1.5": (1.5, True), "post_3": (3.0, True)}
MIN_TISSUE_PIXELS = 10  # a slice whose tissue is smaller than this (outside the heart) has no median of it


LESIONS = ("labelled", "none", "drawn")  # --lesions


def scenario_maps(slices: Sequence[Slice], field_strength_t: float, post_contrast: bool, rv_wall: bool,
                  lesions: str = "labelled") -> list[Slice]:
    """One map of every slice in one scenario, reproducible from :data:`SEED`; ``lesions`` (:data:`LESIONS`): the
    slices' scar and oedema labels drawn as they are, left out, or with an infarct drawn in where there are none."""
    if lesions not in LESIONS:
        raise ValueError(f"lesions must be one of {LESIONS}, got {lesions!r}")
    if lesions == "none":
        slices = [dataclasses.replace(s, pathology=None) for s in slices]
    # an infarct from a stream of its own: each map is the one drawn without it, plus the infarct
    return [synthetic_t1_slice(s, np.random.default_rng([SEED, index]), field_strength_t=field_strength_t,
                               post_contrast=post_contrast, rv_wall_fraction=1.0 if rv_wall else 0.0,
                               infarct_fraction=1.0 if lesions == "drawn" else 0.0,
                               infarct_rng=np.random.default_rng([SEED, index, INFARCT_STREAM]))
            for index, s in enumerate(slices)]


def normalised_tissue_medians(maps: Sequence[Slice]) -> tuple[float, float]:
    """(myocardium, LV blood): the median over the maps of each tissue's median after intensity normalisation."""
    medians: dict[int, list[float]] = {LV_MYOCARDIUM_LABEL: [], LV_BLOOD_LABEL: []}
    for s in maps:
        normalised = normalise_intensity(s.image)
        for label, values in medians.items():
            if (s.mask == label).sum() >= MIN_TISSUE_PIXELS:
                values.append(float(np.median(normalised[s.mask == label])))
    return float(np.median(medians[LV_MYOCARDIUM_LABEL])), float(np.median(medians[LV_BLOOD_LABEL]))


def clipped_at_myocardium(maps: Sequence[Slice], factor: float) -> list[Slice]:
    """Each map clipped at ``factor`` times its (healthy and diseased) myocardium's median value."""
    clipped = []
    for s in maps:
        myocardium = s.image[s.mask == LV_MYOCARDIUM_LABEL]
        reference = np.median(myocardium) if myocardium.size else np.median(s.image)
        clipped.append(dataclasses.replace(s, image=np.minimum(s.image, factor * reference)))
    return clipped


def model_line(name: str, detector: Detector, maps: Sequence[Slice]) -> str:
    evaluation = evaluate_slices(detector, maps)
    angle = next(row for row in evaluation.measure_rows if row["measure"] == "rv_insertion_angle")
    anterior = evaluation.labelled[:, 0]  # A-RVI, the landmark the maps lose most
    return (f"  {name:>10}: {evaluation.mean_distance_mm:5.2f} mm, detection "
            f"{100 * evaluation.detected[evaluation.labelled].mean():4.1f} % (A-RVI "
            f"{100 * evaluation.detected[anterior, 0].mean():.0f} % of {anterior.sum()}), angle within "
            f"{ANGLE_TOLERANCE_DEG:g} deg on {angle['within_tolerance_pct']:.0f} % of {angle['slices']} slices")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="shipped short-axis model names (models/manifest.json)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"of {', '.join(SCENARIOS)}")
    parser.add_argument("--rv-wall", action="store_true", help="every map with the RV free wall as myocardium")
    parser.add_argument("--slices", choices=("all", "myops_lesions"), default="all",
                        help="every validation slice, or the MyoPS slices with scar or oedema labels")
    parser.add_argument("--lesions", choices=LESIONS, default="labelled",
                        help="scar and oedema as labelled (MyoPS), left out, or an infarct drawn where none is")
    parser.add_argument("--clip-at-myocardium", type=float, metavar="F",
                        help="also measure on the maps clipped at F times their myocardium's median (an oracle)")
    args = parser.parse_args()
    names = names_option(parser, "--scenarios", args.scenarios, list(SCENARIOS))
    if args.slices == "myops_lesions" and args.lesions == "drawn":
        parser.error("--lesions drawn draws infarcts where the labels have none, and the myops_lesions slices all "
                     "have some")
    if args.clip_at_myocardium is not None and not args.clip_at_myocardium > 0:
        parser.error(f"--clip-at-myocardium must be a positive factor, got {args.clip_at_myocardium:g}")
    detectors = {name: Detector(find_model("sax", "cine", name=name), use_bf16=False) for name in args.models}
    real = evaluation_sets(["cine", "lge"])  # the comparison's validation slices, the maps' sources there too
    slices = [s for s in real["cine"] + real["lge"]
              if s.mask is not None and (args.slices == "all" or (s.dataset == "myops" and has_lesions(s.pathology)))]
    for scenario in names:
        maps = scenario_maps(slices, *SCENARIOS[scenario], args.rv_wall, args.lesions)
        myocardium, blood = normalised_tissue_medians(maps)
        print(f"{scenario}{' with the RV wall' if args.rv_wall else ''}, {args.slices} slices, lesions "
              f"{args.lesions} ({len(maps)} maps): normalised myocardium "
              f"{myocardium:.2f}, LV blood {blood:.2f}", flush=True)
        for name, detector in detectors.items():
            print(model_line(name, detector, maps), flush=True)
        if args.clip_at_myocardium is not None:
            clipped = clipped_at_myocardium(maps, args.clip_at_myocardium)
            print(f"  clipped at {args.clip_at_myocardium:g} x the myocardium:", flush=True)
            for name, detector in detectors.items():
                print(model_line(name, detector, clipped), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
