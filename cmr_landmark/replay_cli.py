"""``cmr-landmark replay IN.h5 --out OUT.h5 [--gadgetron HOST:PORT] [--report-dir DIR] [--config CHAIN.xml]
[--set NAME=VALUE]``."""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import ismrmrd
import numpy as np

from .gadget_parameters import GadgetParameters, ParameterError, chain_properties
from .io import ImageReadError, list_image_groups, read_ismrmrd_images
from .output_paths import (
    folder_problem,
    nested_output_problem,
    output_file_problem,
    unwritable_folder_problem,
)
from .replay import (
    DEFAULT_TIMEOUT_S,
    ReplayError,
    gadget_warnings,
    parse_address,
    replay_active,
    replay_passive,
    write_results,
)
from .replay_report import (
    GADGET_LOG_NAME,
    REPORT_FILE_NAME,
    landmark_records,
    remove_earlier_report,
    summary_text,
    write_report,
)


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
    parser.add_argument("--config", type=Path, metavar="CHAIN.xml",
                        help="send the landmark gadget's parameters of this chain (xml_configs/), as Gadgetron would "
                             "with that chain; --set overrides them one by one")
    parser.add_argument("--set", dest="properties", type=_property, action="append", default=[], metavar="NAME=VALUE",
                        help="a gadget parameter sent in the configuration (e.g. view=sax, probability_threshold=0.3)")
    parser.add_argument("--image-group", help="ISMRMRD image group (dataset/image_1) when the file holds several")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="give up when nothing has gone to or come back from the gadget for this many seconds, a "
                             f"positive number (default {DEFAULT_TIMEOUT_S:.0f})")
    args = parser.parse_args(argv)
    try:
        return _replay(parser, args)
    except KeyboardInterrupt:  # Ctrl-C: replay_active has ended the gadget process on the way out
        parser.exit(130, "cmr-landmark replay: interrupted\n")


