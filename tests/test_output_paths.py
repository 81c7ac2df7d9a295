"""A new user's likely output-path mistakes with ``detect``, ``convert`` and ``replay``: each is refused in one line
before any work is done, and the input is never overwritten by its own output."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_convert import heart_like
from test_io import write_nifti

from cmr_landmark.config import REPO_ROOT
from cmr_landmark.convert_cli import main_convert
from cmr_landmark.detect_cli import main_detect
from cmr_landmark.output_paths import write_json_atomically, written_beside
from cmr_landmark.replay_cli import main_replay

SAMPLE = REPO_ROOT / "samples" / "mnms2_001_sax.h5"


def _refused(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error  # one line
    return error


def test_convert_refuses_to_overwrite_its_input(tmp_path, capsys):
    source = write_nifti(tmp_path / "scan.nii.gz", heart_like(32, 32, phases=1, slices=2), np.eye(4))
    before = source.read_bytes()
    for out in (source, tmp_path / "." / "scan.nii.gz"):
        error = _refused(main_convert, [str(source), "--out", str(out), "--view", "sax"], capsys)
        assert "is the input file" in error
        assert source.read_bytes() == before  # was replaced by an ISMRMRD file


def test_replay_refuses_to_overwrite_its_input_before_anything_runs(tmp_path, capsys):
    source = tmp_path / "sax.h5"
    shutil.copyfile(SAMPLE, source)
    before = source.read_bytes()
    # nothing listens on port 9: were the check missing, the replay would try to connect (or, in active mode,
    # run the gadget and write its results over the input)
    error = _refused(main_replay, [str(source), "--out", str(source), "--gadgetron", "127.0.0.1:9"], capsys)
    assert "is the input file" in error and "cannot connect" not in error
    assert source.read_bytes() == before


@pytest.mark.parametrize("command", ["detect", "convert", "replay"])
def test_an_output_under_a_file_or_a_folder_as_output_is_said_plainly(tmp_path, capsys, command):
    source = tmp_path / "sax.h5"
    shutil.copyfile(SAMPLE, source)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    if command == "detect":  # the checks come before the model is loaded or run
        main, extra = main_detect, ["--view", "sax", "--sequence", "cine"]
    elif command == "convert":
        main, extra = main_convert, ["--view", "sax"]
    else:
        main, extra = main_replay, ["--gadgetron", "127.0.0.1:9"]
    error = _refused(main, [str(source), "--out", str(a_file / "out.h5"), *extra], capsys)
    assert f"{a_file} is a file, not a folder" in error  # was "[Errno 17] File exists: '...notes.txt'"
    error = _refused(main, [str(source), "--out", str(tmp_path), *extra], capsys)
    assert f"--out {tmp_path} is a folder" in error  # detect: "[Errno 21] Is a directory", after the model ran
    if command == "replay":
        error = _refused(main, [str(source), "--out", str(tmp_path / "out.h5"), "--report-dir",
                                str(a_file / "report"), *extra], capsys)
        assert f"{a_file} is a file, not a folder" in error


def test_detect_says_plainly_when_overlays_is_a_file(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    error = _refused(main_detect, [str(SAMPLE), "--view", "sax", "--sequence", "cine", "--out",
                                   str(tmp_path / "out.json"), "--overlays", str(a_file)], capsys)
    assert f"--overlays {a_file}: {a_file} is a file, not a folder" in error  # was "[Errno 17] File exists"
    assert not (tmp_path / "out.json").exists()  # said before anything was written


def test_a_file_written_beside_replaces_the_old_one_only_when_the_write_ends_well(tmp_path):
    path = tmp_path / "manifest.json"
    write_json_atomically(path, {"models": ["old"]})
    with pytest.raises(RuntimeError), written_beside(path) as partial:
        partial.write_text("half a fi")
        raise RuntimeError("killed while writing")
    assert json.loads(path.read_text()) == {"models": ["old"]}
    write_json_atomically(path, {"models": ["new"]})
    assert json.loads(path.read_text()) == {"models": ["new"]}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no partial file left either time
