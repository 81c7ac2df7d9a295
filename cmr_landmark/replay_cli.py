"""``cmr-landmark replay IN.h5 --out OUT.h5 [--gadgetron HOST:PORT] [--report-dir DIR] [--set NAME=VALUE]``."""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import ismrmrd
import numpy as np

from .gadget_parameters import GadgetParameters, ParameterError
from .io import ImageReadError, list_image_groups, read_ismrmrd_images
from .output_paths import folder_problem, output_file_problem
from .replay import DEFAULT_TIMEOUT_S, ReplayError, parse_address, replay_active, replay_passive, write_results
from .replay_report import landmark_records, summary_text, write_report


def _property(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def main_replay(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cmr-landmark replay",
        description="Send an ISMRMRD .h5 (images, or raw Cartesian data reconstructed here) through the landmark "
        "gadget over the Gadgetron wire protocol and save what comes back. By default the gadget is started the "
        "way Gadgetron starts it (python -m gadgetron PORT gadgets.cmr_landmark_gadget landmark_detection); with "
        "--gadgetron it connects to a running gadget (cmr-landmark serve) or Gadgetron instance.",
    )
    parser.add_argument("input", type=Path, help="ISMRMRD .h5 with images or raw acquisitions")
    parser.add_argument("--out", type=Path, required=True, help="ISMRMRD .h5 for everything the gadget returns")
    parser.add_argument("--gadgetron", metavar="HOST:PORT", help="connect to a listening gadget / Gadgetron")
    parser.add_argument("--report-dir", type=Path, help="folder for report.json, overlay PNGs and the LV length plot")
    parser.add_argument("--set", dest="properties", type=_property, action="append", default=[], metavar="NAME=VALUE",
                        help="a gadget parameter sent in the configuration (e.g. view=sax, probability_threshold=0.3)")
    parser.add_argument("--image-group", help="ISMRMRD image group (dataset/image_1) when the file holds several")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds to wait for the gadget, a positive number (default {DEFAULT_TIMEOUT_S:.0f})")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.timeout) and args.timeout > 0):  # 0, -1 or nan end every replay at once, inf crashes
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    try:
        address = parse_address(args.gadgetron) if args.gadgetron else None
    except ValueError as error:
        parser.error(str(error))
    try:  # the gadget would pass every image through and tag each copy with this error: say it once, here
        parameters = GadgetParameters.from_strings(dict(args.properties))
        if (parameters.model or parameters.device == "cuda") and address is None:  # the gadget started here
            from .gadget import checked_on_this_machine  # loads torch: only where there is something to check

            checked_on_this_machine(parameters)
    except ParameterError as error:
        parser.error(f"--set: {error}")
    if not args.input.is_file():
        parser.exit(2, f"cmr-landmark replay: {args.input} is not a file\n")
    # the output folders made before the gadget runs, so that its results are never lost to a path that cannot be
    # written (an --out that is a folder, a folder under a file, a --report-dir that is a file), and the input is
    # never overwritten by its own results
    problem = output_file_problem(args.out, args.input)
    if problem is None and args.report_dir is not None:
        problem = folder_problem(args.report_dir, f"--report-dir {args.report_dir}")
    try:
        if problem is None:
            for folder in (args.out.parent, args.report_dir):
                if folder is not None:
                    folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        problem = str(error)
    if problem is not None:
        parser.exit(2, f"cmr-landmark replay: cannot write the results: {problem}\n")
    try:
        started = time.perf_counter()
        header, images = read_ismrmrd_images(args.input, args.image_group)
        if not list_image_groups(args.input):  # raw data: say what took the time before the first image goes out
            seconds = time.perf_counter() - started
            print(f"{len(images)} images read and reconstructed from the raw data in {seconds:.1f} s")
        if header is None:
            raise ImageReadError(f"{args.input}: no ISMRMRD XML header, which the gadget needs")
        properties = dict(args.properties)
        if address is None:
            result = replay_active(header, images, properties, timeout_s=args.timeout)
        else:
            result = replay_passive(address, header, images, properties, timeout_s=args.timeout)
    except (ImageReadError, ReplayError) as error:
        parser.exit(2, f"cmr-landmark replay: {error}\n")
    write_results(args.out, header, result.images)
    # the copies of this pass: an original comes back as it was sent, earlier passes' CMRLandmark_* tags included
    sent = {image_fingerprint(image) for image in images}
    records = landmark_records([image for image in result.images if image_fingerprint(image) not in sent])
    timings = {
        "seconds_to_first_image_back": result.seconds_to_first_item,
        "seconds_total": result.seconds_total,
        "images_sent": len(images),
        "images_per_second": len(images) / result.seconds_total if result.seconds_total else None,
    }
    if args.report_dir:
        write_report(args.report_dir, records, images, timings, {"input": str(args.input), "output": str(args.out)})
        if result.gadget_log:
            (args.report_dir / "gadget.log").write_text(result.gadget_log)
    print(summary_text(records))
    print(f"{len(images)} images sent, {len(result.images)} received in {result.seconds_total:.1f} s; wrote {args.out}"
          + (f" and {args.report_dir}/report.json" if args.report_dir else ""))
    # results written and reported as ever, but a run in which nothing at all was detected must not look like a
    # success to a script (a model of the other view, a view the rule cannot tell: every copy tagged error)
    if not records:  # e.g. a Gadgetron chain without the landmark gadget
        print("cmr-landmark replay: nothing detected: no annotated copy came back", file=sys.stderr)
        return 1
    if all(record["status"] == "error" for record in records):
        print(f"cmr-landmark replay: nothing detected: all {len(records)} annotated copies carry "
              "CMRLandmark_Status=error (the errors are listed above)", file=sys.stderr)
        return 1
    return 0


def image_fingerprint(image: ismrmrd.Image) -> bytes:
    """An image's header and pixels, hashed: an original comes back with both unchanged (its attributes may be
    written anew by a C++ Gadgetron, so neither they nor their length count), a copy in another series."""
    head = image.getHead()
    head.attribute_string_len = 0
    digest = hashlib.sha256(bytes(head))
    digest.update(np.ascontiguousarray(image.data).tobytes())
    return digest.digest()
