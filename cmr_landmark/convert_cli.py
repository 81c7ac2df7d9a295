"""``cmr-landmark convert INPUT --out OUT.h5 --view sax|lax [--sequence cine|lge|t1|any] [--kspace [--coils N]
[--acceleration R [--calibration-lines N]]]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import MODEL_SEQUENCES, VIEWS
from .convert import DEFAULT_CALIBRATION_LINES, DEFAULT_COILS, MAX_COILS, convert
from .datasets import public_set_of_file
from .image_checks import label_map_reason
from .io import ImageReadError, read_series
from .io.grappa import min_calibration_lines
from .io.nifti import NIFTI_THIRD_AXES
from .output_paths import output_file_problem


def main_convert(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cmr-landmark convert",
        description="Convert a NIfTI file, a DICOM series or ISMRMRD images to an ISMRMRD .h5: images with their "
        "geometry, or with --kspace simulated raw Cartesian acquisitions (multi-coil, 2x readout oversampling) for "
        "the replay tool's reconstruction. The header's protocolName (CMR_LANDMARK_<VIEW>_<SEQUENCE>) tells the "
        "gadget the model.",
    )
    parser.add_argument("input", type=Path, help=".nii/.nii.gz, a DICOM file or folder of one series, or an ISMRMRD "
                        ".h5 of one image series (e.g. a sample, to simulate its raw data with --kspace)")
    parser.add_argument("--out", type=Path, required=True, help="ISMRMRD .h5 to write (another file than the input)")
    parser.add_argument("--view", choices=VIEWS, required=True,
                        help="sax (short axis) or lax (long axis): written into protocolName for the gadget's rule")
    parser.add_argument("--sequence", choices=MODEL_SEQUENCES, default="cine",
                        help="the images' contrast (default cine; any: another one, a T2 map say, for the "
                             "contrast-agnostic model): written into protocolName")
    parser.add_argument("--kspace", action="store_true", help="write raw acquisitions instead of images")
    parser.add_argument("--nifti-3d", choices=NIFTI_THIRD_AXES, default="slices",
                        help="what the third axis of a 3-D NIfTI holds: slices (default) or the phases of one "
                             "slice (a long-axis cine stored without its slice axis)")
    parser.add_argument("--coils", type=int, default=DEFAULT_COILS,
                        help=f"simulated receive coils (--kspace), 1-{MAX_COILS}: the file grows by a k-space per coil")
    parser.add_argument("--acceleration", type=int, default=1,
                        help="parallel imaging (--kspace): keep one k-space line in every R through the centre, as "
                             "GRAPPA-accelerated clinical cine (default 1: every line)")
    parser.add_argument("--calibration-lines", type=int, default=DEFAULT_CALIBRATION_LINES,
                        help=f"with --acceleration: consecutive reference lines about the k-space centre, acquired "
                             f"within each image (default {DEFAULT_CALIBRATION_LINES})")
    parser.add_argument("--compress", action="store_true", help="gzip the image pixel data")
    args = parser.parse_args(argv)
    if not 1 <= args.coils <= MAX_COILS:
        parser.error(f"--coils must be 1-{MAX_COILS} (a scanner's receive array), got {args.coils}")
    if args.acceleration < 1:
        parser.error(f"--acceleration must be 1 or more, got {args.acceleration}")
    if args.acceleration > 1 and not args.kspace:
        parser.error("--acceleration applies to raw acquisitions (--kspace): images have no k-space lines to skip")
    if args.acceleration > 1 and args.coils == 1:
        parser.error("--acceleration needs several --coils: with one coil the skipped lines cannot be unfolded")
    if args.acceleration > 1 and args.calibration_lines < min_calibration_lines(args.acceleration):
        # the file would be written, and then refused by the reconstruction that replays it
        parser.error(f"--calibration-lines must be {min_calibration_lines(args.acceleration)} or more at "
                     f"--acceleration {args.acceleration} (the GRAPPA kernel is fitted to them), got "
                     f"{args.calibration_lines}")
    if args.compress and args.kspace:
        parser.error("--compress applies to images; raw acquisitions (--kspace) are written uncompressed")
    # before reading: the input is never overwritten, nor a device (the output is written beside and renamed)
    if problem := output_file_problem(args.out, args.input):
        parser.exit(2, f"cmr-landmark convert: cannot write the output: {problem}\n")
    try:
        series = read_series(args.input, nifti_third_axis=args.nifti_3d)
    except ImageReadError as error:
        parser.exit(2, f"cmr-landmark convert: {error}\n")
    except OSError as error:  # a damaged file (a truncated .nii.gz, an HDF5 chunk that does not decompress)
        parser.exit(2, f"cmr-landmark convert: cannot read {args.input}: {error}\n")
    # said here rather than by the gadget later, which would refuse every slice of it (a series without signal is
    # written: its images pass through the gadget untouched)
    if reason := label_map_reason(series.images):
        parser.exit(2, f"cmr-landmark convert: {args.input}: {reason}; give the image it segments\n")
    try:
        convert(series, args.out, args.view, args.sequence, kspace=args.kspace, coils=args.coils,
                compress=args.compress, acceleration=args.acceleration, calibration_lines=args.calibration_lines)
    except ImageReadError as error:  # pixels the raw data cannot be simulated from (NaN with --kspace)
        parser.exit(2, f"cmr-landmark convert: {error}\n")
    except OSError as error:  # e.g. no permission to write --out, or the disk is full
        parser.exit(2, f"cmr-landmark convert: cannot write {args.out}: {error}\n")
    if dataset := public_set_of_file(args.input):  # named like a public set's NIfTI (datasets.PUBLIC_SET_FILE_NAMES)
        print(f"warning: {args.input.name} is named like a file of the public set {dataset}, whose NIfTI affines are "
              "not trustworthy: the geometry written is not the patient's, so the patient coordinates and, on the "
              "short axis, the gadget's anatomical naming of A-RVI/P-RVI and its display orientation may be wrong "
              "('cmr-landmark detect' on the NIfTI itself uses the set's own orientation)", file=sys.stderr)
    accelerated = f" (one line in every {args.acceleration}, {args.calibration_lines} calibration lines)"
    kind = ("raw acquisitions" + (accelerated if args.acceleration > 1 else "")) if args.kspace else "images"
    print(f"wrote {args.out}: {series.n_slices} slices x {series.n_phases} phases as {kind}")
    return 0