def _replay(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The replay of ``main_replay``'s parsed arguments; known failures end in ``parser.exit(2, one line)``."""
    if not (math.isfinite(args.timeout) and args.timeout > 0):  # 0, -1 or nan end every replay at once, inf crashes
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    try:
        address = parse_address(args.gadgetron) if args.gadgetron else None
    except ValueError as error:
        parser.error(str(error))
    try:
        chain = chain_properties(args.config) if args.config else {}
    except (OSError, ElementTree.ParseError, ParameterError) as error:
        parser.exit(2, f"cmr-landmark replay: --config {args.config}: {error}\n")
    properties = {**chain, **dict(args.properties)}
    try:  # the gadget would pass every image through and tag each copy with this error: say it once, here
        parameters = GadgetParameters.from_strings(properties)
        if (parameters.model or parameters.device == "cuda") and address is None:  # the gadget started here
            from .gadget import checked_on_this_machine  # loads torch: only where there is something to check

            checked_on_this_machine(parameters)
    except ParameterError as error:
        if args.config:  # a value from the chain file, or a --set over it: one line naming the file
            parser.exit(2, f"cmr-landmark replay: the parameters of --config {args.config} and --set: {error}\n")
        parser.error(f"--set: {error}")
    if not args.input.is_file():
        parser.exit(2, f"cmr-landmark replay: {args.input} is not a file\n")
    # the output paths checked before the input is read and the gadget runs, so that its results are never lost to
    # a path that cannot be written and the input is never overwritten by its own results
    if problem := output_paths_problem(args):
        parser.exit(2, f"cmr-landmark replay: cannot write the results: {problem}\n")
    try:
        started = time.perf_counter()
        header, images = read_ismrmrd_images(args.input, args.image_group)
        if not list_image_groups(args.input):  # raw data: say what took the time before the first image goes out
            seconds = time.perf_counter() - started
            print(f"{len(images)} images read and reconstructed from the raw data in {seconds:.1f} s")
        if header is None:
            raise ImageReadError(f"{args.input}: no ISMRMRD XML header, which the gadget needs")
    except ImageReadError as error:
        parser.exit(2, f"cmr-landmark replay: {error}\n")
    try:  # once the input has been read: one that cannot be read leaves no empty folders behind
        for folder in (args.out.parent, args.report_dir):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.exit(2, f"cmr-landmark replay: cannot write the results: {error}\n")
    try:
        if address is None:
            result = replay_active(header, images, properties, timeout_s=args.timeout)
        else:
            result = replay_passive(address, header, images, properties, timeout_s=args.timeout)
    except ReplayError as error:
        say_gadget_warnings(error.gadget_log)  # one may say why it failed
        parser.exit(2, f"cmr-landmark replay: {error}{saved_gadget_log(error.gadget_log, args.report_dir)}\n")
    try:
        write_results(args.out, header, result.images)
    except OSError as error:  # the disk filled up, say
        parser.exit(2, f"cmr-landmark replay: cannot write {args.out}: {error}\n")
    # the copies of this pass: an original comes back as it was sent, earlier passes' CMRLandmark_* tags included
    sent = {image_fingerprint(image) for image in images}
    records = landmark_records([image for image in result.images if image_fingerprint(image) not in sent])
    timings = {
        "seconds_to_first_image_back": result.seconds_to_first_item,
        "seconds_total": result.seconds_total,
        "images_sent": len(images),
        "images_per_second": len(images) / result.seconds_total if result.seconds_total else None,
    }
    print(summary_text(records))
    say_gadget_warnings(result.gadget_log)
    if args.report_dir:
        try:
            write_report(args.report_dir, records, images, timings,
                         {"input": str(args.input), "output": str(args.out)})
            if result.gadget_log:
                (args.report_dir / GADGET_LOG_NAME).write_text(result.gadget_log)
        except OSError as error:
            parser.exit(2, f"cmr-landmark replay: wrote {args.out}, but cannot write the report in "
                           f"{args.report_dir}: {error}\n")
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


def say_gadget_warnings(gadget_log: str) -> None:
    """Each distinct warning of a gadget started here, once, on stderr (passive mode's log is the server's)."""
    for warning in gadget_warnings(gadget_log):
        print(f"cmr-landmark replay: the gadget warned: {warning}", file=sys.stderr)


def output_paths_problem(args: argparse.Namespace) -> str | None:
    """Why --out or --report-dir cannot be written, or None, from the paths alone (nothing is made): --out is the
    input, a folder, under a file, a device, or in a folder where no file can be created; --report-dir is a file,
    under one, --out itself or under it, where no file can be created, or holds --out under the name of one of the
    report's own files (which it replaces)."""
    out = f"--out {args.out}"
    problem = output_file_problem(args.out, args.input)
    if problem is not None or args.report_dir is None:
        return problem
    report_dir = f"--report-dir {args.report_dir}"
    if args.out.parent.resolve() == args.report_dir.resolve() and REPORT_FILE_NAME.fullmatch(args.out.name):
        return f"{out} has the name of one of the report's files in {report_dir}: give it another name"
    return (folder_problem(args.report_dir, report_dir) or nested_output_problem(args.out, args.report_dir, report_dir)
            or unwritable_folder_problem(args.report_dir, report_dir))


def saved_gadget_log(gadget_log: str, report_dir: Path | None) -> str:
    """Where the log of a gadget that failed was saved, as the end of the error line ("" without a log): as the
    report's gadget.log with --report-dir, else a file in the temporary folder."""
    if not gadget_log:
        return ""
    try:
        if report_dir is not None:  # the log of this failure, with no earlier report's files beside it
            remove_earlier_report(report_dir)
            path = report_dir / GADGET_LOG_NAME
            path.write_text(gadget_log)
        else:
            with tempfile.NamedTemporaryFile("w", prefix="cmr-landmark-gadget-", suffix=".log", delete=False) as file:
                file.write(gadget_log)
            path = Path(file.name)
    except OSError as error:
        return f" (its log could not be saved: {error})"
    return f" (the gadget's whole log: {path})"


def image_fingerprint(image: ismrmrd.Image) -> bytes:
    """An image's header and pixels, hashed: an original comes back with both unchanged (its attributes may be
    written anew by a C++ Gadgetron, so neither they nor their length count), a copy in another series."""
    head = image.getHead()
    head.attribute_string_len = 0
    digest = hashlib.sha256(bytes(head))
    digest.update(np.ascontiguousarray(image.data).tobytes())
    return digest.digest()
