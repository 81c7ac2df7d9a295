"""``cmr-landmark`` (setup.py console_scripts -> ``cmr_landmark.cli:main``): the command list on ``--help``, on no
arguments and on an unknown command, with their exit codes, and dispatch to a command's own parser."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from test_convert import heart_like
from test_io import oblique_affine, write_nifti

from cmr_landmark import cli
from cmr_landmark.model_store import find_model


def _assert_lists_every_command(text: str) -> None:
    assert "usage: cmr-landmark COMMAND" in text
    for name, (_, _, description) in cli.COMMANDS.items():
        assert any(line.split()[:1] == [name] and description in line for line in text.splitlines()), name


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_command_on_stdout_and_exits_0(flag, capsys):
    assert cli.main([flag]) == 0
    out, err = capsys.readouterr()
    _assert_lists_every_command(out)
    assert err == ""


def test_no_arguments_lists_every_command_on_stderr_and_exits_2(capsys):
    assert cli.main([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    _assert_lists_every_command(err)
    assert "unknown command" not in err


def test_unknown_command_is_named_with_the_list_and_exits_2(capsys):
    assert cli.main(["frobnicate", "--help"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[0] == "cmr-landmark: unknown command 'frobnicate'"
    _assert_lists_every_command(err)


def test_every_command_has_a_one_line_description_and_an_entry_function():
    for name, (module, function, description) in cli.COMMANDS.items():
        assert description and "\n" not in description, name
        assert callable(getattr(importlib.import_module(module), function)), name


def test_a_known_command_gets_the_remaining_arguments(monkeypatch):
    seen: list[list[str]] = []
    fake = type(sys)("fake_cmr_command")
    fake.run = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "fake_cmr_command", fake)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_cmr_command", "run", "a test command"))
    assert cli.main(["fake", "--flag", "value"]) == 3
    assert seen == [["--flag", "value"]]


def test_a_command_help_goes_to_its_own_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["convert", "--help"])
    assert exit_info.value.code == 0
    assert "usage: cmr-landmark convert" in capsys.readouterr().out


def test_the_installed_script_lists_every_command_without_importing_torch():
    script = shutil.which("cmr-landmark", path=str(Path(sys.executable).parent)) or shutil.which("cmr-landmark")
    if script is None:
        pytest.skip("the cmr-landmark console script is not installed (pip install -e .)")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _assert_lists_every_command(done.stdout)
    bad = subprocess.run([script, "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "unknown command 'nope'" in bad.stderr
    _assert_lists_every_command(bad.stderr)
    # the list comes from the dispatch table alone: no command module (and so no torch) is imported for it
    probe = "import sys; from cmr_landmark.cli import main; main(['--help']); assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode == 0


def test_the_librarys_warnings_print_as_the_commands_own_warning_lines(tmp_path, throwaway_model_folder):
    images = heart_like(40, 48, phases=1, slices=3)
    images[:, :, 2] = 0  # zero padding past the apex: detect warns of it through logging
    path = write_nifti(tmp_path / "stack.nii.gz", images, oblique_affine())
    done = subprocess.run([sys.executable, "-m", "cmr_landmark.cli", "detect", str(path), "--view", "sax",
                           "--sequence", "cine", "--out", str(tmp_path / "out.json")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CMR_LANDMARK_MODELS": str(throwaway_model_folder)})
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "hold nothing to find landmarks in" in line]
    assert line.startswith(f"warning: {path}: 1 of 3 images")  # was the bare message, unlike print()ed warnings


def test_detect_does_not_print_the_torchscript_deprecation_warning(tmp_path, throwaway_model_folder, monkeypatch):
    """torch 2.13 warns on every torch.jit.load; TorchScript is the model format here, so model_store silences exactly
    that warning around its one load (and nowhere else)."""
    model = find_model("sax", "cine", folder=throwaway_model_folder).file
    with warnings.catch_warnings(record=True) as direct:
        warnings.simplefilter("always")
        torch.jit.load(str(model), map_location="cpu")
    assert any("torch.jit.load" in str(w.message) for w in direct)  # what an unfiltered load prints

    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(throwaway_model_folder))
    path = write_nifti(tmp_path / "sax.nii.gz", heart_like(40, 48, phases=1, slices=1), oblique_affine())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["detect", str(path), "--view", "sax", "--sequence", "cine",
                         "--out", str(tmp_path / "out.json")]) == 0
    assert not [w for w in caught if "torch.jit.load" in str(w.message)]
    assert not any(pattern is not None and "jit" in pattern.pattern for _, pattern, *_ in warnings.filters)  # scoped


@pytest.mark.parametrize("command", [["build-cache", "acdc"], ["evaluate", "--view", "sax", "--datasets", "acdc"]])
def test_commands_that_need_the_public_data_say_where_it_is_missing(command, tmp_path, monkeypatch, capsys):
    # a fresh machine: no ../shared/data and no cache
    monkeypatch.setenv("CMR_LANDMARK_DATA", str(tmp_path / "no_data"))
    monkeypatch.setenv("CMR_LANDMARK_CACHE", str(tmp_path / "no_cache"))
    out = ["--out", str(tmp_path / "report")] if command[0] == "evaluate" else []
    with pytest.raises(SystemExit) as stop:
        cli.main(command + out)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "not found (set CMR_LANDMARK_DATA)" in error and "Traceback" not in error
