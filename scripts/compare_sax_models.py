"""Compare short-axis models on real cine / LGE validation slices and on synthetic T1 maps; optionally ship one.

    # every model by manifest name (models/) or training run folder (NAME=RUN_DIR), on every evaluation set
    python scripts/compare_sax_models.py --model sax_cine --model sax_lge --model sax_t1 --model sax_any \
        --out .cache/compare_sax

    # export a training run as a shipped model (threshold chosen on its training images), then compare;
    # its card holds the tables (--overwrite: models/ has a sax_any, and --ship replaces a model only with it)
    python scripts/compare_sax_models.py --model sax_cine --model sax_any=.cache/runs/sax_any \
        --out .cache/compare_sax --ship sax_any=any --overwrite

Evaluation sets (patient-level validation splits, cmr_landmark/splits.json): ``cine`` = ACDC + MyoPS bSSFP,
``lge`` = MS-CMRSeg + MyoPS LGE, ``mnms2_cine`` = the M&Ms-2 subject (another centre), ``t1_synthetic`` =
synthetic MOLLI maps (seed 3) of the cine + LGE validation slices (the T1 training validated on other draws,
seed 2; about a third post-contrast), ``t1_synthetic_post_contrast`` = the same drawn again with every map
post-contrast (1.5 or 3 T; the maps an ECV map is made from, where blood, fat and the liver are all short),
``t1_synthetic_infarct`` = each ``t1_synthetic`` map with an infarct drawn in (synth.contrast.draw_infarct, from a
stream of its own, so the map is the same elsewhere) where the slice has no scar or oedema labels,
``random_contrast`` = random per-tissue contrast copies of the same slices (seed 4; the contrast-agnostic
training used seeds 1 and 2), a stand-in for a contrast the sequence-specific models never saw,
``t1_synthetic_uneven_blood`` and ``random_contrast_uneven_blood`` = those two drawn again with patches of signal
in every blood pool (synth.contrast.uneven_blood_signal; the draws after the patches, blur, shading, noise, differ
too, so they are not the plain sets' images plus patches), and ``t2_map``, ``t2star_map``, ``ecv_map``,
``t2w_black_blood`` = the same slices as clinical contrasts no model was trained on (synth.clinical_contrasts, seed
6), the unseen contrasts of issue #5, and ``*_rv_wall`` = the synthetic T1 maps and the four clinical contrasts
drawn again with every image's RV free wall at the myocardium's value (synth.contrast.draw_rv_wall). The
comparison ends with detection, false positives and their difference (Youden's J) pooled over the synthetic maps
(T1 + clinical, and their RV-wall versions), each shipped model at its own threshold. Results per model
and set are kept in ``--out`` so a rerun only evaluates what is new (a new model file, or a set whose images
changed). ``--operating-points`` adds, per model and set, detection and false-positive rates at several
probability thresholds (the peak probabilities are kept).

    # switch a shipped model's mirror pooling (config.MIRROR_POOLINGS) and re-choose its threshold by its rule
    python scripts/compare_sax_models.py --model sax_any --model sax_cine --out .cache/compare_sax \
        --repool sax_any=log_linear

Threshold rule (export and --repool): Youden's J on every labelled training slice as the model's kind of image: real
cine + LGE for a sequence-specific model, their synthetic T1 maps for 't1', and for 'any' - meant for contrasts
no model was trained on - each with a fresh random contrast (seed 5: draws it never trained or chose its epoch on).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shlex
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cmr_landmark.config import (
    COARSE_GRID,
    DEFAULT_PROBABILITY_THRESHOLD,
    FINE_CENTROID_RADIUS_MM,
    FINE_GRID_BY_VIEW,
    MIRROR_POOLINGS,
    SAX_LANDMARKS,
    models_dir,
)
from cmr_landmark.detector import Detector
from cmr_landmark.display_orientation import mean_rv_direction_deg
from cmr_landmark.evaluation import (
    ANGLE_TOLERANCE_DEG,
    Evaluation,
    choose_threshold,
    consistency_pull,
    evaluate_slices,
    paired_difference,
)
from cmr_landmark.export import export_cascade
from cmr_landmark.model_store import edit_manifest, find_model, model_names, sha256_of
from cmr_landmark.synth.clinical_contrasts import CLINICAL_CONTRASTS, clinical_contrast_slices
from cmr_landmark.synth.contrast import random_contrast_slices
from cmr_landmark.synth.t1 import POST_CONTRAST_PROBABILITY, synthetic_t1_slices
from cmr_landmark.training import load_cascade, load_labelled_slices

EVALUATION_SEED_T1 = 3
EVALUATION_SEED_CONTRAST = 4  # the 'any' training drew its copies with seeds 1 (train) and 2 (val)
THRESHOLD_SEED_CONTRAST = 5
EVALUATION_SEED_CLINICAL = 6  # evaluation only: no training draws these contrasts
OPERATING_POINTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.875, 0.9, 0.925, 0.95)
TRAINING_SEED_T1 = 1  # scripts/train_sax_synthetic.py


# The synthetic maps again with every image's RV free wall at the myocardium's value (synth.contrast.draw_rv_wall),
# as real maps show it: docs/t1.md, "The RV free wall in the synthetic images".
RV_WALL_SUFFIX = "_rv_wall"
CLINICAL_RV_WALL_SETS = tuple(f"{kind}{RV_WALL_SUFFIX}" for kind in CLINICAL_CONTRASTS)
SET_NAMES = ("cine", "lge", "mnms2_cine", "t1_synthetic", "t1_synthetic_post_contrast", "t1_synthetic_infarct",
             "random_contrast", "t1_synthetic_uneven_blood",
             "random_contrast_uneven_blood", *CLINICAL_CONTRASTS, f"t1_synthetic{RV_WALL_SUFFIX}",
             *CLINICAL_RV_WALL_SETS)


def names_option(parser: argparse.ArgumentParser, option: str, text: str, known: Sequence[str]) -> list[str]:
    """The comma-separated names of an option's ``text``, each one of ``known``; else the parser's error (exit 2)
    naming the unknown ones and the choices."""
    names = [name for name in text.split(",") if name]
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        parser.error(f"{option}: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
    return names


def evaluation_sets(names: Sequence[str]) -> dict[str, list]:
    """The sets of ``names`` that are in :data:`SET_NAMES`, in its order; only those are loaded or synthesised."""
    real = {"cine": (["acdc", "myops"], "cine"), "lge": (["mscmrseg_lge", "myops"], "lge")}
    loaded: dict[str, list] = {}

    def validation(sequence: str) -> list:
        if sequence not in loaded:
            loaded[sequence] = load_labelled_slices(real[sequence][0], "val", "sax", real[sequence][1])
        return loaded[sequence]

    def cine_and_lge() -> list:  # the slices every synthetic set is made from
        return validation("cine") + validation("lge")

    def clinical(kind: str, rv_wall_fraction: float = 0.0) -> list:
        return clinical_contrast_slices(cine_and_lge(), kind, EVALUATION_SEED_CLINICAL, rv_wall_fraction)

    builders = {
        "cine": lambda: validation("cine"),
        "lge": lambda: validation("lge"),
        "mnms2_cine": lambda: load_labelled_slices(["mnms2"], "val", "sax", "cine"),
        "t1_synthetic": lambda: synthetic_t1_slices(cine_and_lge(), EVALUATION_SEED_T1),
        "t1_synthetic_post_contrast": lambda: synthetic_t1_slices(cine_and_lge(), EVALUATION_SEED_T1,
                                                                  post_contrast=True),
        "t1_synthetic_infarct": lambda: synthetic_t1_slices(cine_and_lge(), EVALUATION_SEED_T1, infarct_fraction=1.0),
        "random_contrast": lambda: random_contrast_slices(cine_and_lge(), EVALUATION_SEED_CONTRAST),
        "t1_synthetic_uneven_blood": lambda: synthetic_t1_slices(cine_and_lge(), EVALUATION_SEED_T1,
                                                                 uneven_blood_fraction=1.0),
        "random_contrast_uneven_blood": lambda: random_contrast_slices(cine_and_lge(), EVALUATION_SEED_CONTRAST,
                                                                       uneven_blood_fraction=1.0),
        **{kind: functools.partial(clinical, kind) for kind in CLINICAL_CONTRASTS},
        f"t1_synthetic{RV_WALL_SUFFIX}": lambda: synthetic_t1_slices(cine_and_lge(), EVALUATION_SEED_T1,
                                                                     rv_wall_fraction=1.0),
        **{f"{kind}{RV_WALL_SUFFIX}": functools.partial(clinical, kind, 1.0) for kind in CLINICAL_CONTRASTS},
    }
    return {name: builders[name]() for name in SET_NAMES if name in names}


# Bumped when result_row gains or changes a figure, so that results cached before are measured again
# (2: each angle's share within 10 degrees and the anterior RV insertion's direction).
RESULT_FORMAT = 2


def result_row(evaluation: Evaluation) -> dict:
    """Mean distance over every labelled landmark (threshold aside), per landmark (found ones), and each clinical
    measure (``evaluation.measure_table``: the RV insertion angle and the anterior insertion's direction)."""
    distances = evaluation.distances_mm
    row = {"slices": len(distances), "mean_all_mm": evaluation.mean_distance_mm,
           "distances_mm": np.where(evaluation.labelled, distances, np.nan).tolist(),
           "probability": evaluation.probability.tolist(), "labelled": evaluation.labelled.tolist()}
    for landmark in evaluation.landmark_rows:
        row[landmark["landmark"]] = {key: landmark[key] for key in ("detection_rate_pct", "mean_mm", "sd_mm",
                                                                    "median_mm", "p95_mm")}
    for measure in evaluation.measure_rows:
        row[measure["measure"]] = {key: measure[key] for key in ("slices", "difference_mean", "difference_sd",
                                                                 "abs_difference_mean", "within_tolerance_pct")}
    return row


def set_fingerprint(slices: list) -> str:
    """sha256 of a set's images and landmarks: a cached result is reused only for the very images it was
    measured on (a changed generator or seed makes the set new)."""
    digest = hashlib.sha256()
    for s in slices:
        digest.update(np.ascontiguousarray(s.image, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(s.landmarks_rc, dtype=np.float64).tobytes())
    return digest.hexdigest()


def model_source(text: str) -> tuple[str, Path | None]:
    name, _, run = text.partition("=")
    return name, Path(run) if run else None


def evaluate_model(name: str, run: Path | None, sets: dict[str, list], fingerprints: dict[str, str], out: Path,
                   mirror_average: bool, mirror_pooling: str) -> dict:
    """A shipped model runs as its manifest says (threshold, mirror averaging and pooling); a run folder at the
    default threshold, with ``mirror_average`` and ``mirror_pooling``."""
    if run is None:
        spec = find_model("sax", "cine", name=name)
        model, threshold = Detector(spec, use_bf16=False), None  # fp32: figures that do not depend on the CPU
        own_threshold = spec.probability_threshold
        identity = (f"{sha256_of(spec.file)} mirror_average={spec.mirror_average} pooling={spec.mirror_pooling} "
                    f"threshold={spec.probability_threshold}")
    else:
        model = load_cascade(run, "sax")
        identity = (sha256_of(run / "fine_best.pt") + sha256_of(run / "coarse_best.pt") +
                    f" mirror_average={mirror_average} pooling={mirror_pooling}")
        threshold = own_threshold = DEFAULT_PROBABILITY_THRESHOLD
    identity += f" results={RESULT_FORMAT} angle_tolerance={ANGLE_TOLERANCE_DEG:g}"
    cache = out / f"{name}.json"
    results = json.loads(cache.read_text()) if cache.exists() else {}
    if results.get("identity") != identity:
        results = {"identity": identity}
    results["probability_threshold"] = own_threshold
    for set_name, slices in sets.items():
        fingerprint = fingerprints[set_name]
        if results.get(set_name, {}).get("fingerprint") != fingerprint:
            results[set_name] = result_row(evaluate_slices(model, slices, threshold, mirror_average=mirror_average,
                                                           mirror_pooling=mirror_pooling))
            results[set_name]["fingerprint"] = fingerprint
            cache.write_text(json.dumps(results, default=float) + "\n")
        print(f"{name:>12} {set_name:>13}: {results[set_name]['mean_all_mm']:.2f} mm", flush=True)
    return results


def paired_difference_mm(a: dict, b: dict, patients: Sequence[str] | None = None) -> tuple[float, float]:
    """Mean (a - b) distance over the landmarks both were measured on, and its 95% half-width: over landmarks, or
    with ``patients`` (one name per slice) over patients (evaluation.paired_difference)."""
    return paired_difference(a["distances_mm"], b["distances_mm"], patients)


def paired_intervals_mm(a: dict, b: dict, patients: Sequence[str]) -> tuple[float, float, float]:
    """Mean (a - b) distance and its 95% half-widths over landmarks and over ``patients`` (one name per slice)."""
    mean, over_landmarks = paired_difference_mm(a, b)
    return mean, over_landmarks, paired_difference_mm(a, b, patients)[1]


def patient_names(slices: Sequence) -> list[str]:
    """Each slice's patient, as ``dataset/patient``: a synthetic set keeps its source slices' patients."""
    return [f"{s.dataset}/{s.patient}" for s in slices]


def pooled_distances(result: dict, set_names: list[str]) -> dict:
    """A model's distances per labelled landmark averaged over ``set_names``, sets of the same slices (the clinical
    contrasts): the images of a slice share its anatomy, so the pooled interval is taken over landmarks, not over
    images."""
    return {"distances_mm": np.mean([np.asarray(result[name]["distances_mm"], dtype=float) for name in set_names],
                                    axis=0).tolist()}


def tables_markdown(results: dict[str, dict], set_names: list[str]) -> str:
    tolerance = f"{ANGLE_TOLERANCE_DEG:g}"
    lines = ["Mean distance to the derived label (mm) over every labelled landmark, threshold aside; per landmark the "
             "mean of the found ones and the detection rate (shipped models at their own probability threshold, "
             "training runs at 0.3); RV insertion angle error, predicted minus label, mean +- SD (deg), and the "
             f"share within {tolerance} degrees of the slices where all three points are found; the anterior RV "
             "insertion's direction from the LV centre (the AHA segment model's orientation, as the image is "
             f"displayed): mean absolute error (deg) and the share within {tolerance} degrees of the slices where "
             "A-RVI and C-LV are found.", ""]
    for set_name in set_names:
        lines += [f"**{set_name}** ({next(iter(results.values()))[set_name]['slices']} slices)", "",
                  "| model | mean all (mm) | A-RVI mm (det %) | P-RVI mm (det %) | C-LV mm (det %) | angle error deg "
                  f"(within {tolerance}, of slices) | A-RVI direction error deg (within {tolerance}, of slices) |",
                  "|---|---|---|---|---|---|---|"]
        for name, result in results.items():
            row = result[set_name]
            cells = [f"{row[k]['mean_mm']:.2f} ({row[k]['detection_rate_pct']:.0f}%)" for k in ("A-RVI", "P-RVI",
                                                                                                  "C-LV")]
            angle, direction = row["rv_insertion_angle"], row["anterior_rvi_direction"]
            lines.append(f"| {name} | {row['mean_all_mm']:.2f} | {' | '.join(cells)} | "
                         f"{angle['difference_mean']:+.1f} +- {angle['difference_sd']:.1f} "
                         f"({angle['within_tolerance_pct']:.0f}% of {angle['slices']}) | "
                         f"{direction['abs_difference_mean']:.1f} ({direction['within_tolerance_pct']:.0f}% of "
                         f"{direction['slices']}) |")
        lines.append("")
    return "\n".join(lines)


def comparison_markdown(results: dict[str, dict], set_names: list[str], patients: dict[str, list[str]]) -> str:
    """Paired differences of every model against every other on each set (mean over shared landmarks, 95% CI over
    landmarks and over the set's ``patients``: one name per slice)."""
    names = list(results)
    pooled = "clinical contrasts pooled"
    for pool_name, members in ((pooled, CLINICAL_CONTRASTS), (f"{pooled}{RV_WALL_SUFFIX}", CLINICAL_RV_WALL_SETS)):
        if set(members) <= set(set_names):
            results = {name: {**result, pool_name: pooled_distances(result, list(members))}
                       for name, result in results.items()}
            # the members are images of the same slices, so of the same patients
            patients = {**patients, pool_name: patients[next(iter(members))]}
            set_names = [*set_names, pool_name]
    lines = ["Paired difference in distance, row model minus column model (mm, mean +- 95% half-width over landmarks "
             "/ over patients, each patient's slices one draw (evaluation.paired_difference); "
             f"'{pooled}': each landmark's distance averaged over the four first, '{pooled}{RV_WALL_SUFFIX}' over "
             "their versions with an RV wall):", ""]
    for set_name in set_names:
        lines += [f"**{set_name}** ({len(set(patients[set_name]))} patients)", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for a in names:
            cells = []
            for b in names:
                mean, half, patient_half = paired_intervals_mm(results[a][set_name], results[b][set_name],
                                                               patients[set_name])
                over_patients = "n/a" if np.isnan(patient_half) else f"{patient_half:.2f}"  # one patient: none
                cells.append("" if a == b else f"{mean:+.2f} +- {half:.2f} / {over_patients}")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# The synthetic maps pooled for detection (issue #5's unseen contrasts, and T1 maps): T1 and the four clinical kinds.
SYNTHETIC_MAP_GROUPS = {"T1 + clinical": ("t1_synthetic", *CLINICAL_CONTRASTS),
                        f"T1 + clinical{RV_WALL_SUFFIX}": (f"t1_synthetic{RV_WALL_SUFFIX}", *CLINICAL_RV_WALL_SETS)}


def synthetic_map_detection_markdown(results: dict[str, dict], set_names: list[str]) -> str:
    """Per model, at its threshold (a shipped model's own, a run folder's the default), pooled over each group of
    :data:`SYNTHETIC_MAP_GROUPS` that was measured: detection and false-positive rate (% of labelled / absent
    landmarks), J = their difference, and the anterior RV insertion's detection alone."""
    anterior = SAX_LANDMARKS.index("A-RVI")
    lines = []
    for group, members in SYNTHETIC_MAP_GROUPS.items():
        if not set(members) <= set(set_names):
            continue
        lines += [f"**Synthetic maps pooled: {group}** (shipped models at their own threshold, run folders at "
                  f"{DEFAULT_PROBABILITY_THRESHOLD:g})", "",
                  "| model | threshold | detection % | false positives % | J | A-RVI detection % |",
                  "|---|---|---|---|---|---|"]
        for name, result in results.items():
            threshold = result["probability_threshold"]
            found = np.concatenate([np.asarray(result[m]["probability"]) >= threshold for m in members])
            labelled = np.concatenate([np.asarray(result[m]["labelled"], dtype=bool) for m in members])
            detection = 100 * found[labelled].mean()
            false_positive = 100 * found[~labelled].mean() if (~labelled).any() else 0.0
            anterior_detection = 100 * found[:, anterior][labelled[:, anterior]].mean()
            lines.append(f"| {name} | {threshold:g} | {detection:.1f} | {false_positive:.1f} | "
                         f"{detection - false_positive:.1f} | {anterior_detection:.1f} |")
        lines.append("")
    return "\n".join(lines)


def operating_points_markdown(results: dict[str, dict], set_names: list[str]) -> str:
    """Per model and set: detection % / false positives % (of slices without the landmark) over all landmarks."""
    lines = ["Detection / false positives (% of labelled landmarks found / % of absent ones reported), all three "
             "landmarks pooled, by probability threshold:", ""]
    for set_name in set_names:
        lines += [f"**{set_name}**", "", "| model | " + " | ".join(f"{t:g}" for t in OPERATING_POINTS) + " |",
                  "|---" * (len(OPERATING_POINTS) + 1) + "|"]
        for name, result in results.items():
            probability = np.asarray(result[set_name]["probability"])
            labelled = np.asarray(result[set_name]["labelled"], dtype=bool)
            cells = []
            for threshold in OPERATING_POINTS:
                found = probability >= threshold
                false_positive = f"{100 * found[~labelled].mean():.0f}" if (~labelled).any() else "-"
                cells.append(f"{100 * found[labelled].mean():.1f} / {false_positive}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def threshold_images(kind: str) -> list:
    """Every labelled SAX training slice as the kind of image a model was trained for, to choose its threshold on:
    synthetic T1 maps for 't1', random-contrast copies for 'any' (the contrasts it is for), else the real ones.
    All of them, not a subset: detection minus false positives is flat near its best, and 400 slices moved the
    chosen threshold by +-0.075 from one draw to the next (docs/t1.md, "What condition (3) measures")."""
    real = [s for sequence, names in (("cine", ("acdc", "myops")), ("lge", ("mscmrseg_lge", "myops")))
            for s in load_labelled_slices(list(names), "train", "sax", sequence)]
    if kind == "t1":
        return synthetic_t1_slices(real, TRAINING_SEED_T1)
    return random_contrast_slices(real, THRESHOLD_SEED_CONTRAST) if kind == "any" else real


def repool_shipped(name: str, pooling: str) -> tuple[float, float]:
    """Set a shipped model's ``mirror_pooling`` in the manifest and re-choose its threshold by the rule above;
    (old threshold, new threshold)."""
    spec = replace(find_model("sax", "cine", name=name), mirror_pooling=pooling)
    threshold = choose_threshold(evaluate_slices(Detector(spec, use_bf16=False), threshold_images(spec.sequence), 0.5))

    def set_pooling(manifest: dict) -> float:
        entry = next(e for e in manifest["models"] if e["name"] == name)
        old = entry["probability_threshold"]
        entry["mirror_pooling"], entry["probability_threshold"] = pooling, threshold
        return old

    return edit_manifest(models_dir(), set_pooling), threshold


def export_run(name: str, sequence: str, run: Path, mirror_average: bool, mirror_pooling: str) -> dict:
    """Freeze ``run`` into models/ as ``name`` with the threshold chosen on its training images; the run's facts."""
    run_info = json.loads((run / "run.json").read_text())
    cascade = load_cascade(run, "sax")
    threshold_slices = threshold_images(run_info["kind"])
    threshold = choose_threshold(evaluate_slices(cascade, threshold_slices, 0.5, mirror_average=mirror_average,
                                                 mirror_pooling=mirror_pooling))
    run_info["threshold"], run_info["mirror_average"] = threshold, mirror_average
    run_info["threshold_images"] = len(threshold_slices)
    run_info["mirror_pooling"] = mirror_pooling
    export_cascade(cascade, name, "sax", sequence, COARSE_GRID, FINE_GRID_BY_VIEW["sax"], threshold, models_dir(),
                   card=f"# {name}\n\nSee the measured tables below once written by scripts/compare_sax_models.py.\n",
                   extra={"trained_on": run_info["kind"], "train_slices": run_info["train_slices"],
                          "display_rv_direction_deg": round(mean_rv_direction_deg(threshold_slices), 1)},
                   mirror_average=mirror_average, mirror_pooling=mirror_pooling, embed_training_state=True)
    return run_info


def verdict(name: str, results: dict[str, dict], patients: dict[str, list[str]]) -> str:
    """Paired differences against the sequence-specific models on their own contrast, where both were measured."""
    parts = []
    for other, set_name in (("sax_cine", "cine"), ("sax_lge", "lge"), ("sax_cine", "t1_synthetic"),
                            ("sax_lge", "t1_synthetic")):
        # a cached result may hold sets this run did not load (--sets): only this run's have their patients
        if other in results and name in results and set_name in results[name] and set_name in patients:
            mean, half, patient_half = paired_intervals_mm(results[name][set_name], results[other][set_name],
                                                           patients[set_name])
            parts.append(f"{mean:+.2f} +- {half:.2f} mm (+- {patient_half:.2f} over patients) against {other} on "
                         f"{set_name}")
    return ("- **Against the sequence-specific models** (paired, this model minus the other; 95% half-widths over "
            "landmarks and over patients): " + "; ".join(parts) + ".")


def loses_at_most_half_a_millimetre(name: str, results: dict[str, dict]) -> bool:
    """The contrast-agnostic goal: on cine and on LGE, at most 0.5 mm worse (paired mean) than sax_cine / sax_lge."""
    differences = [paired_difference_mm(results[name][set_name], results[other][set_name])[0]
                   for other, set_name in (("sax_cine", "cine"), ("sax_lge", "lge"))
                   if other in results and set_name in results[name]]
    return len(differences) == 2 and max(differences) <= 0.5


def chosen_epoch(run_info: dict) -> str:
    """Which fine epoch validation kept, from the run's own metrics (their epochs count from 0), so that a card never
    quotes it from memory."""
    fine = run_info.get("metrics", {}).get("fine")
    if not fine or fine["epoch"] < 0:
        return ""
    return (f"; validation chose fine epoch {fine['epoch'] + 1} of {run_info.get('epochs_fine', run_info['epochs'])} "
            f"({fine['val_mean_mm']:.2f} mm on the validation images)")


def training_images(run_info: dict) -> str:
    """What a run's card says it trained on: synthetic T1 maps, or real slices with random contrasts; with
    consistency pairs (fine stage), every real image and a synthetic view of it."""
    fresh, pairs = run_info.get("fresh_fraction"), run_info.get("consistency_weight")
    real = "the real labelled SAX cine and LGE slices of the training splits"
    if run_info["kind"] == "t1":
        maps = "synthetic MOLLI T1 maps (cmr_landmark.synth.t1)"
        if pairs:
            return f"{real}, each fine item the real image and one of {maps} of it, a new map every epoch " \
                   "(training.FreshImages)"
        return f"{maps} of every labelled SAX slice of the training splits" + (
            ", a new map of each every epoch (training.FreshImages)" if fresh else "")
    contrast = "a fresh random per-tissue contrast every epoch (training.FreshImages, cmr_landmark.synth.contrast)"
    return (real
            + ((f", each fine item the real image and a second view, {fresh:.0%} of the second views {contrast}"
                if pairs else f", {fresh:.0%} of them given {contrast}") if fresh else "")
            + (f", {run_info['map_look_fraction']:.0%} of the random contrasts with the look of a fitted parameter "
               "map (synth.t1.with_fitted_map_look)" if run_info.get("map_look_fraction") else "")
            + (" plus random per-tissue contrast copies (cmr_landmark.synth.contrast)" if run_info["copies"] else ""))


# scripts/train_sax_synthetic.py's options that make a recipe, in the order a card's rerun line writes them: the
# run.json key each sets and the script's default (None: written whatever the run's value). An option whose value in
# the run is its default is left out; a list is one option per item, True a bare flag.
RECIPE_OPTIONS: tuple[tuple[str, str, object], ...] = (
    ("--init-from", "init_from", None), ("--lr", "lr", None), ("--epochs", "epochs", None),
    ("--epochs-fine", "epochs_fine", None), ("--copies", "copies", None), ("--fresh-fraction", "fresh_fraction", 0.0),
    ("--max-steps-per-epoch", "max_steps_per_epoch", None), ("--max-val-slices", "max_val_slices", None),
    ("--val-contrast-copies", "val_contrast_copies", 0), ("--lge-repeats", "lge_repeats", 1),
    ("--map-look-fraction", "map_look_fraction", 0.0), ("--uneven-blood-fraction", "uneven_blood_fraction", 0.0),
    ("--myocardial-lesion-fraction", "myocardial_lesion_fraction", 0.0),
    ("--rv-wall-fraction", "rv_wall_fraction", 0.0),
    ("--post-contrast-fraction", "post_contrast_fraction", POST_CONTRAST_PROBABILITY),
    ("--t1-map-fraction", "t1_map_fraction", 0.0), ("--infarct-fraction", "infarct_fraction", 0.0),
    ("--deformation-fraction", "deformation_fraction", 0.0),
    ("--distil-from", "distil_from", []),
    ("--distil-weight", "distil_weight", 0.5), ("--distance-loss-weight", "distance_loss_weight", 0.0),
    ("--consistency-weight", "consistency_weight", 0.0),
    ("--consistency-toward-real", "consistency_toward_real", False),
    ("--threads", "threads", None), ("--seed", "seed", 0),
)


def rerun_command(run_info: dict) -> str:
    """The scripts/train_sax_synthetic.py command that trains the run again (into a folder named RUN), or for a
    weight soup the scripts/weight_soup.py command that averages its runs again."""
    if run_info.get("soup_of"):
        return " ".join(["python scripts/weight_soup.py", *map(shlex.quote, run_info["soup_of"]), "--out RUN"])
    words = ["python scripts/train_sax_synthetic.py", run_info["kind"]]
    for option, key, default in RECIPE_OPTIONS:
        value = run_info.get(key)
        if value is None or value == "" or value == default:  # "": trained from scratch
            continue
        if value is True:
            words.append(option)
        else:
            words += [f"{option} {shlex.quote(str(item))}" for item in (value if isinstance(value, list) else [value])]
    return " ".join([*words, "--out RUN"])


def write_card(name: str, sequence: str, run_info: dict, tables: str, comparison: str, results: dict[str, dict],
               patients: dict[str, list[str]]) -> Path:
    images = training_images(run_info)
    synthetic = "maps" if run_info["kind"] == "t1" else "random contrasts"
    kind = (images
            + (f"; {run_info['uneven_blood_fraction']:.0%} of the {synthetic} with patches of signal in the blood "
               "pools (synth.contrast.uneven_blood_signal; the threshold below is chosen on images without them)"
               if run_info.get("uneven_blood_fraction") else "")
            + (f"; {run_info['myocardial_lesion_fraction']:.0%} of the random contrasts with lesion-like patches in "
               "the myocardium (synth.contrast.add_myocardial_lesions)"
               if run_info.get("myocardial_lesion_fraction") else "")
            + (f"; {run_info['rv_wall_fraction']:.0%} of the fresh {synthetic} with the RV free wall at the "
               "myocardium's value (synth.contrast.draw_rv_wall; the validation images and the threshold's images "
               "without)"
               if run_info.get("rv_wall_fraction") else "")
            + (f"; {run_info['t1_map_fraction']:.0%} of the fresh images synthetic T1 maps (synth.t1) instead of "
               "random contrasts" if run_info.get("t1_map_fraction") else "")
            + (f"; {run_info['post_contrast_fraction']:.0%} of the fresh maps post-contrast (the validation maps "
               f"{POST_CONTRAST_PROBABILITY:.0%}, as draw_t1_scenario leaves it to chance)"
               if run_info.get("post_contrast_fraction") not in (None, POST_CONTRAST_PROBABILITY) else "")
            + ((f"; {run_info['infarct_fraction']:.0%} of the fresh maps of slices without lesion labels with an "
                "infarct drawn in (synth.contrast.draw_infarct; every map shows the MyoPS labels' scar and oedema)"
                if run_info["kind"] == "t1" else
                f"; {run_info['infarct_fraction']:.0%} of the fresh images with scar and oedema, the MyoPS labels' "
                "or an infarct drawn in (synth.contrast.draw_infarct, add_infarct)")
               + " (the validation images and the threshold's images without drawn ones)"
               if run_info.get("infarct_fraction") else "")
            + (f"; {run_info['deformation_fraction']:.0%} of the training items, real or fresh, warped by a smooth "
               "random field of up to 3 mm RMS (augment.SmoothDeformation; the validation images not)"
               if run_info.get("deformation_fraction") else ""))
    card = "\n".join([
        f"# {name}: short-axis landmarks (A-RVI, P-RVI, C-LV), sequence '{sequence}'", "",
        f"- **Training data**: {kind}; sources {json.dumps(run_info['sources'])} (patient-level splits, "
        f"cmr_landmark/splits.json); {run_info['train_slices']} training images"
        + (f" ({run_info['copies']} synthetic per source slice)" if run_info["copies"] else "")
        + f"; {run_info['val_slices']} validation images (evenly spaced over the validation split"
        f"{', synthetic maps, other draws than below' if run_info['kind'] == 't1' else ''}"
        + (f", with {run_info['val_contrast_copies']} random-contrast copy of each, drawn apart from the training "
           "copies, so that the epoch was chosen for contrasts the model had not seen"
           if run_info.get("val_contrast_copies") else "")
        + (f"; each LGE training image {run_info['lge_repeats']} times" if run_info.get("lge_repeats", 1) > 1 else "")
        + ") chose the epoch.",
        "- **Training**: "
        + (f"the key-by-key average of the weights of the runs {', '.join(run_info['soup_of'])} (a uniform weight "
           "soup, scripts/weight_soup.py), the first trained by " if run_info.get("soup_of") else "")
        + f"cmr_landmark.training.train_cascade, {run_info['epochs']} coarse and "
        f"{run_info.get('epochs_fine', run_info['epochs'])} fine epochs of "
        + (f"at most {run_info['max_steps_per_epoch']}" if run_info["max_steps_per_epoch"] else "all the")
        + f" batches of 24{' pairs' if run_info.get('consistency_weight') else ''}, Adam lr {run_info['lr']}, "
        "initialised from "
        f"{run_info['init_from'] or 'scratch'}"
        + (f", its targets the labels mixed with the maps of the teachers {', '.join(run_info['distil_from'])} on the "
           f"real image (knowledge distillation, teacher weight {run_info['distil_weight']})"
           if run_info.get("distil_from") else "")
        + (f", the fine stage's loss with the distance term (training.point_distance_loss, weight "
           f"{run_info['distance_loss_weight']} per mm)" if run_info.get("distance_loss_weight") else "")
        + (", " + consistency_pull(run_info["consistency_weight"], run_info.get("consistency_toward_real", False))
           if run_info.get("consistency_weight") else "")
        + chosen_epoch(run_info)
        + f"; {run_info['threads']} CPU thread{'s' if run_info['threads'] > 1 else ''} (shared machine), "
        + f"{run_info['wall_s'] / 60:.0f} min"
        # a soup's time is its runs' summed (scripts/weight_soup.py), whether they ran side by side or in turn
        + (f" summed over its {len(run_info['soup_of'])} runs" if run_info.get("soup_of") else "")
        + f". Rerun: `{rerun_command(run_info)}` (docs/t1.md).",
        "- **Inference**: " + ("fine stage averaged over the crop and its left-right mirror (manifest "
                               "`mirror_average`)" + (", the two passes pooled log-linearly (softmax of their mean "
                                                      "log-probability, manifest `mirror_pooling`: docs/t1.md)"
                                                      if run_info.get("mirror_pooling") == "log_linear" else "")
                               + "; " if run_info.get("mirror_average") else "one pass per stage; ")
        + f"each fine point is the centre of mass of its map within {FINE_CENTROID_RADIUS_MM:g} mm of the peak "
        "(manifest `fine_centroid_radius_mm`; docs/training.md, \"Decoding\").",
        f"- **Probability threshold** {run_info['threshold']:.3f}: maximises detection minus false-positive rate "
        f"on {run_info['threshold_images']} training images (every labelled SAX training slice"
        + {"t1": ", as a synthetic T1 map", "any": ", as a random-contrast copy"}.get(run_info["kind"], "") + ").",
        verdict(name, results, patients),
        ("- **Use**: where no model exists for the sequence (model_store.find_model falls back to sequence 'any'). "
         + ("On cine and LGE it loses at most 0.5 mm against the sequence-specific models (the goal), and on a "
            "contrast none was trained on (synthetic T1 maps) it is far better than they are."
            if loses_at_most_half_a_millimetre(name, results) else
            "It does not reach the sequence-specific models on their own contrasts (the goal was to lose at most "
            "0.5 mm), but on a contrast none was trained on (synthetic T1 maps) it is far better than they are.")
         if run_info["kind"] == "any" else
         "- **Use**: MOLLI T1 maps (ms, native or post-contrast); on cine and LGE images use their own models."),
        "- **Caveat**: no real T1 maps with landmarks exist in the public data; the T1 figures are on synthetic maps "
        "of the validation patients, an optimistic stand-in for real MOLLI maps.", "",
        "## Measured (validation splits; `python scripts/compare_sax_models.py`)", "", tables, "", comparison, "",
    ])
    path = models_dir() / f"{name}.md"
    path.write_text(card)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="manifest name, or NAME=RUN_DIR")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sets", default=",".join(SET_NAMES))
    parser.add_argument("--operating-points", action="store_true",
                        help="also tabulate detection / false positives at several probability thresholds")
    parser.add_argument("--repool", action="append", default=[],
                        help="NAME=POOLING: set shipped model NAME's mirror pooling and re-choose its threshold")
    parser.add_argument("--ship", action="append", default=[], help="NAME=SEQUENCE: export run NAME as a model")
    parser.add_argument("--overwrite", action="store_true",
                        help="--ship may replace a model of the same name in the models folder (e.g. a shipped one)")
    parser.add_argument("--mirror-average", action=argparse.BooleanOptionalAction, default=True,
                        help="run folders (and models shipped from them) average the fine stage over the crop and "
                             "its mirror")
    parser.add_argument("--mirror-pooling", choices=MIRROR_POOLINGS, default="log_linear",
                        help="how run folders (and models shipped from them) pool the two passes (docs/t1.md)")
    args = parser.parse_args()
    set_names = names_option(parser, "--sets", args.sets, SET_NAMES)
    sources = dict(model_source(text) for text in args.model)
    folder = models_dir()
    existing = model_names(folder)
    for text in args.ship:  # checked before the evaluation sets load (minutes)
        name = text.partition("=")[0]
        if sources.get(name) is None:
            parser.error(f"--ship {text}: {name} must be given as --model {name}=RUN_DIR")
        if name in existing and not args.overwrite:
            parser.error(f"--ship {text}: {folder} already has a model {name!r}: another name, CMR_LANDMARK_MODELS "
                         "set to a folder of your own, or --overwrite to replace it")
    args.out.mkdir(parents=True, exist_ok=True)
    sets = evaluation_sets(set_names)
    fingerprints = {name: set_fingerprint(slices) for name, slices in sets.items()}
    shipped = {}
    for text in args.ship:  # export first: the tables are then those of the shipped file at its threshold
        name, _, sequence = text.partition("=")
        shipped[name] = (sequence, export_run(name, sequence, sources[name], args.mirror_average,
                                              args.mirror_pooling))
        sources[name] = None
    for text in args.repool:
        name, _, pooling = text.partition("=")
        old, new = repool_shipped(name, pooling)
        print(f"{name}: mirror_pooling {pooling}, probability threshold {old} -> {new}", flush=True)
    results = {name: evaluate_model(name, run, sets, fingerprints, args.out, args.mirror_average, args.mirror_pooling)
               for name, run in sources.items()}
    patients = {name: patient_names(slices) for name, slices in sets.items()}
    tables, comparison = tables_markdown(results, list(sets)), comparison_markdown(results, list(sets), patients)
    comparison += "\n" + synthetic_map_detection_markdown(results, list(sets))
    if args.operating_points:
        comparison += "\n" + operating_points_markdown(results, list(sets))
    (args.out / "tables.md").write_text(tables + "\n" + comparison)
    print(tables + "\n" + comparison)
    for name, (sequence, run_info) in shipped.items():
        card = write_card(name, sequence, run_info, tables, comparison, results, patients)
        print(f"shipped {models_dir() / name}.pt with card {card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
