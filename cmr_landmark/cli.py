"""``cmr-landmark COMMAND ...``: one dispatch table, each command's own parser lives with its module."""

from __future__ import annotations

import importlib
import sys

# command -> (module, function taking argv and returning an exit status); imported only when run.
COMMANDS: dict[str, tuple[str, str]] = {
    "build-cache": ("cmr_landmark.datasets", "main_build_cache"),
    "serve": ("cmr_landmark.gadget", "main_serve"),
    "detect": ("cmr_landmark.detect_cli", "main_detect"),
    "convert": ("cmr_landmark.convert_cli", "main_convert"),
    "replay": ("cmr_landmark.replay_cli", "main_replay"),
    "train": ("cmr_landmark.training", "main_train"),
    "export": ("cmr_landmark.evaluation", "main_export"),
    "evaluate": ("cmr_landmark.evaluation", "main_evaluate"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: cmr-landmark {{{','.join(sorted(COMMANDS))}}} ...", file=sys.stderr)
        return 2
    module, function = COMMANDS[argv[0]]
    if argv[0] == "serve":
        from .config import prefer_passive_openmp_waits

        prefer_passive_openmp_waits()  # before the gadget module imports torch
    return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
