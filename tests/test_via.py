"""VIA (VGG Image Annotator) projects as labelled slices: points, spacing, absent landmarks, bad files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import FIXTURES

from cmr_landmark.evaluation import main_evaluate
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


def test_evaluate_command_on_a_via_project_with_a_run_folder(tmp_path) -> None:
    import torch

    from cmr_landmark.network import UNet

    run = tmp_path / "run"
    run.mkdir()
    for stage in ("coarse", "fine"):  # an untrained run folder: the command's plumbing, not accuracy
        torch.save({"model": UNet(3, (8, 16)).state_dict(), "widths": [8, 16]}, run / f"{stage}_best.pt")
    arguments = ["--view", "sax", "--via", str(PROJECT), "--run", str(run), "--out", str(tmp_path / "ev")]
    assert main_evaluate(arguments) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["slices"] == 3 and set(summary["landmarks"]) == {"A-RVI", "P-RVI", "C-LV"}
