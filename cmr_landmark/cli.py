"""``cmr-landmark COMMAND ...``: one dispatch table, each command's own parser lives with its module."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import TextIO

# command -> (module, function taking argv and returning an exit status, one-line description for the command
# list); the module is imported only when its command runs, so ``--help`` stays fast and needs no torch.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "build-cache": ("cmr_landmark.datasets", "main_build_cache",
                    "turn the public data sets into cached 2-D training samples with derived landmarks"),
    "serve": ("cmr_landmark.server", "main_serve",
              "run the landmark gadget in passive mode for Gadgetron or an MRD client to connect to"),
    "detect": ("cmr_landmark.detect_cli", "main_detect",
               "detect landmarks in a NIfTI file, DICOM series or ISMRMRD .h5 and write JSON"),
    "convert": ("cmr_landmark.convert_cli", "main_convert",
                "convert a NIfTI file or DICOM series to an ISMRMRD .h5"),
    "replay": ("cmr_landmark.replay_cli", "main_replay",
               "send an ISMRMRD .h5 through the landmark gadget over the Gadgetron protocol, save the result"),
    "train": ("cmr_landmark.training", "main_train",
              "train a cascade on named data sets' train split, validating on their val split"),
    "export": ("cmr_landmark.evaluation", "main_export",
               "freeze a training run into a models folder (--models-dir) with threshold, model card and accuracy"),
    "evaluate": ("cmr_landmark.evaluation", "main_evaluate",
                 "accuracy tables of a model on a labelled set (data sets' split or a VIA file)"),
}

HELP_FLAGS = ("-h", "--help")


def print_usage(stream: TextIO) -> None:
    """The usage line and every command with its one-line description."""
    width = max(map(len, COMMANDS))
    lines = ["usage: cmr-landmark COMMAND [ARGS ...]", "",
             "Cardiac MR landmark detection (RV insertion, LV centre, mitral valve, apex).", "", "commands:"]
    lines += [f"  {name:<{width}}  {description}" for name, (_, _, description) in COMMANDS.items()]
    lines += ["", "Run 'cmr-landmark COMMAND --help' for a command's options.", "",
              "environment:",
              "  CMR_LANDMARK_MODELS  folder of manifest.json and the models (default: the shipped models/)",
              "  CMR_LANDMARK_DATA    the public data sets (default: ../shared/data beside the repository)",
              "  CMR_LANDMARK_CACHE   build-cache's output (default: .cache in the repository)"]
    print("\n".join(lines), file=stream)


class _CommandLineFormatter(logging.Formatter):
    """A log record as the commands write their own notes: "warning: message" (a traceback, if any, below it)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.message}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in HELP_FLAGS:
        print_usage(sys.stdout)
        return 0
    if not argv or argv[0] not in COMMANDS:
        if argv:
            print(f"cmr-landmark: unknown command {argv[0]!r}", file=sys.stderr)
        print_usage(sys.stderr)
        return 2
    module, function, _ = COMMANDS[argv[0]]
    if argv[0] == "serve":
        from .config import prefer_passive_openmp_waits

        prefer_passive_openmp_waits()  # before the gadget module imports torch
    else:  # the library's warnings as the commands' own: "warning: ..." (serve logs with time and level itself)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_CommandLineFormatter())
        logging.basicConfig(level=logging.WARNING, handlers=[handler])
    command = getattr(importlib.import_module(module), function)
    # nibabel gives its logger a stderr handler of its own on import: its warnings would print twice
    logging.getLogger("nibabel.global").handlers.clear()
    return int(command(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
