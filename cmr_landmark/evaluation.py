"""Accuracy of a landmark model on labelled slices: the tables of Xue et al. 2021 (Tables 2-4).

    labelled slices -> Detector (the shipped inference path) -> per landmark: detection rate (labelled and found),
    false positives (found on slices where it is not labelled), distance in mm (mean, SD, median, 95th
    percentile, max) -> measures from predicted vs labelled points: RV insertion angle and the anterior RV
    insertion's direction (SAX, with the share within 10 degrees) or LV length (LAX), paired t-test -> markdown,
    CSV and a PNG of the worst cases.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import stats

from .config import (
    COARSE_GRID,
    DEFAULT_PROBABILITY_THRESHOLD,
    FINE_GRID_BY_VIEW,
    LANDMARKS_BY_VIEW,
    LAX_FINE_SEARCH_RADIUS_MM,
    MIRROR_POOLINGS,
    MODEL_SEQUENCES,
    REPO_ROOT,
    VIEWS,
    models_dir,
)
from .detector import BF16_ENVIRONMENT_VARIABLE, Detector, bf16_faster_on_cpu
from .display_orientation import mean_rv_direction_deg
from .export import export_cascade
from .geometry import circular_mean_deg, distances_mm, turn_deg
from .measures import anterior_rvi_direction_deg, lv_length_mm, rv_insertion_angle_deg
from .model_store import ModelError, default_model, find_model, json_safe, model_names, read_manifest
from .network import LandmarkCascade

if TYPE_CHECKING:  # datasets loads nibabel: only the type is needed here
    from .datasets import Slice

WORST_CASES_SHOWN = 8
# What export reads from a training run folder (metrics.json is written when training has finished; run.json at its
# start and again at its end).
RUN_FILES = ("run.json", "metrics.json", "coarse_best.pt", "fine_best.pt")


@dataclass
class Evaluation:
    """Predictions of one model on labelled slices and the tables computed from them."""

    view: str
    probability_threshold: float
    predicted_rc: np.ndarray  # (N, K, 2) image pixels
    probability: np.ndarray  # (N, K) peak probability
    truth_rc: np.ndarray  # (N, K, 2), NaN where not labelled
    spacing_mm: np.ndarray  # (N, 2)
    landmark_rows: list[dict] = field(default_factory=list)
    measure_rows: list[dict] = field(default_factory=list)
    image_rows: list[dict] = field(default_factory=list)

    @property
    def landmarks(self) -> tuple[str, ...]:
        return LANDMARKS_BY_VIEW[self.view]

    @property
    def labelled(self) -> np.ndarray:
        return np.all(np.isfinite(self.truth_rc), axis=2)

    @property
    def detected(self) -> np.ndarray:
        return self.probability >= self.probability_threshold

    @property
    def distances_mm(self) -> np.ndarray:
        """(N, K) distance of prediction to label in mm, whatever the probability; NaN where not labelled."""
        return distances_mm(self.predicted_rc, self.truth_rc, self.spacing_mm[:, None, :])

    @property
    def mean_distance_mm(self) -> float:
        """Mean distance over labelled landmarks, thresholds aside (the training's model-selection figure)."""
        distances = self.distances_mm[self.labelled]
        return float(distances.mean()) if distances.size else float("nan")


def pair_distance_as_set_mm(points_rc: np.ndarray, labels_rc: np.ndarray,
                            pixel_spacing_mm: tuple[float, float]) -> float:
    """Mean distance (mm) of two points from two labels under the better of the two matchings: for a pair whose
    names a mirror swaps (A-RVI / P-RVI, MV-1 / MV-2), how far the points are wherever the model put the names."""
    points, labels = np.asarray(points_rc, dtype=np.float64), np.asarray(labels_rc, dtype=np.float64)
    spacing = np.asarray(pixel_spacing_mm, dtype=np.float64)
    straight = np.linalg.norm((points - labels) * spacing, axis=1).mean()
    crossed = np.linalg.norm((points[::-1] - labels) * spacing, axis=1).mean()
    return float(min(straight, crossed))


def predict(detector: Detector, slices: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, K, 2) and peak probabilities (N, K) of every slice, threshold aside; batched by shape/spacing."""
    landmarks = detector.spec.landmarks
    points = np.full((len(slices), len(landmarks), 2), np.nan)
    probability = np.zeros((len(slices), len(landmarks)))
    groups: dict[tuple, list[int]] = {}
    for index, s in enumerate(slices):
        groups.setdefault((s.image.shape, tuple(float(v) for v in s.pixel_spacing_mm)), []).append(index)
    for (_, spacing), indices in groups.items():
        for start in range(0, len(indices), 32):
            chunk = indices[start : start + 32]
            found = detector.detect([slices[i].image for i in chunk], spacing, probability_threshold=0.0)
            for index, result in zip(chunk, found, strict=True):
                for k, name in enumerate(landmarks):
                    points[index, k] = (result[name].row, result[name].col)
                    probability[index, k] = result[name].probability
    return points, probability


def detector_for_cascade(cascade: LandmarkCascade, view: str, folder: Path, threshold: float,
                         mirror_average: bool = False, mirror_pooling: str = "mean",
                         fine_search_radius_mm: float | None = None) -> Detector:
    """Export ``cascade`` as the shipped format into ``folder`` and load it the way the gadget does."""
    export_cascade(cascade, "candidate", view, "any", COARSE_GRID, FINE_GRID_BY_VIEW[view], threshold, folder,
                   mirror_average=mirror_average, mirror_pooling=mirror_pooling,
                   fine_search_radius_mm=fine_search_radius_mm)
    return Detector(find_model(view, "any", name="candidate", folder=folder))


def landmark_table(evaluation: Evaluation) -> list[dict]:
    """Per landmark: detection rate, false positives and distances (Tables 2-3 of the paper)."""
    rows = []
    labelled, detected, distances = evaluation.labelled, evaluation.detected, evaluation.distances_mm
    for k, name in enumerate(evaluation.landmarks):
        found = labelled[:, k] & detected[:, k]
        found_distances = distances[found, k]
        n_labelled, n_unlabelled = int(labelled[:, k].sum()), int((~labelled[:, k]).sum())
        false_positives = int((~labelled[:, k] & detected[:, k]).sum())
        rows.append(
            {
                "landmark": name,
                "labelled": n_labelled,
                "detected": int(found.sum()),
                "detection_rate_pct": 100.0 * found.sum() / n_labelled if n_labelled else float("nan"),
                "unlabelled": n_unlabelled,
                "false_positives": false_positives,
                "false_positive_rate_pct": 100.0 * false_positives / n_unlabelled if n_unlabelled else float("nan"),
                "mean_mm": _statistic(np.mean, found_distances),
                "sd_mm": _statistic(lambda d: np.std(d, ddof=1), found_distances, minimum=2),
                "median_mm": _statistic(np.median, found_distances),
                "p95_mm": _statistic(lambda d: np.percentile(d, 95), found_distances),
                "max_mm": _statistic(np.max, found_distances),
            }
        )
    return rows


def image_table(evaluation: Evaluation) -> list[dict]:
    """Per image, as the paper counts its "no landmark" images: of the slices with no landmark labelled (outside
    the heart), how many came back empty and how many with a false landmark; of the slices with every landmark
    labelled, how many came back complete."""
    labelled, detected = evaluation.labelled, evaluation.detected
    empty, complete = ~labelled.any(axis=1), labelled.all(axis=1)
    n_empty, n_complete = int(empty.sum()), int(complete.sum())
    reported_something = int((empty & detected.any(axis=1)).sum())
    all_found = int((complete & detected.all(axis=1)).sum())
    return [
        {
            "images": "no landmark labelled",
            "count": n_empty,
            "correct": n_empty - reported_something,
            "correct_pct": 100.0 * (n_empty - reported_something) / n_empty if n_empty else float("nan"),
            "false_positive_images": reported_something,
            "false_positive_pct": 100.0 * reported_something / n_empty if n_empty else float("nan"),
        },
        {
            "images": "all landmarks labelled",
            "count": n_complete,
            "correct": all_found,
            "correct_pct": 100.0 * all_found / n_complete if n_complete else float("nan"),
            "false_positive_images": float("nan"),  # a false positive needs a landmark that is not labelled
            "false_positive_pct": float("nan"),
        },
    ]


def paired_difference(candidate: np.ndarray, control: np.ndarray,
                      patients: Sequence[str] | None = None) -> tuple[float, float]:
    """Mean of ``candidate - control`` over the entries both measured (finite in both), and its 95 % half-width:
    how the experiments compare two models on the same landmarks.

    Without ``patients`` the half-width is 1.96 standard errors, every entry an independent draw. With ``patients``
    (one name per row of the arrays, whose columns are a slice's landmarks) it treats each patient as one draw:
    the slices of a patient share the anatomy, the scanner and the annotator, so their differences go together,
    and where a few patients hold most slices (the 10 LGE validation patients) the entry-wise interval is too
    narrow. That half-width is the cluster-robust standard error of the mean (CR1: the residuals summed per patient,
    scaled by G / (G - 1) for G patients) times Student's t on G - 1 degrees of freedom; NaN with fewer than two
    patients."""
    difference = np.asarray(candidate, dtype=float) - np.asarray(control, dtype=float)
    if difference.ndim == 1:  # one entry per slice
        difference = difference[:, None]
    measured = np.isfinite(difference)
    values = difference[measured]
    mean = float(values.mean())
    if patients is None:
        return mean, float(1.96 * values.std(ddof=1) / np.sqrt(values.size))
    names = np.asarray(patients, dtype=str)
    if difference.ndim != 2 or names.shape != (difference.shape[0],):
        raise ValueError(f"patients: one name per slice (row) of the differences expected: {difference.shape[0]} "
                         f"rows, {names.size} names")
    per_entry = np.broadcast_to(names[:, None], difference.shape)[measured]
    patient_names, patient_of_entry = np.unique(per_entry, return_inverse=True)
    count = len(patient_names)
    if count < 2:
        return mean, float("nan")
    residual_sums = np.bincount(patient_of_entry, weights=values - mean, minlength=count)
    standard_error = np.sqrt(count / (count - 1) * np.sum(residual_sums**2)) / values.size
    return mean, float(stats.t.ppf(0.975, count - 1) * standard_error)


def _statistic(function, values: np.ndarray, minimum: int = 1) -> float:
    return float(function(values)) if len(values) >= minimum else float("nan")


# An angle is judged against this tolerance as well as by its mean error: issue #5's goal for the RV insertion angle
# on T1 maps is "within 10 degrees of the reference".
ANGLE_TOLERANCE_DEG = 10.0


@dataclass(frozen=True)
class ClinicalMeasure:
    """A measure compared between predicted and labelled points: the landmarks it needs (indices of the view's),
    its function of (points, spacing), whether it is a direction (differences wrap at 360 degrees) and the
    tolerance its errors are counted against (None: none set)."""

    name: str
    unit: str
    needs: tuple[int, ...]
    function: Callable[[np.ndarray, np.ndarray], float]
    direction: bool = False
    tolerance: float | None = None


CLINICAL_MEASURES = {
    "sax": (
        ClinicalMeasure("rv_insertion_angle", "deg", (0, 1, 2),
                        lambda p, spacing: rv_insertion_angle_deg(p[0], p[1], p[2], spacing),
                        tolerance=ANGLE_TOLERANCE_DEG),
        # the AHA segment model's orientation: where the anterior insertion lies seen from the LV centre, as the
        # image is displayed (the labels' own frame: NIfTI files carry no trustworthy patient orientation)
        ClinicalMeasure("anterior_rvi_direction", "deg", (0, 2),
                        lambda p, spacing: anterior_rvi_direction_deg(p[0], p[2], spacing), direction=True,
                        tolerance=ANGLE_TOLERANCE_DEG),
    ),
    "lax": (ClinicalMeasure("lv_length", "mm", (0, 1, 2), lambda p, spacing: lv_length_mm(p[0], p[1], p[2], spacing)),),
}


def measure_table(evaluation: Evaluation) -> list[dict]:
    """Each clinical measure of the view from predicted vs labelled points, where the landmarks it needs are
    labelled and found: short axis the RV insertion angle and the anterior RV insertion direction (degrees), long
    axis the LV length (mm); difference mean +- SD, mean absolute difference and a one-sample t-test of the
    differences (Table 4 of the paper's paired test), and the share within the measure's tolerance (NaN where it
    has none: the LV length)."""
    rows = []
    for measure in CLINICAL_MEASURES[evaluation.view]:
        needs = list(measure.needs)
        complete = np.all(evaluation.labelled[:, needs] & evaluation.detected[:, needs], axis=1)
        labelled_values, predicted_values = [], []
        for index in np.flatnonzero(complete):
            try:
                label = measure.function(evaluation.truth_rc[index], evaluation.spacing_mm[index])
                predicted = measure.function(evaluation.predicted_rc[index], evaluation.spacing_mm[index])
            except ValueError:  # degenerate geometry (a point on the centre): no angle to compare
                continue
            labelled_values.append(label)
            predicted_values.append(predicted)
        labelled_values, predicted_values = np.asarray(labelled_values), np.asarray(predicted_values)
        differences = (turn_deg(predicted_values, labelled_values) if measure.direction
                       else predicted_values - labelled_values)
        p_value = float(stats.ttest_1samp(differences, 0.0).pvalue) if len(differences) >= 2 else np.nan
        mean = circular_mean_deg if measure.direction else np.mean
        row = {
            "measure": measure.name,
            "unit": measure.unit,
            "slices": len(differences),
            "label_mean": _statistic(mean, labelled_values),
            "predicted_mean": _statistic(mean, predicted_values),
            "difference_mean": _statistic(np.mean, differences),
            "difference_sd": _statistic(lambda d: np.std(d, ddof=1), differences, minimum=2),
            "abs_difference_mean": _statistic(np.mean, np.abs(differences)),
            "paired_t_test_p": p_value,
        }
        row["within_tolerance_pct"] = (np.nan if measure.tolerance is None else _statistic(
            lambda d, tolerance=measure.tolerance: 100.0 * np.mean(np.abs(d) <= tolerance), differences))
        rows.append(row)
    return rows


def evaluate_slices(
    model: Detector | LandmarkCascade, slices: Sequence, probability_threshold: float | None = None,
    mirror_average: bool = False,
    mirror_pooling: str = "mean",
    fine_search_radius_mm: float | None = None,
) -> Evaluation:
    """Run ``model`` (a loaded Detector, or a trained cascade, exported for the purpose) on labelled ``slices``.
    ``mirror_average``, ``mirror_pooling`` and ``fine_search_radius_mm`` apply to a cascade (a Detector carries its
    own settings)."""
    if not slices:
        raise ValueError("no slices to evaluate")
    views = {s.view for s in slices}
    if len(views) != 1:
        raise ValueError(f"slices of one view expected, got {sorted(views)}")
    view = views.pop()
    if isinstance(model, LandmarkCascade):
        threshold = DEFAULT_PROBABILITY_THRESHOLD if probability_threshold is None else probability_threshold
        with tempfile.TemporaryDirectory() as folder:
            detector = detector_for_cascade(model, view, Path(folder), threshold, mirror_average, mirror_pooling,
                                            fine_search_radius_mm)
            points, probability = predict(detector, slices)
    else:
        if model.spec.view != view:
            raise ValueError(f"model {model.spec.name!r} is for {model.spec.view}, the slices are {view}")
        threshold = model.spec.probability_threshold if probability_threshold is None else probability_threshold
        points, probability = predict(model, slices)
    evaluation = Evaluation(
        view=view,
        probability_threshold=threshold,
        predicted_rc=points,
        probability=probability,
        truth_rc=np.stack([np.asarray(s.landmarks_rc, dtype=np.float64) for s in slices]),
        spacing_mm=np.stack([np.asarray(s.pixel_spacing_mm, dtype=np.float64) for s in slices]),
    )
    evaluation.landmark_rows = landmark_table(evaluation)
    evaluation.measure_rows = measure_table(evaluation)
    evaluation.image_rows = image_table(evaluation)
    return evaluation


# --- report ----------------------------------------------------------------------------------------------------


def _format(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_format(row[key]) for key in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def report_markdown(evaluation: Evaluation, title: str) -> str:
    return (
        f"### {title}\n\n{len(evaluation.truth_rc)} slices, probability threshold "
        f"{evaluation.probability_threshold:g}. Detection: labelled and found; false positives: found where not "
        f"labelled; distances over the detected ones.\n\n{markdown_table(evaluation.landmark_rows)}\n"
        f"Whole images (the paper's \"no landmark\" images: slices outside the heart should come back empty):\n\n"
        f"{markdown_table(evaluation.image_rows)}\n"
        f"{markdown_table(evaluation.measure_rows)}"
    )


def slice_rows(evaluation: Evaluation, slices: Sequence) -> list[dict]:
    """One CSV row per slice: identity, and per landmark its outcome (found: labelled and detected, missed,
    false positive: detected where none is labelled, absent: neither), the error (mm; also of a missed landmark's
    below-threshold peak, which landmarks.csv leaves out) and the peak probability."""
    rows = []
    distances = evaluation.distances_mm
    for index, s in enumerate(slices):
        row = {key: getattr(s, key, "") for key in ("dataset", "patient", "slice_index", "phase")}
        for k, name in enumerate(evaluation.landmarks):
            row[f"{name}_outcome"] = _outcome(bool(evaluation.labelled[index, k]), bool(evaluation.detected[index, k]))
            row[f"{name}_error_mm"] = float(distances[index, k])
            row[f"{name}_probability"] = float(evaluation.probability[index, k])
        rows.append(row)
    return rows


def _outcome(labelled: bool, detected: bool) -> str:
    if labelled:
        return "found" if detected else "missed"
    return "false positive" if detected else "absent"


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def worst_cases_figure(evaluation: Evaluation, slices: Sequence, path: Path) -> None:
    """The slices with the largest error of a labelled landmark (or a false positive): label o, prediction x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distances = np.where(evaluation.labelled, evaluation.distances_mm, 0.0)
    false_positive = ~evaluation.labelled & evaluation.detected
    missed = evaluation.labelled & ~evaluation.detected
    badness = distances.max(axis=1) + 100.0 * (false_positive | missed).any(axis=1)
    worst = np.argsort(-badness)[:WORST_CASES_SHOWN]
    columns = 4
    figure, axes = plt.subplots(
        (len(worst) + columns - 1) // columns, columns, figsize=(3.2 * columns, 3.4 * ((len(worst) + 3) // 4)),
        squeeze=False,
    )
    colours = ("tab:red", "tab:blue", "tab:green")
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, worst, strict=False):
        s = slices[index]
        axis.imshow(s.image, cmap="gray")
        for k, name in enumerate(evaluation.landmarks):
            if evaluation.labelled[index, k]:
                axis.plot(*evaluation.truth_rc[index, k, ::-1], "o", mfc="none", color=colours[k], ms=9)
            if evaluation.detected[index, k]:
                axis.plot(*evaluation.predicted_rc[index, k, ::-1], "x", color=colours[k], ms=7, label=name)
        who = " ".join(str(getattr(s, key, "")) for key in ("dataset", "patient", "slice_index", "phase"))
        found = evaluation.labelled[index] & evaluation.detected[index]
        what = [f"max {distances[index][found].max():.1f} mm" if found.any() else "none found"]
        what += [f"{name} {outcome}" for k, name in enumerate(evaluation.landmarks)
                 if (outcome := _outcome(bool(evaluation.labelled[index, k]), bool(evaluation.detected[index, k])))
                 in ("missed", "false positive")]
        axis.set_title(f"{who}\n{', '.join(what)}", fontsize=8)
    handles = [plt.Line2D([], [], marker="x", ls="", color=c, label=n) for c, n in zip(colours, evaluation.landmarks,
                                                                                         strict=True)]
    figure.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, title="x prediction, o label")
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=80)
    plt.close(figure)


def write_report(evaluation: Evaluation, slices: Sequence, out_dir: Path, title: str) -> str:
    """``report.md``, ``landmarks.csv``, ``measures.csv``, ``slices.csv`` and ``worst_cases.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = report_markdown(evaluation, title)
    (out_dir / "report.md").write_text(markdown)
    write_csv(out_dir / "landmarks.csv", evaluation.landmark_rows)
    write_csv(out_dir / "measures.csv", evaluation.measure_rows)
    write_csv(out_dir / "slices.csv", slice_rows(evaluation, slices))
    worst_cases_figure(evaluation, slices, out_dir / "worst_cases.png")
    return markdown


def summary(evaluation: Evaluation) -> dict:
    """The figures a manifest entry records: per landmark detection %, false positive %, mean +- SD mm (None where
    nothing was detected), as strict JSON."""
    return json_safe({
        "slices": int(len(evaluation.truth_rc)),
        "probability_threshold": evaluation.probability_threshold,
        "landmarks": {
            row["landmark"]: {key: row[key] for key in ("detection_rate_pct", "false_positive_rate_pct", "mean_mm",
                                                          "sd_mm")}
            for row in evaluation.landmark_rows
        },
        "measures": evaluation.measure_rows,
        "images": evaluation.image_rows,
    })


def training_subjects_among(training_patients: Iterable[str], slices: Sequence[Slice]) -> list[str]:
    """The "set/patient" subjects of ``slices`` among a model's ``training_patients`` (its manifest entry's, or
    for a run those it inherited from its start weights)."""
    return sorted({f"{s.dataset}/{s.patient}" for s in slices} & set(training_patients))


def _probability(text: str) -> float:
    """``--threshold``: a probability in [0, 1], as the gadget's probability_threshold (NaN is none)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text!r}")
    return value


