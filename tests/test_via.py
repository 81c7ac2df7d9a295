"""VIA (VGG Image Annotator) projects as labelled slices: points, spacing, absent landmarks, bad files."""

from __future__ import annotations

import json
import logging
import shutil

import matplotlib.image
import numpy as np
import pydicom
import pytest
import torch
from conftest import FIXTURES

from cmr_landmark.evaluation import main_evaluate, main_export
from cmr_landmark.training import main_train
from cmr_landmark.via import MAX_REPORTED_ERRORS, ViaError, read_via_slices, via_point

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
            # VIA measures from the image's top-left corner, the arrays index pixel centres
            np.testing.assert_allclose(s.landmarks_rc[k], [shape["cy"] - 0.5, shape["cx"] - 0.5])
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
    threads = torch.get_num_threads()
    try:  # the thread count is the process's (train and export above set theirs): set back for the tests after this
        torch.set_num_threads(1)
        assert main_evaluate([*evaluate[:-1], str(tmp_path / "none"), "--threshold", "1", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
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


def test_a_run_with_consistency_pairs_records_them_and_its_card_says_so(tmp_path, capsys) -> None:
    # point labels have no masks: each pair is the image and itself under other intensity augmentation
    run, models = tmp_path / "run", tmp_path / "models"
    train = ["--view", "sax", "--via", str(PROJECT), "--via-val", str(PROJECT), "--epochs", "1", "--batch-size", "2",
             "--out", str(run)]
    for bad, message in ((["--consistency-weight", "-1"], "finite number >= 0"),
                         (["--consistency-toward-real"], "give both")):
        with pytest.raises(SystemExit) as stop:
            main_train([*train, *bad])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert main_train([*train, "--consistency-weight", "2", "--consistency-toward-real",
                       "--distance-loss-weight", "0.3"]) == 0
    recorded = json.loads((run / "run.json").read_text())
    assert (recorded["consistency_weight"], recorded["consistency_toward_real"]) == (2.0, True)
    assert main_export(["--run", str(run), "--name", "sax_cine_pairs", "--models-dir", str(models)]) == 0
    card = " ".join((models / "sax_cine_pairs.md").read_text().split())
    assert "fine items in pairs of their own image and a second view, the second view's maps pulled toward the " \
           "real image's (training.consistency_loss, weight 2.0)" in card
    assert "distance term (training.point_distance_loss, weight 0.3 per mm)" in card
    assert "fresh random" not in card  # none was asked for


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
    (["--datasets", "acdc, nosuchset"], "unknown data set(s) nosuchset; "),  # names as typed after a comma
    (["--sequence", "bssfp"], "argument --sequence: invalid choice: 'bssfp'"),  # was accepted, and exported
    (["--via", str(PROJECT), "--via-val", str(PROJECT)], "give --datasets/--val-datasets or --via/--via-val, not both"),
    (["--resume"], "holds no checkpoints of a run to continue"),  # a mistyped --out started afresh
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


def test_a_via_file_that_cannot_be_used_is_said_in_one_line(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(SystemExit) as stop:
        main_train(["--view", "sax", "--via", str(empty), "--via-val", str(PROJECT), "--out", str(tmp_path / "r")])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"cmr-landmark train: {empty} lists no images\n"  # no usage block


def test_a_bad_pixel_spacing_flag_is_named_as_the_flag(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main_evaluate(["--view", "sax", "--via", str(PROJECT), "--pixel-spacing-mm", "0", "1.5",
                       "--out", str(tmp_path / "ev")])
    assert stop.value.code == 2
    assert "--pixel-spacing-mm must be two positive numbers (row, column), got [0.0, 1.5]" in capsys.readouterr().err


def _edited_copy(tmp_path, change, name: str = "edited.json"):
    """The fixture project with its PNGs in ``tmp_path``, ``change(entries)`` applied to its image entries."""
    for png in PROJECT.parent.glob("*.png"):
        shutil.copy(png, tmp_path)
    project = json.loads(PROJECT.read_text())
    change(list(project["_via_img_metadata"].values()))
    edited = tmp_path / name
    edited.write_text(json.dumps(project))
    return edited


def _one_image_project(tmp_path, image_name: str, regions: list, file_attributes: dict, size: int | None = None):
    """A VIA 2 project of one image already in ``tmp_path``."""
    entry = {"filename": image_name, "size": (tmp_path / image_name).stat().st_size if size is None else size,
             "regions": regions, "file_attributes": file_attributes}
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"_via_img_metadata": {f"{image_name}{entry['size']}": entry}}))
    return path


def test_a_click_on_a_pixels_centre_is_that_pixels_array_index(tmp_path) -> None:
    # VIA 2 stores round(click offset on the canvas * canvas scale): pixels from the image's left and top edges
    # (via-2.x.y/src/via.js, _via_reg_canvas_mouseup_handler), so pixel (row 2, col 5) is clicked at cx 5.5, cy 2.5
    image = np.zeros((6, 8))
    image[2, 5] = 1.0
    matplotlib.image.imsave(tmp_path / "dot.png", image, cmap="gray")
    centre = {"shape_attributes": {"name": "point", "cx": 5.5, "cy": 2.5}, "region_attributes": {"landmark": "C-LV"}}
    (s,) = read_via_slices(_one_image_project(tmp_path, "dot.png", [centre], {"pixel_spacing_mm": "1.5"}), "sax",
                           "cine")
    np.testing.assert_array_equal(s.landmarks_rc[2], [2.0, 5.0])
    assert np.unravel_index(np.argmax(s.image), s.image.shape) == (2, 5)
    assert via_point(2, 5) == centre["shape_attributes"]  # what the tests write is what VIA would have
    far_edge = {**centre, "shape_attributes": via_point(5.5, 7.5)}  # the bottom-right corner is on the image
    (s,) = read_via_slices(_one_image_project(tmp_path, "dot.png", [far_edge], {"pixel_spacing_mm": "1.5"}), "sax",
                           "cine")
    np.testing.assert_array_equal(s.landmarks_rc[2], [5.5, 7.5])
    beyond = {**centre, "shape_attributes": via_point(2, 8)}
    with pytest.raises(ViaError, match=r"C-LV at \(cx 8.5, cy 2.5\) is outside the 8 x 6 \(width x height\) image"):
        read_via_slices(_one_image_project(tmp_path, "dot.png", [beyond], {"pixel_spacing_mm": "1.5"}), "sax", "cine")


@pytest.mark.parametrize(("text", "message"), [
    ("1,25", r"'1,25' gives pixels 25 times longer than wide.*\(a decimal comma\? write 1.25"),
    ("1,5625", r"'1,5625' is not a pixel size an MR image has .*\(a decimal comma\?"),  # was a traceback
    ("0.001", r"'0.001' is not a pixel size an MR image has \(0.01-100 mm\)$"),
    ("1.0;3.0", r"'1.0;3.0' gives pixels 3 times longer than wide, which MR images do not have$"),
    ("1.4 mm", r"'1.4 mm' is not a number or a pair of numbers$"),
])
def test_an_implausible_pixel_spacing_is_refused(tmp_path, text, message) -> None:
    edited = _edited_copy(tmp_path, lambda entries: entries[0]["file_attributes"].update(pixel_spacing_mm=text))
    with pytest.raises(ViaError, match=f"edited.json: sax_basal.png: pixel_spacing_mm {message}"):
        read_via_slices(edited, "sax", "cine")


def test_a_pixel_spacing_pair_is_row_then_column(tmp_path) -> None:
    edited = _edited_copy(tmp_path, lambda entries: entries[0]["file_attributes"].update(pixel_spacing_mm="1.25,1.3"))
    assert read_via_slices(edited, "sax", "cine")[0].pixel_spacing_mm == (1.25, 1.3)
    with pytest.raises(ViaError, match=r"--pixel-spacing-mm is not a pixel size an MR .*, got \[1.0, 500.0\]"):
        read_via_slices(PROJECT, "sax", "cine", pixel_spacing_mm=(1.0, 500.0))


def test_an_image_of_another_size_than_the_one_labelled_is_refused(tmp_path) -> None:
    edited = _edited_copy(tmp_path, lambda entries: entries[1].update(size=entries[1]["size"] * 4))
    with pytest.raises(ViaError, match=r"edited.json: sax_mid.png: .*sax_mid.png is 16705 bytes, the VIA project "
                                       r"labelled a file of 66820: not the image that was labelled"):
        read_via_slices(edited, "sax", "cine")
    for unchecked in (0, -1, None):  # VIA's size of an image added by URL, and a project that records none
        edited = _edited_copy(tmp_path, lambda entries, size=unchecked: entries[1].update(size=size))
        assert len(read_via_slices(edited, "sax", "cine")) == 3


def test_a_dicom_is_known_by_its_content_and_may_lack_pixel_spacing(tmp_path) -> None:
    from test_io import write_dicom

    pixels = (np.arange(12 * 16).reshape(12, 16) % 97).astype(np.uint16)
    name = "1.3.12.2.1107.5.2.30.25245.2015"  # an anonymiser's UID name: no .dcm
    write_dicom(tmp_path / name, pixels, (0, 0, 0), (1, 0, 0, 0, 1, 0), (1.5, 1.5), 0.0, 1, "1.2.3")
    point = {"shape_attributes": via_point(3, 4), "region_attributes": {"landmark": "C-LV"}}
    (s,) = read_via_slices(_one_image_project(tmp_path, name, [point], {}), "sax", "cine")
    np.testing.assert_array_equal(s.image, pixels)
    assert s.pixel_spacing_mm == (1.5, 1.5)  # the header's
    dataset = pydicom.dcmread(tmp_path / name)
    del dataset.PixelSpacing  # an export without it: was "'FileDataset' object has no attribute 'PixelSpacing'"
    dataset.save_as(tmp_path / name)
    project = _one_image_project(tmp_path, name, [point], {})
    assert read_via_slices(project, "sax", "cine", pixel_spacing_mm=(1.2, 1.2))[0].pixel_spacing_mm == (1.2, 1.2)
    with pytest.raises(ViaError, match="no pixel spacing"):
        read_via_slices(project, "sax", "cine")
    project = _one_image_project(tmp_path, name, [point], {"pixel_spacing_mm": "1.3"})
    assert read_via_slices(project, "sax", "cine")[0].pixel_spacing_mm == (1.3, 1.3)


def test_a_via_1_project_with_regions_keyed_by_index_reads_as_via_2(tmp_path) -> None:
    def to_via_1(entries: list) -> None:
        for entry in entries:
            entry["regions"] = {str(k): region for k, region in enumerate(entry["regions"])}

    for a, b in zip(read_via_slices(_edited_copy(tmp_path, to_via_1), "sax", "cine"),
                    read_via_slices(PROJECT, "sax", "cine"), strict=True):
        np.testing.assert_array_equal(a.landmarks_rc, b.landmarks_rc)


@pytest.mark.parametrize(("region_attributes", "message"), [
    ({"name": "A-RVI"}, r"a point has no region attribute 'landmark' \(its attributes: 'name'\)"),
    ({}, r"a point has no region attribute 'landmark' \(its attributes: none\)"),
    ({"landmark": {"A-RVI": True, "P-RVI": True}},
     r"a point's checkbox attribute 'landmark' has 2 options ticked \(A-RVI, P-RVI\): tick exactly one"),
    ({"landmark": {"A-RVI": False}}, r"a point's checkbox attribute 'landmark' has 0 options ticked \(none\)"),
])
def test_a_missing_or_ambiguous_landmark_attribute_is_named(tmp_path, region_attributes, message) -> None:
    edited = _edited_copy(tmp_path, lambda entries: entries[0]["regions"][0].update(
        region_attributes=region_attributes))
    with pytest.raises(ViaError, match=f"edited.json: sax_basal.png: {message}"):
        read_via_slices(edited, "sax", "cine")


def test_a_checkbox_attribute_with_one_option_ticked_names_the_landmark(tmp_path) -> None:
    def to_checkboxes(entries: list) -> None:
        for entry in entries:
            for region in entry["regions"]:
                name = region["region_attributes"]["landmark"]
                region["region_attributes"]["landmark"] = {"A-RVI": False, "P-RVI": False, "C-LV": False, name: True}

    for a, b in zip(read_via_slices(_edited_copy(tmp_path, to_checkboxes), "sax", "cine"),
                    read_via_slices(PROJECT, "sax", "cine"), strict=True):
        np.testing.assert_array_equal(a.landmarks_rc, b.landmarks_rc)


@pytest.mark.parametrize("value", [None, "47", float("nan"), True])
def test_a_point_without_numeric_coordinates_names_the_file_and_image(tmp_path, value) -> None:
    edited = _edited_copy(tmp_path, lambda entries: entries[1]["regions"][2]["shape_attributes"].update(cy=value))
    with pytest.raises(ViaError, match=r"edited.json: sax_mid.png: C-LV's point has cy = .* not a number of pixels"):
        read_via_slices(edited, "sax", "cine")  # was a TypeError traceback


def test_partly_labelled_images_are_counted_in_a_warning(tmp_path, caplog) -> None:
    edited = _edited_copy(tmp_path, lambda entries: entries[0]["regions"].pop(0))  # sax_basal.png without A-RVI
    with caplog.at_level(logging.WARNING, logger="cmr_landmark.via"):
        slices = read_via_slices(edited, "sax", "cine")
    assert np.isnan(slices[0].landmarks_rc[0]).all() and np.isfinite(slices[0].landmarks_rc[1:]).all()
    assert "edited.json: 1 of 3 images are partly labelled, e.g. sax_basal.png without A-RVI" in caplog.text
    caplog.clear()
    read_via_slices(PROJECT, "sax", "cine")  # whole images and an image without points are not partly labelled
    assert "partly" not in caplog.text


def test_every_unusable_image_of_a_project_is_named_at_once(tmp_path) -> None:
    def break_two(entries: list) -> None:
        entries[0]["regions"][0]["region_attributes"]["landmark"] = "LV apex"
        entries[2]["file_attributes"].pop("pixel_spacing_mm")

    with pytest.raises(ViaError) as refused:
        read_via_slices(_edited_copy(tmp_path, break_two), "sax", "cine")
    lines = str(refused.value).splitlines()
    assert lines[0] == f"2 of 3 images of {tmp_path / 'edited.json'} cannot be used:"
    assert lines[1].startswith("edited.json: sax_basal.png: region attribute 'landmark' = 'LV apex'")
    assert lines[2].startswith("edited.json: sax_beyond_apex.png: no pixel spacing")
    # a folder that holds none of them: the first MAX_REPORTED_ERRORS named, and no hint to give the flag given
    with pytest.raises(ViaError) as refused:
        read_via_slices(PROJECT, "sax", "cine", images_dir=tmp_path / "elsewhere")
    assert "is not there" in str(refused.value) and "--via-images" not in str(refused.value)
    many = {f"image{n}.png{n}": {"filename": f"image{n}.png", "size": n, "regions": [], "file_attributes": {}}
            for n in range(MAX_REPORTED_ERRORS + 5)}
    (tmp_path / "many.json").write_text(json.dumps(many))
    with pytest.raises(ViaError) as refused:
        read_via_slices(tmp_path / "many.json", "sax", "cine")
    lines = str(refused.value).splitlines()
    assert len(lines) == 1 + MAX_REPORTED_ERRORS + 1 and lines[-1] == "... and 5 more"
    assert "(give the images' folder with --via-images)" in lines[1]
