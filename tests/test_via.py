"""VIA (VGG Image Annotator) projects as labelled slices: points, spacing, absent landmarks, bad files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import FIXTURES

from cmr_landmark.evaluation import main_evaluate, main_export
from cmr_landmark.training import main_train
from cmr_landmark.via import ViaError, read_via_slices

PROJECT = FIXTURES / "via" / "sax_project.json"


def test_project_points_become_row_col_landmarks_on_the_images() -> None:
    slices = read_via_slices(PROJECT, "sax", "cine")
    assert [s.patient for s in slices] == ["volunteer1"] * 3
    project = json.loads(PROJECT.read_text())["_via_img_metadata"]
    for s, entry in zip(slices, project.values(), strict=True):
        assert s.pixel_spacing_mm == (2.0, 2.0) and s.image.ndim == 2
        for region in entry["regions"]:
            k = ["A-RVI", "P-RVI", "C-LV"].index(region["region_attributes"]["landmark"])
            shape = region["shape_attributes"]
            np.testing.assert_allclose(s.landmarks_rc[k], [shape["cy"], shape["cx"]])
    centre = slices[0].landmarks_rc[2].round().astype(int)
    assert slices[0].image[tuple(centre)] > np.percentile(slices[0].image, 90)  # C-LV sits in the bright blood pool
    assert np.isnan(slices[2].landmarks_rc).all()  # the image beyond the apex has no points: no landmarks


def test_annotation_export_without_project_wrapper_reads_the_same(tmp_path) -> None:
    for png in PROJECT.parent.glob("*.png"):
        shutil.copy(png, tmp_path)
    exported = tmp_path / "annotations.json"
    exported.write_text(json.dumps(json.loads(PROJECT.read_text())["_via_img_metadata"]))
    for a, b in zip(read_via_slices(exported, "sax", "lge"), read_via_slices(PROJECT, "sax", "cine"), strict=True):
        np.testing.assert_array_equal(a.landmarks_rc, b.landmarks_rc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e["regions"][0]["region_attributes"].update(landmark="LV apex"), "none of A-RVI"),
        (lambda e: e["regions"][0]["shape_attributes"].update(name="rect"), "point regions"),
        (lambda e: e["regions"].append(e["regions"][0]), "marked twice"),
        (lambda e: e["regions"][0]["shape_attributes"].update(cx=5000), "outside"),
        (lambda e: e["file_attributes"].pop("pixel_spacing_mm"), "no pixel spacing"),
        (lambda e: e.update(filename="missing.png"), "is not there"),
    ],
)
def test_bad_labels_get_a_clear_error(tmp_path, change, message) -> None:
    for png in PROJECT.parent.glob("*.png"):
        shutil.copy(png, tmp_path)
    project = json.loads(PROJECT.read_text())
    change(next(iter(project["_via_img_metadata"].values())))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(project))
    with pytest.raises(ViaError, match=message):
        read_via_slices(broken, "sax", "cine")


def test_not_a_via_file_is_refused(tmp_path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"images": [1, 2]}')
    with pytest.raises(ViaError, match="no VIA image metadata"):
        read_via_slices(other, "sax", "cine")


def test_train_export_evaluate_commands_on_a_via_project(tmp_path, capsys) -> None:
    # the whole command-line path on three labelled images (plumbing and files, not accuracy)
    run, models = tmp_path / "run", tmp_path / "models"
    train = ["--view", "sax", "--via", str(PROJECT), "--via-val", str(PROJECT), "--epochs", "1", "--batch-size", "2",
             "--out", str(run)]
    assert main_train(train) == 0
    assert json.loads((run / "run.json").read_text())["train_slices"] == 3
    assert "share patients" in capsys.readouterr().err  # the same project for both: said, not hidden
    with pytest.raises(SystemExit) as stop:  # a second run into the same folder would overwrite the first's
        main_train(train)
    assert stop.value.code == 2 and "--resume continues it" in capsys.readouterr().err
    export = ["--run", str(run), "--name", "sax_cine_mine", "--models-dir", str(models),
              "--mirror-pooling", "log_linear"]
    assert main_export(export) == 0
    with pytest.raises(SystemExit) as stop:  # nor does an export replace a model of the same name unasked
        main_export(export)
    assert stop.value.code == 2 and "--overwrite" in capsys.readouterr().err
    (entry,) = json.loads((models / "manifest.json").read_text())["models"]
    assert entry["name"] == "sax_cine_mine" and 0.05 <= entry["probability_threshold"] <= 0.95
    assert entry["mirror_average"] and entry["mirror_pooling"] == "log_linear"  # as sax_any and sax_t1 ship
    assert set(entry["validation"]["landmarks"]) == {"A-RVI", "P-RVI", "C-LV"}
    card = (models / "sax_cine_mine.md").read_text()
    assert "## Validation accuracy" in card and f"VIA project {PROJECT.name}" in card and "splits.json" not in card
    evaluate = ["--view", "sax", "--via", str(PROJECT), "--models-dir", str(models), "--out", str(tmp_path / "ev")]
    assert main_evaluate(evaluate) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["slices"] == 3 and summary["probability_threshold"] == entry["probability_threshold"]
    # nothing found at threshold 1: the distances are null, not NaN, which strict JSON (jq, JavaScript) refuses
    assert main_evaluate([*evaluate[:-1], str(tmp_path / "none"), "--threshold", "1"]) == 0
    strict = json.loads((tmp_path / "none" / "summary.json").read_text(), parse_constant=pytest.fail)
    assert [row["mean_mm"] for row in strict["landmarks"].values()] == [None, None, None]
    capsys.readouterr()
    # the run on its own training labels: said, as its figures are training figures
    own = ["--view", "sax", "--run", str(run), "--via", str(PROJECT), "--out", str(tmp_path / "er")]
    assert main_evaluate(own) == 0
    assert f"{PROJECT.name} holds the labels {run} was trained on" in capsys.readouterr().err
    # the labels a run names, moved since: one line from export, not a traceback
    moved = json.loads((run / "run.json").read_text())
    moved["via"][0] = str(tmp_path / "moved.json")
    (run / "run.json").write_text(json.dumps(moved))
    with pytest.raises(SystemExit) as stop:
        main_export(["--run", str(run), "--name", "other", "--models-dir", str(models)])
    assert stop.value.code == 2 and "the data its run.json names cannot be read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # --via without validation labels is refused with a usage message
        main_train(["--view", "sax", "--via", str(PROJECT), "--out", str(run)])
    assert stop.value.code == 2 and "--via needs --via-val" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # fresh contrasts are drawn from label masks, which point labels lack
        main_train([*train, "--fresh-contrast-fraction", "0.5"])
    assert stop.value.code == 2 and "VIA point labels do not have" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # three images cannot fill the default batch of 24: said before training
        main_train([arg for arg in train if arg not in ("--batch-size", "2")])
    assert stop.value.code == 2 and "fewer than one batch of 24 per process: give --batch-size 3" in (
        capsys.readouterr().err)


def test_a_resume_continues_the_run_as_it_was_started(tmp_path, capsys, monkeypatch) -> None:
    run = tmp_path / "run"
    train = ["--view", "sax", "--via", str(PROJECT), "--via-val", str(PROJECT), "--batch-size", "2", "--out", str(run)]
    assert main_train([*train, "--epochs", "1"]) == 0
    with pytest.raises(SystemExit) as stop:  # its optimiser would keep the old rate while run.json said the new
        main_train([*train, "--epochs", "2", "--resume", "--lr", "1e-5"])
    assert stop.value.code == 2 and "lr 1e-05 (the run's: 0.001)" in capsys.readouterr().err
    assert main_train([*train, "--epochs", "2", "--resume"]) == 0  # more epochs: the one change a resume makes
    assert json.loads((run / "run.json").read_text())["epochs"] == 2
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun with two processes: each trains on half the slices
    with pytest.raises(SystemExit) as stop:
        main_train([*train, "--epochs", "1", "--out", str(tmp_path / "two")])
    assert stop.value.code == 2 and "3 training images over 2 process(es)" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (["--datasets", "acdc,nosuchset"], "unknown data set"),
    (["--widths", "16,x"], "whole numbers"),
    (["--batch-size", "0"], "must be positive"),
    (["--epochs", "0"], "needs --init-from or --init-coarse-from"),
    (["--epochs", "2", "--epochs-fine", "0"], "needs --init-from"),
    (["--out", str(PROJECT)], "is a file"),
    (["--init-from", "/nonexistent/sax_cin.pt"], "--init-from /nonexistent/sax_cin.pt: no such file or folder"),
])
def test_train_refuses_bad_arguments_before_it_trains(tmp_path, capsys, change, message) -> None:
    args = ["--view", "sax", "--out", str(tmp_path / "run"), *(["--datasets", "acdc"] * ("--datasets" not in change)),
            *change]  # a later --out wins
    with pytest.raises(SystemExit) as stop:
        main_train(args)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("change", "message"), [
    # the remedies are named as the flags the user types, not as read_via_slices' parameters
    (lambda e: e["file_attributes"].pop("pixel_spacing_mm"), "no pixel spacing (give the image a pixel_spacing_mm "
                                                             "file attribute in VIA, or all images one with "
                                                             "--pixel-spacing-mm ROW COL)"),
    (lambda e: e.update(filename="missing.png"), "is not there (give the images' folder with --via-images)"),
    (lambda e: e["regions"][0]["shape_attributes"].update(cx=5000), "is outside the"),
    (lambda e: e["regions"][0]["region_attributes"].update(landmark="LV apex"), "'LV apex' is none of A-RVI"),
    (None, "broken.json is not a readable VIA JSON file"),
])
def test_evaluate_names_the_via_file_and_image_of_a_bad_label_in_one_line(tmp_path, capsys, change, message) -> None:
    for png in PROJECT.parent.glob("*.png"):
        shutil.copy(png, tmp_path)
    project = json.loads(PROJECT.read_text())
    entry = next(iter(project["_via_img_metadata"].values()))
    broken = tmp_path / "broken.json"
    if change is None:
        broken.write_text(json.dumps(project)[:-10])  # cut off: not JSON
    else:
        change(entry)
        broken.write_text(json.dumps(project))
    with pytest.raises(SystemExit) as stop:  # was a ViaError traceback
        main_evaluate(["--view", "sax", "--via", str(broken), "--out", str(tmp_path / "ev")])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    if change is None:
        return
    if "is not there" in message:  # a missing image is named by its path
        assert str(tmp_path / "missing.png") in error
    else:  # the file and the image, as docs/training.md says
        assert f"broken.json: {entry['filename']}:" in error


def test_a_via_file_that_cannot_be_read_is_a_usage_error(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(SystemExit) as stop:
        main_train(["--view", "sax", "--via", str(empty), "--via-val", str(PROJECT), "--out", str(tmp_path / "r")])
    assert stop.value.code == 2
    assert "VIA" in capsys.readouterr().err


def test_a_bad_pixel_spacing_flag_is_named_as_the_flag(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main_evaluate(["--view", "sax", "--via", str(PROJECT), "--pixel-spacing-mm", "0", "1.5",
                       "--out", str(tmp_path / "ev")])
    assert stop.value.code == 2
    assert "--pixel-spacing-mm must be two positive numbers (row, column), got [0.0, 1.5]" in capsys.readouterr().err