def _probability_or_auto(text: str) -> float | str:
    """export's ``--threshold``: 'auto' (chosen on the train split) or a probability in [0, 1]."""
    if text == "auto":
        return text
    try:
        return _probability(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a probability in [0, 1], got {text!r}") from None


def main_evaluate(argv: Sequence[str] | None = None) -> int:
    """``cmr-landmark evaluate``: accuracy tables of a model on a labelled set (data sets' split, or a VIA file)."""
    parser = argparse.ArgumentParser(prog="cmr-landmark evaluate", description=main_evaluate.__doc__)
    parser.add_argument("--view", choices=sorted(LANDMARKS_BY_VIEW), required=True)
    parser.add_argument("--sequence", default=None, choices=MODEL_SEQUENCES,
                        help="the slices' sequence (default: the run's with --run, else cine)")
    parser.add_argument("--model", default=None, help="manifest model name (default: the one for view/sequence)")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--run", type=Path, default=None, help="evaluate a training run folder instead of a model")
    parser.add_argument("--datasets", default="", help="comma-separated data sets, e.g. acdc,myops")
    parser.add_argument("--split", default="val", choices=("train", "val"),
                        help="the patient split of the public sets (cmr_landmark/splits.json)")
    parser.add_argument("--via", type=Path, default=None, help="a VGG Image Annotator project JSON with labels")
    parser.add_argument("--via-images", type=Path, default=None, help="folder of the VIA project's images")
    parser.add_argument("--pixel-spacing-mm", type=float, nargs=2, default=None, help="for PNG/JPEG images")
    parser.add_argument("--threshold", type=_probability, default=None,
                        help="probability in [0, 1] below which a landmark is not found (default: the model's; "
                             f"{DEFAULT_PROBABILITY_THRESHOLD} for --run)")
    parser.add_argument("--mirror-average", action=argparse.BooleanOptionalAction, default=None,
                        help="average the fine stage over the crop and its mirror (default: the model's manifest "
                             "setting; for --run, as export would ship it: on for the short axis, off for the long)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own, one per core)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not (args.via or args.datasets):
        parser.error("give --datasets or --via")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads: at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    # the model before the labelled slices: a wrong name, view or folder is said at once, not after loading a set
    recorded = json.loads((args.run / "run.json").read_text()) if args.run and (args.run / "run.json").is_file() else {}
    if recorded.get("view", args.view) != args.view:  # its points would be read as the other view's landmarks
        parser.error(f"--run {args.run} trained a {recorded['view']} model, not {args.view}")
    args.sequence = args.sequence or recorded.get("sequence", "cine")
    if args.run:
        from .training import load_cascade

        try:  # a folder or file without a run's best weights: one line, not a traceback
            model: Detector | LandmarkCascade = load_cascade(args.run, args.view)
        except (OSError, ValueError, RuntimeError, zipfile.BadZipFile) as error:  # RuntimeError: not torch's file
            parser.error(f"--run {args.run}: {error}")
        name = str(args.run)
    else:
        try:  # no manifest in --models-dir, no such model, a damaged file, or a model of the other view
            spec = find_model(args.view, args.sequence, name=args.model, folder=args.models_dir)
            if spec.view != args.view:
                raise ModelError(f"model {spec.name} is for view {spec.view}, not {args.view}")
            model = Detector(spec, mirror_average=args.mirror_average)
        except ModelError as error:  # not a usage error: one line, without the usage block
            parser.exit(2, f"cmr-landmark evaluate: {error}\n")
        name = spec.name
    if args.via:
        from .via import ViaError, read_via_slices

        try:
            slices = read_via_slices(args.via, args.view, args.sequence, args.via_images, args.pixel_spacing_mm)
        except ViaError as error:  # the file, and each image it cannot use, one line each (docs/training.md)
            parser.exit(2, f"cmr-landmark evaluate: {error}\n")
        source = args.via.name
    else:
        from .datasets import dataset_names
        from .training import load_labelled_slices

        names = dataset_names(args.datasets)
        try:
            slices = load_labelled_slices(names, args.split, args.view, args.sequence)
        except (ValueError, OSError) as error:  # an unknown set, no such slices, or the data folder missing
            parser.exit(2, f"cmr-landmark evaluate: {error}\n")
        source = f"{', '.join(names)} ({args.split})"
    note = ""
    trained_patients = model.spec.training_patients if isinstance(model, Detector) else (
        inherited_training_patients(recorded))
    if trained_on := training_subjects_among(trained_patients, slices):
        # a split name does not say it: lax_cine trained on the one labelled long-axis subject, in the val split
        trained = sum(f"{s.dataset}/{s.patient}" in trained_on for s in slices)
        note = (f"{trained} of {len(slices)} slices are of {', '.join(trained_on)}, which {name} was trained on: "
                "training figures, not a validation")
    elif args.via and recorded.get("via") and args.via.resolve() == Path(recorded["via"][0]):
        note = f"{args.via.name} holds the labels {name} was trained on: training figures, not a validation"
    if note:
        print(f"warning: {note}", file=sys.stderr)
        source += f"; {note}"
    evaluation = evaluate_slices(model, slices, args.threshold,
                                 **run_inference_settings(args.view, args.mirror_average, "mean", None))
    print(write_report(evaluation, slices, args.out, f"{name} on {source}"))
    (args.out / "summary.json").write_text(json.dumps(summary(evaluation), indent=2, allow_nan=False) + "\n")
    return 0


def choose_threshold(evaluation: Evaluation) -> float:
    """The probability threshold maximising detection rate minus false-positive rate (Youden's J) over all
    landmarks; meant for the training split, so the validation figures stay unbiased."""
    labelled = evaluation.labelled
    candidates = np.round(np.arange(0.05, 0.951, 0.025), 3)
    scores = []
    for threshold in candidates:
        detected = evaluation.probability >= threshold
        sensitivity = (detected & labelled).sum() / max(int(labelled.sum()), 1)
        false_positive_rate = (detected & ~labelled).sum() / max(int((~labelled).sum()), 1)
        scores.append(sensitivity - false_positive_rate)
    best = np.flatnonzero(np.isclose(scores, max(scores)))
    return float(candidates[best[len(best) // 2]])  # the middle of a plateau of equally good thresholds


def run_inference_settings(view: str, mirror_average: bool | None, mirror_pooling: str,
                           fine_search_radius_mm: float | None) -> dict:
    """How a training run's cascade is run by export and by ``evaluate --run``: as given, else as the shipped models
    of its view are (mirror averaging on for the short axis; the long axis's fine search within
    ``config.LAX_FINE_SEARCH_RADIUS_MM``), so that the two measure the model that is shipped."""
    return {"mirror_average": view == "sax" if mirror_average is None else mirror_average,
            "mirror_pooling": mirror_pooling,
            "fine_search_radius_mm": fine_search_radius_mm or (LAX_FINE_SEARCH_RADIUS_MM if view == "lax" else None)}


def training_options(run: dict) -> str:
    """A card's line on what a ``cmr-landmark train`` run added to the plain recipe (its run.json): the distance
    term, fresh random contrasts, consistency pairs; empty for a plain run."""
    options = []
    if run.get("distance_loss_weight"):
        options.append(f"the fine stage's distance term (training.point_distance_loss, weight "
                       f"{run['distance_loss_weight']} per mm)")
    if run.get("fresh_contrast_fraction"):
        options.append(f"{run['fresh_contrast_fraction']:.0%} of the items (of the second views, with pairs) a fresh "
                       "random per-tissue contrast every epoch (training.FreshImages)")
    if run.get("consistency_weight"):
        options.append("fine items in pairs of their own image and a second view, "
                       + consistency_pull(run["consistency_weight"], run.get("consistency_toward_real", False)))
    return f"With {'; '.join(options)}.\n  " if options else ""


def consistency_pull(weight: float, toward_real: bool) -> str:
    """How a model card says a paired run's two views were asked for the same maps (training.consistency_loss)."""
    pull = ("the second view's maps pulled toward the real image's" if toward_real
            else "the two views' maps pulled toward each other")
    return f"{pull} (training.consistency_loss, weight {weight})"


def model_card(name: str, view: str, sequence: str, run: dict, metrics: dict, evaluation: Evaluation,
               seconds_per_slice: float, threshold_rule: str, notes: str, mirror_average: bool = False,
               fine_search_radius_mm: float | None = None) -> str:
    """Markdown model card: data, split, training, speed and the measured validation tables."""
    from .network import count_parameters, unet_widths
    from .training import DEFAULT_MAX_ROTATION_DEG, KEPT_AS_GIVEN, load_cascade

    def widths(unet: torch.nn.Module) -> str:
        return "-".join(map(str, unet_widths(unet.state_dict())))

    cascade = load_cascade(Path(run["out"]), view)
    coarse, fine = COARSE_GRID, FINE_GRID_BY_VIEW[view]
    stage_seconds = [metrics[stage].get("train_seconds") for stage in ("coarse", "fine")]
    if None in stage_seconds:  # checkpoints of an older run: only the last invocation was timed
        timing = f"Wall time of the last (resumed) invocation {run['wall_s'] / 60:.1f} min"
    else:
        timing = f"Training time (both stages, all resumes) {sum(stage_seconds) / 60:.1f} min"
    # Training precision is the training machine's (run.json); inference precision is this machine's.
    training_precision = run.get("precision", "precision not recorded")
    if bf16_faster_on_cpu():
        inference_precision = "bf16 autocast"
    elif os.environ.get(BF16_ENVIRONMENT_VARIABLE) == "0":
        inference_precision = f"fp32 ({BF16_ENVIRONMENT_VARIABLE}=0)"
    else:
        inference_precision = "fp32 (bf16 is not faster on this CPU)"

    def epoch_number(stage: str) -> object:
        epoch = metrics[stage].get("epoch")
        if epoch == KEPT_AS_GIVEN:
            return "none (kept as given)"
        return "n/a" if epoch is None else epoch + 1

    if run.get("via"):  # the user's own point labels (VGG Image Annotator projects), not the public sets
        train_json, val_json = (Path(path).name for path in run["via"][:2])
        training_data = (f"VIA project {train_json}, {run['train_slices']} labelled images. Validation: VIA project "
                         f"{val_json}, {run['val_slices']} images. Landmarks as the annotators placed them.")
    else:
        training_data = (f"(patient-level split, cmr_landmark/splits.json): {', '.join(run['datasets'])}, train "
                         f"split, {run['train_slices']} labelled slices. Validation: {', '.join(run['val_datasets'])}, "
                         f"val split, {run['val_slices']} slices. Landmarks derived from the segmentations "
                         "(cmr_landmark/landmarks.py).")
    search_text = (f", each fine landmark looked for within {fine_search_radius_mm:g} mm of its coarse point"
                   if fine_search_radius_mm else "")
    initialised_from = _shown_path(run["init_from"]) if run.get("init_from") else "random"
    if run.get("init_coarse_from"):
        initialised_from = f"coarse stage {_shown_path(run['init_coarse_from'])}, fine stage {initialised_from}"
    return f"""# {name}: {view.upper()} {sequence} landmark cascade ({', '.join(LANDMARKS_BY_VIEW[view])})

- **Architecture**: two U-Nets, coarse (widths {widths(cascade.coarse)}) {count_parameters(cascade.coarse)}
  + fine (widths {widths(cascade.fine)}) {count_parameters(cascade.fine)} parameters; softmax heatmaps with a
  background channel.
- **Grids**: coarse {coarse.size_px} px at {coarse.pixel_mm} mm (whole image), fine {fine.size_px} px at
  {fine.pixel_mm} mm centred on the coarse landmarks' weighted mean.
- **Training data** {training_data}
- **Training**: KL divergence + soft Dice, Adam lr {run['lr']}, ReduceLROnPlateau x0.5, {training_precision},
  augmentation (rotation +-{DEFAULT_MAX_ROTATION_DEG:g} deg, scale, translation, mirror with A/P swap, coil
  shading, noise, blur, gamma).
  {training_options(run)}Epochs coarse {run['epochs']}, fine {run.get('epochs_fine', run['epochs'])}; best epochs
  (by validation mean distance, counted from 1) coarse {epoch_number('coarse')}, fine {epoch_number('fine')}.
  Initialised from: {initialised_from}. {timing} on {run['threads']} CPU
  thread(s) ({os.cpu_count()} cores in the machine).
- **Probability threshold** {evaluation.probability_threshold:.3f}: {threshold_rule}
- **Inference**: {'fine stage averaged over the crop and its left-right mirror (manifest `mirror_average`)'
                    if mirror_average else 'one pass per stage'}{search_text}; the threshold and the tables below are
  measured so.
- **Speed**: {seconds_per_slice * 1000:.1f} ms per slice over the validation run (coarse + fine, model loading
  included, {torch.get_num_threads()} thread(s), {inference_precision}): an upper bound, see
  `benchmarks/run_benchmarks.py` for the gadget's end-to-end figures.

## Validation accuracy

{report_markdown(evaluation, f'{name} on the validation split')}
{notes}
"""


def _shown_path(path: str) -> str:
    """A path as a card shows it: relative to the repository when inside it (run.json records it absolute)."""
    try:
        return str(Path(path).relative_to(REPO_ROOT))
    except ValueError:
        return path


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. the notes' text itself given in place of a path: a name too long for the system
        return False


def main_export(argv: Sequence[str] | None = None) -> int:
    """``cmr-landmark export``: freeze a training run into models/, with threshold, model card and accuracy."""
    parser = argparse.ArgumentParser(prog="cmr-landmark export", description=main_export.__doc__)
    parser.add_argument("--run", type=Path, required=True, help="training run folder (run.json, *_best.pt)")
    parser.add_argument("--name", required=True, help="model name, e.g. sax_cine")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="where to write the model (default: the models folder the gadget reads, models/)")
    parser.add_argument("--threshold", type=_probability_or_auto, default="auto",
                        help="a probability in [0, 1], or 'auto': chosen on the train split")
    parser.add_argument("--notes", type=Path, default=None, help="a markdown file appended to the model card")
    parser.add_argument("--mirror-average", action=argparse.BooleanOptionalAction, default=None,
                        help="average the fine stage over the crop and its mirror; the threshold and the card's "
                             "accuracy are measured that way (default: as the shipped models, on for the short axis, "
                             "off for the long axis)")
    parser.add_argument("--fine-search-radius-mm", type=float, default=None,
                        help="the fine stage looks for each landmark only this near its coarse point (default: "
                             f"as the shipped models, {LAX_FINE_SEARCH_RADIUS_MM:g} for the long axis, none for the "
                             "short)")
    parser.add_argument("--mirror-pooling", choices=MIRROR_POOLINGS, default="mean",
                        help="how the two mirror passes are pooled (sax_any and sax_t1 ship log_linear; docs/t1.md)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a model of the same name in --models-dir (e.g. a shipped one in models/)")
    args = parser.parse_args(argv)
    from .training import load_cascade, run_slices

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):  # it names a file inside --models-dir
        parser.error(f"--name {args.name!r}: letters, digits, '_', '.' and '-' only")
    if args.notes is not None and not _is_file(args.notes):
        parser.error(f"--notes {str(args.notes)[:80]!r}: no such file (give the path of a markdown file)")
    if args.fine_search_radius_mm is not None and not (math.isfinite(args.fine_search_radius_mm)
                                                       and args.fine_search_radius_mm > 0):
        parser.error(f"--fine-search-radius-mm must be a positive number, got {args.fine_search_radius_mm:g}")
    if missing := [file for file in RUN_FILES if not (args.run / file).is_file()]:
        parser.error(f"--run {args.run} is not a finished training run folder: it has no {', '.join(missing)}")
    args.models_dir = args.models_dir or models_dir()
    try:  # a manifest there that is not one (not JSON): said before training data is read, --overwrite or not
        if args.name in model_names(args.models_dir) and not args.overwrite:
            parser.error(f"{args.models_dir} already has a model {args.name!r}: give --models-dir a folder of your "
                         "own, another --name, or --overwrite to replace it")
    except ModelError as error:
        parser.exit(2, f"cmr-landmark export: {error}\n")
    torch.set_num_threads(args.threads)
    run = json.loads((args.run / "run.json").read_text())
    if not {"view", "sequence"} <= run.keys():
        parser.error(f"--run {args.run}: its run.json names no view and sequence, so it is not a `cmr-landmark "
                     "train` run (scripts/train_sax_synthetic.py runs are shipped by scripts/compare_sax_models.py)")
    view, sequence = run["view"], run["sequence"]
    if view not in VIEWS or sequence not in MODEL_SEQUENCES:  # a manifest entry detect and the gadget cannot use
        parser.error(f"--run {args.run}: its run.json names view/sequence {view}/{sequence}; a model is for a view of "
                     f"{', '.join(VIEWS)} and a sequence of {', '.join(MODEL_SEQUENCES)} (a run of a `train` that did "
                     "not check them yet: set the one meant in its run.json)")
    run["out"] = str(args.run)
    metrics = json.loads((args.run / "metrics.json").read_text())
    settings = run_inference_settings(view, args.mirror_average, args.mirror_pooling, args.fine_search_radius_mm)
    try:  # the labelled data the run names, moved or deleted since: said in one line
        train_slices, val_slices = run_slices(run, "train"), run_slices(run, "val")
    except (OSError, ValueError) as error:
        parser.exit(2, f"cmr-landmark export: --run {args.run}: the data its run.json names cannot be read: {error}\n")
    cascade = load_cascade(args.run, view)
    if args.threshold != "auto":
        threshold, rule = args.threshold, "given at export."
    elif all(s.has_all_landmarks for s in train_slices):
        # no absent landmark to find falsely: every threshold has no false positives, and the rule would pick the
        # lowest that detects all (a meaningless 0.25 or so)
        threshold = DEFAULT_PROBABILITY_THRESHOLD
        rule = (f"the default {threshold:g}: every one of the {len(train_slices)} training images has all "
                f"landmarks labelled, so none shows how often a landmark is found where it is absent, which "
                "choosing one needs (label images without landmarks too, or give --threshold).")
        print(f"warning: --threshold auto: no training image lacks a landmark, so there is no false-positive rate to "
              f"choose the threshold on; using the default {threshold:g} (give --threshold to set one)",
              file=sys.stderr)
    else:
        threshold = choose_threshold(evaluate_slices(cascade, train_slices, **settings))
        rule = (f"chosen on the training split ({len(train_slices)} slices) as the value maximising detection "
                "rate minus false-positive rate over all landmarks.")
    start = time.perf_counter()
    evaluation = evaluate_slices(cascade, val_slices, threshold, **settings)
    seconds_per_slice = (time.perf_counter() - start) / len(val_slices)
    notes = args.notes.read_text() if args.notes else ""
    card = model_card(args.name, view, sequence, run, metrics, evaluation, seconds_per_slice, rule, notes,
                      settings["mirror_average"], settings["fine_search_radius_mm"])
    extra = {"validation": summary(evaluation)}
    if patients := inherited_training_patients(run):
        extra["training_patients"] = patients
    if view == "sax":
        try:
            extra["display_rv_direction_deg"] = round(mean_rv_direction_deg(train_slices), 1)
        except ValueError as error:  # no training slice with all three landmarks: the model records no direction
            print(f"display_rv_direction_deg not recorded: {error}")
    before = default_model(view, sequence, args.models_dir) if (args.models_dir / "manifest.json").exists() else None
    path = export_cascade(cascade, args.name, view, sequence, COARSE_GRID, FINE_GRID_BY_VIEW[view], threshold,
                          args.models_dir, card=card, extra=extra, embed_training_state=True, **settings)
    write_report(evaluation, val_slices, args.run / "validation", f"{args.name} on the validation split")
    print(card)
    print(f"wrote {path}")
    chosen = find_model(view, sequence, folder=args.models_dir)
    if chosen.name != args.name:  # the first listed model of a view and sequence is the one chosen by default
        print(f"note: detect and the gadget choose {chosen.name} for {view}/{sequence} from {args.models_dir}; "
              f"--model {args.name} (the gadget's model={args.name}) chooses this one")
    elif before is not None and before.name != args.name:
        print(f"note: detect and the gadget now choose {args.name} for {view}/{sequence} from {args.models_dir}, "
              f"not {before.name} (trained for {before.view}/{before.sequence})")
    return 0


def inherited_training_patients(run: dict) -> list[str]:
    """The subjects a run's start weights were trained on outside the train split (manifest ``training_patients``
    of the model files it started from, followed through start runs and their checkpoints): a fine-tuned model
    carries them on, so that evaluate still says so."""
    patients: set[str] = set()
    runs_read: set[Path] = set()  # a run started from itself (or a cycle of runs) is read once

    def follow(record: dict) -> None:
        for named in (record.get("init_from"), record.get("init_coarse_from")):
            if not named:
                continue
            start = Path(named).resolve()
            start_run = start if start.is_dir() else start.parent  # a run folder or one of its checkpoints
            if (start_run / "run.json").is_file():
                if start_run not in runs_read:
                    runs_read.add(start_run)
                    follow(json.loads((start_run / "run.json").read_text()))
            elif start.is_file() and (start.parent / "manifest.json").is_file():
                for spec in read_manifest(start.parent):
                    if spec.file.resolve() == start:
                        patients.update(spec.training_patients)

    follow(run)
    return sorted(patients)
