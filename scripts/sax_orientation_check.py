"""How the short-axis models fare on images stored in another orientation than the standard display.

The models were trained on each public set brought to the display decided for it (meant as anterior up, RV on the
viewer's left; docs/data.md) and turned by at most 30 degrees. A scanner writes the pixel matrix in its own
acquisition orientation. This detects the labelled validation slices with all three landmarks in 8 orientations
(quarter turns, each with and without a mirror; ``geometry.orient_image``), maps the points back and reports the
mean distance (mm) per landmark as named, and of the A-RVI/P-RVI pair compared as a set (a mirror swaps which end
the model calls anterior). The gadget and ``detect`` avoid all of this by turning each slice into the standard display
from its header first, and a quarter more for a model trained with the RV elsewhere (docs/gadget.md, "Orientation"):

    python scripts/sax_orientation_check.py --model sax_cine --dataset acdc --out reports/sax_orientations.md

``--dicom-folder DIR`` (unlabelled single-frame DICOM files, e.g. ../shared/data/kaggle_dsb_dicom) instead counts,
for the frames whose header puts them away from the standard display, how many RV insertion points each model
reports (probability at its threshold) as stored and when shown in the standard display, as the gadget does:

    python scripts/sax_orientation_check.py --model sax_cine --dicom-folder ../shared/data/kaggle_dsb_dicom \
        --out reports/sax_orientations_dicom.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cmr_landmark.config import SAX_LANDMARKS
from cmr_landmark.datasets import load_slices
from cmr_landmark.detector import Detector, detect_in_orientation
from cmr_landmark.evaluation import pair_distance_as_set_mm
from cmr_landmark.geometry import ORIENTATIONS, model_display_orientation
from cmr_landmark.model_store import find_model


def distances_in_orientation(detector: Detector, slices: Sequence, turns: int, mirror: bool) -> np.ndarray:
    """(N, 4) distances (mm): A-RVI, P-RVI, C-LV as named, and the RVI pair as a set (mean of the two)."""
    rows = []
    for s in slices:
        spacing = np.asarray(s.pixel_spacing_mm, dtype=np.float64)
        found = detect_in_orientation(detector, s.image[np.newaxis], s.pixel_spacing_mm, turns, mirror,
                                      probability_threshold=0.0)[0]
        points = np.array([(found[n].row, found[n].col) for n in SAX_LANDMARKS])
        named = np.linalg.norm((points - s.landmarks_rc) * spacing, axis=1)
        rows.append([*named, pair_distance_as_set_mm(points[:2], s.landmarks_rc[:2], s.pixel_spacing_mm)])
    return np.array(rows)


def dicom_frames_report(detector: Detector, folder: Path) -> tuple[list[str], dict]:
    """Per DICOM file away from the standard display: the RVI probabilities as stored and in the standard display;
    over all files: the RV insertion points found in the standard display and in the model's display (the standard
    one turned toward the model's ``display_rv_direction_deg``, as the gadget shows it)."""
    from cmr_landmark.io import read_series

    threshold = detector.spec.probability_threshold
    lines = [f"| {detector.spec.name}: file | turn, mirror | A-RVI p stored / standard | P-RVI p stored / standard |",
             "|---|---|---|---|"]
    counts = {"frames": 0, "stored": 0, "standard": 0, "all_frames": 0, "all_standard": 0, "all_model_display": 0}

    def found_at_threshold(image, spacing, orientation) -> tuple[int, dict]:
        found = detect_in_orientation(detector, image, spacing, *orientation, probability_threshold=0.0)[0]
        return sum(found[name].probability >= threshold for name in ("A-RVI", "P-RVI")), found

    for path in sorted(folder.glob("*.dcm")):
        series = read_series(path)  # one frame: the folder holds frames of different series
        plane = series.ismrmrd_plane(0)
        image, spacing = series.images[0, :1], series.pixel_spacing_mm
        orientation = model_display_orientation("sax", plane.read_dir, plane.phase_dir)
        model_orientation = model_display_orientation("sax", plane.read_dir, plane.phase_dir,
                                                      detector.spec.display_rv_direction_deg)
        standard_count, shown = found_at_threshold(image, spacing, orientation)
        counts["all_frames"] += 1
        counts["all_standard"] += standard_count
        counts["all_model_display"] += (standard_count if model_orientation == orientation
                                        else found_at_threshold(image, spacing, model_orientation)[0])
        if orientation == (0, False):
            continue
        stored_count, stored = found_at_threshold(image, spacing, (0, False))
        counts["frames"] += 1
        counts["stored"] += stored_count
        counts["standard"] += standard_count
        cells = [f"{stored[n].probability:.2f} / {shown[n].probability:.2f}" for n in ("A-RVI", "P-RVI")]
        lines.append(f"| {path.name} | {90 * orientation[0]}, {orientation[1]} | {' | '.join(cells)} |")
    lines.append("")
    lines.append(f"{counts['frames']} frames away from the standard display; RV insertion points reported at the "
                 f"model's threshold {threshold}: {counts['stored']} of {2 * counts['frames']} as stored, "
                 f"{counts['standard']} in the standard display.")
    lines.append(f"All {counts['all_frames']} frames: {counts['all_standard']} of {2 * counts['all_frames']} in the "
                 f"standard display, {counts['all_model_display']} in the model's display "
                 f"(display_rv_direction_deg {detector.spec.display_rv_direction_deg}).")
    return lines, counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="a short-axis model name; repeat")
    parser.add_argument("--dataset", default="acdc", help="a data set whose val split is measured")
    parser.add_argument("--out", type=Path, required=True, help="markdown report (a .json beside it)")
    parser.add_argument("--dicom-folder", type=Path, default=None,
                        help="unlabelled single-frame DICOM files: count the RV insertion points reported instead")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.dicom_folder:
        lines, results = [], {}
        for name in args.model:
            model_lines, results[name] = dicom_frames_report(Detector(find_model("sax", "any", name=name),
                                                                      use_bf16=False), args.dicom_folder)
            lines += model_lines + [""]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines))
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        print(args.out.read_text())
        return 0
    slices = [s for s in load_slices(args.dataset, "val")
              if s.view == "sax" and s.has_all_landmarks]
    lines = [f"{len(slices)} {args.dataset} validation slices with all three landmarks; mm from the labels; 'm' = "
             "mirrored; 0 is the standard display.", "",
             "| model | orientation | A-RVI | P-RVI | C-LV | RVI pair as a set |", "|---|---|---|---|---|---|"]
    results = {}
    for name in args.model:
        detector = Detector(find_model("sax", "any", name=name), use_bf16=False)
        for turns, mirror in ORIENTATIONS:
            label = f"{90 * turns}{' m' if mirror else ''}"
            means = distances_in_orientation(detector, slices, turns, mirror).mean(axis=0)
            results.setdefault(name, {})[label] = means.tolist()
            lines.append(f"| {name} | {label} | " + " | ".join(f"{v:.1f}" for v in means) + " |")
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
