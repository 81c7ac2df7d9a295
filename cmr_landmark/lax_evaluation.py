"""The long-axis model on the one labelled real long-axis subject (M&Ms-2 001): the figures in docs/lax.md.
The shipped `lax_cine` has trained on that subject's two labelled frames since session 19, so its own figures
here are training figures; the fold runs of docs/lax.md measure the recipe on the frame they did not see.

    M&Ms-2 4CH ED/ES (landmarks derived from the labels by the project rule) -> Detector -> distance per
    landmark (mm), LV length predicted vs from the labels
    M&Ms-2 25-phase 4CH cine (unlabelled) -> Detector (same_slice) -> cine.smooth_cine_detections
    -> LV length curve, longitudinal shortening -> docs/lax_cine_curve.png, docs/lax_cine_overlays.png

    python -m cmr_landmark.lax_evaluation --model lax_cine --out docs

Also on held-out synthetic slices (a seed no training run uses), the figure that chooses among long-axis models
without looking at the real subject: ``--synthetic-held-out`` (150 "slender" slices, seed 77).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .cine import CineLandmarks, smooth_cine_detections
from .config import LAX_LANDMARKS
from .datasets import Slice, load_slices
from .detector import Detector, ImageLandmarks, detect_in_orientation, lax_points_rc, long_axis_direction_deg
from .evaluation import evaluate_slices, pair_distance_as_set_mm
from .geometry import ORIENTATIONS, circular_mean_deg
from .measures import longitudinal_shortening, lv_length_mm
from .model_store import ModelSpec, find_model
from .network import UNet
from .overlay import save_phase_overlays
from .synth.lax import CachedLaxSlice, cache_synthetic_lax, load_synthetic_lax

LABELLED_PHASE_NAMES = {0: "ED", 1: "ES"}


def mnms2_lax_slices() -> tuple[list[Slice], list[Slice]]:
    """(labelled 4CH ED and ES, unlabelled 4CH cine phases in order) of the M&Ms-2 subject(s) in the data."""
    slices = [s for s in load_slices("mnms2") if s.view == "lax"]
    labelled = sorted((s for s in slices if s.labelled), key=lambda s: s.phase)
    cine = sorted((s for s in slices if not s.labelled), key=lambda s: s.phase)
    if not labelled:
        raise ValueError("no labelled M&Ms-2 long-axis slices found in the data")
    return labelled, cine


def _lv_length(points_rc: np.ndarray, spacing_mm: tuple[float, float]) -> float:
    return lv_length_mm(*points_rc, spacing_mm) if np.all(np.isfinite(points_rc)) else float("nan")


def trained_long_axis_deg(frames: Sequence[Slice]) -> float:
    """The circular mean of the labelled apex-to-mitral direction (``detector.long_axis_direction_deg``) over the
    real frames a model was trained on, as stored: its ``display_long_axis_deg`` (docs/lax.md, arm C)."""
    return circular_mean_deg([long_axis_direction_deg(s.landmarks_rc, s.pixel_spacing_mm) for s in frames])


def phase_name(s: Slice) -> str:
    """'ED' or 'ES' for a labelled M&Ms-2 long-axis frame (its phase number otherwise)."""
    return LABELLED_PHASE_NAMES.get(s.phase, str(s.phase))


def _errors(found: ImageLandmarks, s: Slice) -> dict:
    """Distance (mm) of each landmark of ``found`` from ``s``'s labels, and the LV length against theirs; NaN for a
    landmark ``found`` lacks (a cine's smoothed points have none where no phase found it) and what depends on it."""
    predicted = lax_points_rc(found)
    distances = np.linalg.norm((predicted - s.landmarks_rc) * np.asarray(s.pixel_spacing_mm), axis=1)
    predicted_length = _lv_length(predicted, s.pixel_spacing_mm)
    true_length = _lv_length(s.landmarks_rc, s.pixel_spacing_mm)
    return {
        "patient": s.patient,
        "phase": phase_name(s),
        **{f"{name}_mm": float(d) for name, d in zip(LAX_LANDMARKS, distances, strict=True)},
        **{f"{name}_probability": float("nan") if found[name] is None else float(found[name].probability)
           for name in LAX_LANDMARKS},
        "mean_mm": float(np.mean(distances)),
        "lv_length_mm": predicted_length,
        "lv_length_labels_mm": true_length,
        "lv_length_error_percent": 100.0 * (predicted_length - true_length) / true_length,
        "predicted_rc": predicted.tolist(),
        "labels_rc": s.landmarks_rc.tolist(),
    }


def _distances_text(row: dict) -> str:
    """"MV-1 3.2 mm, ..." of an ``_errors`` row, "not found" for a landmark the model did not find."""
    return ", ".join(f"{name} {row[f'{name}_mm']:.1f} mm" if np.isfinite(row[f"{name}_mm"]) else f"{name} not found"
                     for name in LAX_LANDMARKS)


def evaluate_labelled(detector: Detector, slices: Sequence[Slice]) -> list[dict]:
    """Per labelled slice, detected on its own: distance (mm) of each landmark, LV length predicted and from the
    labels."""
    return [_errors(detector.detect([s.image], s.pixel_spacing_mm, probability_threshold=0.0)[0], s) for s in slices]


def evaluate_cine_at_labelled(cine: CineLandmarks, slices: Sequence[Slice], frames: dict[str, int]) -> list[dict]:
    """The same figures for what a cine reports at the labelled phases: the smoothed, gap-filled points of the
    cine phase each labelled slice is (``frames``: phase name -> cine phase)."""
    return [_errors(cine.landmarks[frames[phase_name(s)]], s) for s in slices]


# Held-out synthetic slices: seed 77 is used by no training set (docs/lax.md)
HELD_OUT_SYNTHETIC = {"n_slices": 150, "seed": 77, "variant": "mixed", "family": "slender"}


def held_out_synthetic_slices(family: str | None = None) -> list[CachedLaxSlice]:
    """The held-out synthetic slices (made and cached on first use; anatomy ``family``, default
    HELD_OUT_SYNTHETIC's)."""
    path = cache_synthetic_lax(HELD_OUT_SYNTHETIC["n_slices"], HELD_OUT_SYNTHETIC["seed"],
                               (HELD_OUT_SYNTHETIC["variant"],), family or HELD_OUT_SYNTHETIC["family"])[0]
    return load_synthetic_lax(path)


def evaluate_synthetic_held_out(detector: Detector, family: str | None = None) -> dict[str, float]:
    """Mean distance (mm) per landmark and over all of them on the held-out synthetic slices
    (:func:`held_out_synthetic_slices`), the detector's own inference settings."""
    evaluation = evaluate_slices(detector, held_out_synthetic_slices(family), 0.0)
    distances = evaluation.distances_mm
    return {**{name: float(np.nanmean(distances[:, k])) for k, name in enumerate(LAX_LANDMARKS)},
            "mean": float(np.nanmean(distances))}


def _distance_to_segment(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance (in the points' units) of each of ``points`` (..., 2) from the segment ``start``-``end``."""
    along = end - start
    t = np.clip(((points - start) @ along) / max(float(along @ along), 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (start + t[..., None] * along), axis=-1)


def phases_on_the_mitral_valve(cine_points_rc: np.ndarray, labelled: Sequence[Slice],
                               tolerance_mm: float = 10.0) -> int:
    """How many phases of a cine (``cine_points_rc``: (T, 3, 2) MV-1, MV-2, APEX per phase) have both mitral points
    on the labelled mitral valve: each within ``tolerance_mm`` of a different one of the two tracks that join a
    mitral label at ED to the same label at ES. The phases between ED and ES carry no labels; the annulus moves
    along about that line (12-15 mm on M&Ms-2 001), and the tricuspid annulus, where a model that confuses the
    valves puts its points, lies 30 mm or more away. A label-free count of where a model looks over the whole
    cine (docs/lax.md, "What the cine shows")."""
    by_phase = {phase_name(s): s for s in labelled}
    ed, es = by_phase["ED"], by_phase["ES"]
    spacing = np.asarray(ed.pixel_spacing_mm)
    tracks = [(ed.landmarks_rc[i] * spacing, es.landmarks_rc[i] * spacing) for i in (0, 1)]
    mitral_mm = np.asarray(cine_points_rc, dtype=np.float64)[:, :2] * spacing
    # distance[t, point, track]; a phase counts when some one-to-one matching keeps both points within tolerance
    distance = np.stack([_distance_to_segment(mitral_mm, *track) for track in tracks], axis=-1)
    straight = np.maximum(distance[:, 0, 0], distance[:, 1, 1])
    crossed = np.maximum(distance[:, 0, 1], distance[:, 1, 0])
    return int(np.sum(np.fmin(straight, crossed) <= tolerance_mm))


def evaluate_orientations(detector: Detector, s: Slice) -> list[dict]:
    """A labelled long-axis slice detected in each of the 8 ORIENTATIONS, its points mapped back: per orientation
    the mean distance (mm) of the two mitral points from the two mitral labels compared as a set (a mirror swaps
    which is MV-1) and the apex distance (docs/lax.md, "The real frames at every orientation")."""
    spacing = np.asarray(s.pixel_spacing_mm, dtype=np.float64)
    labels = np.asarray(s.landmarks_rc, dtype=np.float64)
    rows = []
    for turns, mirror in ORIENTATIONS:
        found = detect_in_orientation(detector, s.image[np.newaxis], s.pixel_spacing_mm, turns, mirror,
                                      probability_threshold=0.0)[0]
        points = lax_points_rc(found)
        rows.append({"rotation_deg": 90 * turns, "mirror": mirror, "phase": phase_name(s),
                     "mitral_mm": pair_distance_as_set_mm(points[:2], labels[:2], s.pixel_spacing_mm),
                     "APEX_mm": float(np.linalg.norm((points[2] - labels[2]) * spacing))})
    return rows


def evaluate_cine(detector: Detector, phases: Sequence[Slice]) -> tuple[list[ImageLandmarks], CineLandmarks]:
    """Raw per-phase detections and the smoothed, gap-filled cine result of one cine slice."""
    spacing = phases[0].pixel_spacing_mm
    found = detector.detect(np.stack([s.image for s in phases]), spacing, same_slice=True, probability_threshold=0.0)
    return found, smooth_cine_detections(found, spacing, detector.spec.probability_threshold)


def plot_cine_curve(raw: Sequence[ImageLandmarks], cine: CineLandmarks, spacing_mm: tuple[float, float],
                    labelled_rows: Sequence[dict], labelled_frames: dict[str, int], path: Path) -> None:
    """LV length per phase: raw detections, smoothed curve, and the label-derived ED/ES lengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw_lengths = [_lv_length(lax_points_rc(found), spacing_mm) for found in raw]
    figure, axis = plt.subplots(figsize=(7, 3.6))
    phases = np.arange(len(raw))
    axis.plot(phases, raw_lengths, "o", color="0.6", label="per phase (raw)")
    axis.plot(phases, cine.lv_length_mm, "-", color="C0", lw=2, label="smoothed, gaps filled")
    filled = [any(f.values()) for f in cine.filled]
    if any(filled):
        axis.plot(phases[filled], cine.lv_length_mm[filled], "s", mfc="none", color="C3",
                  label="phase with a filled point")
    for row in labelled_rows:
        frame = labelled_frames.get(row["phase"])
        if frame is not None:
            axis.plot(frame, row["lv_length_labels_mm"], "*", ms=14, color="C2")
            axis.annotate(f"{row['phase']} labels", (frame, row["lv_length_labels_mm"]), textcoords="offset points",
                          xytext=(6, 6))
    axis.set_xlabel("cine phase")
    axis.set_ylabel("LV length (mm)")
    axis.set_title(f"M&Ms-2 001 4CH cine: longitudinal shortening {100 * cine.longitudinal_shortening:.1f} %")
    axis.legend(loc="lower left", fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_cine_overlays(phases: Sequence[Slice], cine: CineLandmarks, path: Path) -> None:
    """All phases, cropped around the heart, with the smoothed points (open markers where filled)."""
    points = [{name: None if lm is None else (lm.row, lm.col) for name, lm in found.items()}
              for found in cine.landmarks]
    titles = [f"{t}: {length:.0f} mm" for t, length in enumerate(cine.lv_length_mm)]
    save_phase_overlays([s.image for s in phases], points, cine.filled, path, titles=titles,
                        pixel_spacing_mm=phases[0].pixel_spacing_mm)


def matching_frame(image: np.ndarray, phases: Sequence[Slice]) -> int:
    """The cine phase identical (closest) to a labelled frame."""
    return int(np.argmin([np.abs(s.image - image).mean() for s in phases]))


def evaluate_coarse_stage(checkpoint: Path, slices: Sequence[Slice]) -> list[float]:
    """Distance (mm) per landmark of a coarse-stage checkpoint alone (4 mm grid) on labelled slices: the quick
    comparison of training variants, before any fine stage is trained."""
    from .training import coarse_predictions, load_stage, mean_distance_mm

    unet = load_stage(checkpoint, "coarse", "lax")
    _, per_landmark = mean_distance_mm(coarse_predictions(unet, slices, torch.device("cpu")), slices)
    return per_landmark


class CoarseStageSwapped(torch.nn.Module):
    """A shipped cascade with its coarse stage replaced by another one (a training run's), its fine stage kept:
    measures a recombination of stages before anything is exported."""

    def __init__(self, coarse: UNet, cascade: torch.nn.Module) -> None:
        super().__init__()
        self.coarse, self.cascade = coarse, cascade

    def coarse_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.coarse(x).float(), dim=1)

    def fine_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self.cascade.fine_probabilities(x)


def search_radius_table(spec: ModelSpec, radii_mm: Sequence[float | None], labelled: Sequence[Slice],
                        cine_phases: Sequence[Slice], coarse_from: Path | None = None) -> str:
    """Markdown table: the labelled frames' distances, LV length error and the cine's longitudinal shortening of
    ``spec`` with each coarse-guided fine search radius (None: off), the rest of the model unchanged
    (``coarse_from``: a coarse-stage checkpoint in place of the model's coarse stage)."""
    from .training import load_stage

    coarse = load_stage(coarse_from, "coarse", "lax") if coarse_from is not None else None
    columns = [f"{phase} {name}" for phase in ("ED", "ES") for name in LAX_LANDMARKS]
    lines = ["| fine search radius | " + " | ".join(columns) + " | LV length ED / ES | longitudinal shortening |",
             "|---" * (len(columns) + 3) + "|"]
    for radius in radii_mm:
        detector = Detector(replace(spec, fine_search_radius_mm=radius))
        if coarse is not None:
            detector.model = CoarseStageSwapped(coarse, detector.model)
        rows = {row["phase"]: row for row in evaluate_labelled(detector, labelled)}
        _, cine = evaluate_cine(detector, cine_phases) if cine_phases else (None, None)
        cells = [f"{rows[phase][f'{name}_mm']:.1f}" if phase in rows else "" for phase in ("ED", "ES")
                 for name in LAX_LANDMARKS]
        lengths = " / ".join(f"{rows[phase]['lv_length_error_percent']:+.1f} %" for phase in ("ED", "ES")
                             if phase in rows)
        shortening = f"{100 * cine.longitudinal_shortening:.1f} %" if cine is not None else ""
        label = "off" if radius is None else f"{radius:g} mm"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {lengths} | {shortening} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmr_landmark.lax_evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lax_cine", help="manifest name of the long-axis model")
    parser.add_argument("--folder", type=Path, default=None, help="models folder (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the PNGs and lax_measured.json go")
    parser.add_argument("--coarse-checkpoints", type=Path, nargs="*", default=[],
                        help="only compare these coarse_best.pt files on the labelled slices, and stop")
    parser.add_argument("--search-radii", default=None,
                        help="only print the labelled and cine figures for these fine search radii (mm, comma-"
                             "separated; 'off' for none) instead of the model's own, and stop")
    parser.add_argument("--synthetic-held-out", action="store_true",
                        help="only print the model's mean distances on the held-out synthetic slices, and stop")
    parser.add_argument("--coarse-from", type=Path, default=None,
                        help="with --search-radii: this coarse_best.pt in place of the model's coarse stage")
    args = parser.parse_args(argv)
    if args.coarse_from and not args.search_radii:
        parser.error("--coarse-from is measured with --search-radii")
    if args.search_radii:
        spec = find_model("lax", "cine", name=args.model, folder=args.folder)
        radii = [None if r == "off" else float(r) for r in args.search_radii.split(",")]
        print(search_radius_table(spec, radii, *mnms2_lax_slices(), coarse_from=args.coarse_from))
        return 0
    if args.synthetic_held_out:
        spec = find_model("lax", "cine", name=args.model, folder=args.folder)
        figures = evaluate_synthetic_held_out(Detector(spec, use_bf16=False))
        print(f"{spec.name} on {HELD_OUT_SYNTHETIC['n_slices']} held-out synthetic slices (seed "
              f"{HELD_OUT_SYNTHETIC['seed']}): " + ", ".join(f"{k} {v:.2f} mm" for k, v in figures.items()))
        return 0
    if args.coarse_checkpoints:
        labelled, _ = mnms2_lax_slices()
        for checkpoint in args.coarse_checkpoints:
            per_landmark = evaluate_coarse_stage(checkpoint, labelled)
            print(f"{checkpoint}: coarse stage on M&Ms-2 ED/ES " + ", ".join(
                f"{n} {d:.1f} mm" for n, d in zip(LAX_LANDMARKS, per_landmark, strict=True))
                + f", mean {np.mean(per_landmark):.1f} mm")
        return 0
    detector = Detector(find_model("lax", "cine", name=args.model, folder=args.folder))
    labelled, cine_phases = mnms2_lax_slices()
    rows = evaluate_labelled(detector, labelled)
    result = {"model": args.model, "labelled": rows}
    for row in rows:
        print(f"{row['phase']}: " + _distances_text(row)
              + f", mean {row['mean_mm']:.1f} mm; LV length {row['lv_length_mm']:.1f} mm vs labels "
              f"{row['lv_length_labels_mm']:.1f} mm ({row['lv_length_error_percent']:+.1f} %)")
    if cine_phases:
        raw, cine = evaluate_cine(detector, cine_phases)
        frames = {row["phase"]: matching_frame(s.image, cine_phases) for row, s in zip(rows, labelled, strict=True)}
        args.out.mkdir(parents=True, exist_ok=True)
        plot_cine_curve(raw, cine, cine_phases[0].pixel_spacing_mm, rows, frames, args.out / "lax_cine_curve.png")
        plot_cine_overlays(cine_phases, cine, args.out / "lax_cine_overlays.png")
        label_lengths = [row["lv_length_labels_mm"] for row in rows]
        at_labelled = evaluate_cine_at_labelled(cine, labelled, frames)
        for row in at_labelled:
            print(f"cine, smoothed, at {row['phase']}: " + _distances_text(row)
                  + f"; LV length {row['lv_length_error_percent']:+.1f} %")
        result["cine"] = {
            "at_labelled_frames": at_labelled,
            "phases_on_the_mitral_valve": phases_on_the_mitral_valve(np.stack([lax_points_rc(found) for found in raw]),
                                                                     labelled),
            "lv_length_mm": cine.lv_length_mm.tolist(),
            "longitudinal_shortening": cine.longitudinal_shortening,
            "filled_points": int(sum(sum(f.values()) for f in cine.filled)),
            "labelled_frames": frames,
            "longitudinal_shortening_labels_ed_es": longitudinal_shortening(label_lengths),
        }
        print(f"cine: longitudinal shortening {100 * cine.longitudinal_shortening:.1f} % (labels ED/ES: "
              f"{100 * result['cine']['longitudinal_shortening_labels_ed_es']:.1f} %), "
              f"{result['cine']['filled_points']} filled points; ED = phase {frames.get('ED')}, "
              f"ES = phase {frames.get('ES')}; both mitral points on the mitral valve in "
              f"{result['cine']['phases_on_the_mitral_valve']} of {len(raw)} phases (raw detections)")
    (args.out / "lax_measured.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
