"""Output paths the commands (detect, convert, replay) check before any work: an answer that cannot be written, or
that would overwrite the input it came from, is said in one line at once, not after minutes of work or as a
traceback. And the one way every file that others read is written: beside, then renamed (:func:`written_beside`)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def folder_problem(folder: Path, what: str) -> str | None:
    """Why ``folder`` cannot hold results (it, or a folder it would be made in, is a file), or None; ``what`` names
    the option in the message, e.g. "--report-dir DIR"."""
    for path in (folder, *folder.parents):
        if path.exists() and not path.is_dir():
            return f"{what}: {path} is a file, not a folder"
    return None


def output_file_problem(out: Path, source: Path) -> str | None:
    """Why the output file ``out`` (``--out``) cannot be written, or None: it is the input ``source`` itself or a
    DICOM image of the input folder (writing would destroy it; an earlier output there is no image and may be
    written again), a folder, under a file, no regular file (:func:`written_beside` would rename over a device), or
    in a folder where no file can be created."""
    try:
        if out.exists() and source.exists() and os.path.samefile(out, source):
            return f"--out {out} is the input file, which it would overwrite: give another file name"
    except OSError:  # unreadable: not the same file as far as can be told; writing it says what is wrong
        pass
    if source.is_dir() and source.resolve() in out.resolve().parents and out.is_file():
        try:
            overwrites_an_image = is_dicom_file(out)
        except OSError:  # unreadable: not an image as far as can be told; writing it says what is wrong
            overwrites_an_image = False
        if overwrites_an_image:
            return (f"--out {out} is an image of the input folder {source}, which it would overwrite: give another "
                    "file name")
    if out.is_dir():
        return f"--out {out} is a folder: give a file name in it"
    if out.exists() and not out.is_file():
        return f"--out {out} is not a regular file (a device or a pipe): give the name of a file to write"
    return folder_problem(out.parent, f"--out {out}") or unwritable_folder_problem(out.parent, f"--out {out}")


# Where a DICOM Part 10 file says so (after its 128-byte preamble).
DICOM_MAGIC_OFFSET, DICOM_MAGIC = 128, b"DICM"


def is_dicom_file(path: Path) -> bool:
    """Whether the existing file ``path`` is a DICOM file: by its content, whatever its name (e.g. a UID), or by a
    .dcm/.ima name (an old ACR-NEMA file has no preamble). OSError where it cannot be read. Kept here, beside the
    output checks that need it, so that neither they nor the VIA reader import pydicom to ask."""
    with open(path, "rb") as stream:
        head = stream.read(DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))
    return head[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC or path.suffix.lower() in (".dcm", ".ima")


def nested_output_problem(out: Path, folder: Path, what: str) -> str | None:
    """Why the output file ``out`` and the output folder ``folder`` cannot both be written, or None: the folder is
    ``out`` itself or lies under it, so that making it would leave no room for the file. ``what`` names the
    folder's option, e.g. "--report-dir DIR"."""
    if folder.resolve() == out.resolve() or out.resolve() in folder.resolve().parents:
        return f"{what} is --out {out} or lies under it: give a folder beside the output file"
    return None


def unwritable_folder_problem(folder: Path, what: str) -> str | None:
    """Why no file can be created in ``folder``, or None, found by creating and removing one there, or where the
    folder does not exist yet, in the nearest folder above it that does (no folder is made: a command checks
    before it reads its input, and makes its folders once the input has been read). As root, only creating a file
    tells: access() calls /sys writable. ``what`` names the option, e.g. "--out OUT.h5"."""
    existing = next((path for path in (folder, *folder.parents) if path.exists()), folder)
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check-"):
            pass
    except OSError as error:
        return f"{what}: cannot create files in {existing} ({error.strerror or error})"
    return None


@contextmanager
def written_beside(path: Path) -> Iterator[Path]:
    """A partial file beside ``path`` for the block to write; renamed over ``path`` when the block ends without an
    error, removed when it does not. So a reader (a gadget reading the manifest, a resumed run, another training
    rank) never sees half a file, and a failed or interrupted write leaves ``path`` as it was. The partial file is
    the process's own, so two processes writing ``path`` at once do not write into one."""
    partial = path.with_name(f".{path.name}.partial{os.getpid()}")
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def write_json_atomically(path: Path, record: object) -> None:
    """Write ``record`` as JSON to ``path`` (:func:`written_beside`)."""
    with written_beside(path) as partial:
        partial.write_text(json.dumps(record, indent=2) + "\n")
