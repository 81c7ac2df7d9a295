"""``cmr-landmark detect INPUT --view sax|lax --sequence cine|lge|t1|any --out OUT.json [--overlays DIR]
[--model NAME] [--image-group GROUP] [--nifti-as-stored]``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .config import MODEL_SEQUENCES, VIEWS
from .detector import Detector
from .io import ImageReadError, read_series
from .io.nifti import NIFTI_THIRD_AXES
from .model_store import ModelError, find_model
from .offline_detection import check_pixels, detect_series, display_orientation_of, shortening_per_slice, view_warning
from .output_paths import folder_problem, output_file_problem, written_beside
from .overlay import save_landmark_overlay

log = logging.getLogger(__name__)


def main_detect(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cmr-landmark detect",
        description="Detect landmarks in every image of a NIfTI file, DICOM series or ISMRMRD .h5 and write JSON. "
        "NIfTI voxels are the array's (i = rows, j = columns), world_mm from the affine (RAS+); "
        "DICOM/ISMRMRD voxels are [column, row], world_mm in patient LPS.",
    )
    parser.add_argument("input", type=Path, help=".nii/.nii.gz, a DICOM file or folder of one series, or .h5")
    parser.add_argument("--view", choices=VIEWS, required=True)
    parser.add_argument("--sequence", choices=MODEL_SEQUENCES, required=True,
                        help="the images' contrast; 'any' for another or an unknown one (the contrast-agnostic model)")
    parser.add_argument("--out", type=Path, required=True, help="output JSON")
    parser.add_argument("--overlays", type=Path, help="folder for one PNG per image with the landmarks drawn")
    parser.add_argument("--model", default="", help="manifest model name (default: the one for view/sequence)")
    parser.add_argument("--image-group", help="ISMRMRD image group (dataset/image_1) when the file holds several")
    parser.add_argument("--nifti-3d", choices=NIFTI_THIRD_AXES, default="slices",
                        help="what the third axis of a 3-D NIfTI holds: slices (default) or the phases of one "
                             "slice (a long-axis cine stored without its slice axis)")
    nifti_orientation = parser.add_mutually_exclusive_group()
    nifti_orientation.add_argument(
        "--nifti-as-stored", action="store_true",
        help="show a short-axis NIfTI to the model as stored, not in the orientation decided for its public set "
             "(ACDC, MS-CMRSeg, MyoPS, M&Ms-2 file names) or, for any other file, as its anatomy says (docs/replay.md)")
    nifti_orientation.add_argument(
        "--nifti-affine", action="store_true",
        help="the NIfTI's affine is the scanner's patient geometry (as dcm2niix writes it from DICOM): show a "
             "short-axis NIfTI to the model from it, as a DICOM series is shown, not as its anatomy says")
    args = parser.parse_args(argv)
    problem = output_file_problem(args.out, args.input)
    if problem is None and args.overlays is not None:
        problem = folder_problem(args.overlays, f"--overlays {args.overlays}")
    if problem is not None:  # said before the model runs, and the input is never overwritten
        parser.exit(2, f"cmr-landmark detect: cannot write the output: {problem}\n")
    try:
        series = read_series(args.input, args.image_group, args.nifti_3d)
        check_pixels(series)
        spec = find_model(args.view, args.sequence, name=args.model or None)
        if spec.view != args.view:
            raise ModelError(f"model {spec.name} is for view {spec.view}, not {args.view}")
        orientation = display_orientation_of(series, spec, nifti_as_stored=args.nifti_as_stored,
                                             nifti_affine=args.nifti_affine)
        records = detect_series(series, Detector(spec), orientation)
    except (ImageReadError, ModelError) as error:
        parser.exit(2, f"cmr-landmark detect: {error}\n")
    warning = view_warning(series, spec, records)
    if warning:
        log.warning("%s", warning)
    result = {
        "model": spec.name,
        "input": str(args.input),
        "view": args.view,
        "sequence": args.sequence,
        "world_frame": series.frame,
        "voxel_order": series.voxel_order,
        "display_orientation": orientation.as_record(),
        "images": records,
        "longitudinal_shortening": shortening_per_slice(records),
    }
    try:  # a path checked above but not writable (permissions, a full disk): a message, not a traceback
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with written_beside(args.out) as partial:  # never a half-written OUT.json for the next step to read
            partial.write_text(json.dumps(result, indent=1) + "\n")
        if args.overlays:
            for record in records:
                k, t = record["slice"], record["phase"]
                points = {
                    name: None if lm is None else series.voxel_to_pixel(lm["voxel"])
                    for name, lm in record["landmarks"].items()
                }
                filled = [name for name, lm in record["landmarks"].items() if lm is not None and lm.get("filled")]
                title = f"slice {k} phase {t}" + (
                    f", LV length {record['lv_length_mm']:.1f} mm" if record["lv_length_mm"] is not None else "") + (
                    f" (filled in from the neighbouring phases: {', '.join(filled)})" if filled else "")
                save_landmark_overlay(series.images[k, t], points, args.overlays / f"slice{k:02d}_phase{t:02d}.png",
                                      title=title, pixel_spacing_mm=series.pixel_spacing_mm)
    except OSError as error:
        parser.exit(2, f"cmr-landmark detect: cannot write the output: {error}\n")
    reported = [lm for record in records for lm in record["landmarks"].values() if lm is not None]
    filled = sum(bool(lm.get("filled")) for lm in reported)
    print(f"{len(records)} images, {len(reported) - filled} landmarks found"
          + (f" + {filled} filled in from neighbouring phases" if filled else "")
          + f" with model {spec.name}; wrote {args.out}")
    return 0
