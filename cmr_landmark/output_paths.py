"""Output paths the commands (detect, convert, replay) check before any work: an answer that cannot be written, or
that would overwrite the input it came from, is said in one line at once, not after minutes of work or as a
traceback."""

from __future__ import annotations

import os
from pathlib import Path


def folder_problem(folder: Path, what: str) -> str | None:
    """Why ``folder`` cannot hold results (it, or a folder it would be made in, is a file), or None; ``what`` names
    the option in the message, e.g. "--report-dir DIR"."""
    for path in (folder, *folder.parents):
        if path.exists() and not path.is_dir():
            return f"{what}: {path} is a file, not a folder"
    return None


def output_file_problem(out: Path, source: Path) -> str | None:
    """Why the output file ``out`` (``--out``) cannot be written, or None: it is the input ``source`` itself (which
    writing would destroy), a folder, or lies under a file."""
    try:
        if out.exists() and source.exists() and os.path.samefile(out, source):
            return f"--out {out} is the input file, which it would overwrite: give another file name"
    except OSError:  # unreadable: not the same file as far as can be told; writing it says what is wrong
        pass
    if out.is_dir():
        return f"--out {out} is a folder: give a file name in it"
    return folder_problem(out.parent, f"--out {out}")
