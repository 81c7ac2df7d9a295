"""Exporting a run trained on VIA labels into a models folder of one's own: what the manifest then lists, which
model is chosen by default, the threshold of fully labelled images, and a manifest entry that cannot be used."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from conftest import FIXTURES
from mrd_stream_helpers import export_throwaway_model

from cmr_landmark.config import COARSE_GRID, DEFAULT_PROBABILITY_THRESHOLD, FINE_GRID_BY_VIEW
from cmr_landmark.evaluation import main_export
from cmr_landmark.export import export_cascade
from cmr_landmark.model_store import ModelError, find_model, read_manifest
from cmr_landmark.network import LandmarkCascade, UNet
from cmr_landmark.training import main_train

PROJECT = FIXTURES / "via" / "sax_project.json"


@pytest.fixture(scope="module")
def fully_labelled_run(tmp_path_factory):
    """A one-epoch run on the fixture's two images with all three landmarks (no image without a landmark)."""
    folder = tmp_path_factory.mktemp("fully_labelled")
    for png in PROJECT.parent.glob("*.png"):
        shutil.copy(png, folder)
    project = json.loads(PROJECT.read_text())
    project["_via_img_metadata"] = {key: entry for key, entry in project["_via_img_metadata"].items()
                                    if entry["regions"]}
    labels = folder / "labelled.json"
    labels.write_text(json.dumps(project))
    run = folder / "run"
    assert main_train(["--view", "sax", "--via", str(labels), "--via-val", str(labels), "--epochs", "1",
                       "--batch-size", "2", "--widths", "4,8", "--out", str(run)]) == 0
    return run


def _names(models) -> list[str]:
    return [entry["name"] for entry in json.loads((models / "manifest.json").read_text())["models"]]


def test_export_appends_and_keeps_the_default_of_a_view_and_sequence(fully_labelled_run, tmp_path, capsys) -> None:
    models = tmp_path / "models"
    export_throwaway_model(models, "sax", "cine")  # "throwaway_sax_cine" sorts after "aaa_mine"
    capsys.readouterr()
    assert main_export(["--run", str(fully_labelled_run), "--name", "aaa_mine", "--models-dir", str(models)]) == 0
    assert _names(models) == ["throwaway_sax_cine", "aaa_mine"]  # was sorted: aaa_mine became the default
    assert find_model("sax", "cine", folder=models).name == "throwaway_sax_cine"
    assert "detect and the gadget choose throwaway_sax_cine for sax/cine" in capsys.readouterr().out
    export_throwaway_model(models, "sax", "cine")  # a replaced model keeps its place
    assert _names(models) == ["throwaway_sax_cine", "aaa_mine"]


def test_export_says_when_the_new_model_becomes_the_default(fully_labelled_run, tmp_path, capsys) -> None:
    models = tmp_path / "models"
    export_throwaway_model(models, "sax", "any")  # what sax/cine detection used until now
    capsys.readouterr()
    assert main_export(["--run", str(fully_labelled_run), "--name", "mine", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert "detect and the gadget now choose mine for sax/cine from" in out
    assert "not throwaway_sax_any (trained for sax/any)" in out


def test_auto_threshold_without_absent_landmarks_is_the_default_and_said(fully_labelled_run, tmp_path,
                                                                         capsys) -> None:
    models = tmp_path / "models"
    assert main_export(["--run", str(fully_labelled_run), "--name", "mine", "--models-dir", str(models)]) == 0
    (entry,) = json.loads((models / "manifest.json").read_text())["models"]
    assert entry["probability_threshold"] == DEFAULT_PROBABILITY_THRESHOLD  # Youden's J gave a meaningless 0.25
    assert "no training image lacks a landmark" in capsys.readouterr().err
    card = (models / "mine.md").read_text()
    assert f"threshold** {DEFAULT_PROBABILITY_THRESHOLD:.3f}: the default" in card
    assert "every one of the 2 training images has all landmarks labelled" in card
    assert main_export(["--run", str(fully_labelled_run), "--name", "given", "--models-dir", str(models),
                        "--threshold", "0.6"]) == 0  # a given threshold is taken as given
    assert json.loads((models / "manifest.json").read_text())["models"][1]["probability_threshold"] == 0.6


def test_a_run_of_an_unknown_sequence_is_not_exported(fully_labelled_run, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(fully_labelled_run, run)
    recorded = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**recorded, "sequence": "bssfp"}))  # a train that did not check it
    models = tmp_path / "models"
    with pytest.raises(SystemExit) as stop:
        main_export(["--run", str(run), "--name", "mine", "--models-dir", str(models)])
    assert stop.value.code == 2 and "names view/sequence sax/bssfp; a model is for a view of sax, lax and a " \
                                    "sequence of cine, lge, t1, any" in capsys.readouterr().err
    assert not models.exists()  # nothing written
    tiny = LandmarkCascade(UNet(3, widths=(4, 8)), UNet(3, widths=(4, 8)))
    with pytest.raises(ValueError, match="not sax/bssfp"):  # nor through the Python API
        export_cascade(tiny, "mine", "sax", "bssfp", COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.3, models)
    assert not models.exists()


def test_a_manifest_entry_that_cannot_be_used_is_skipped_and_named(tmp_path, caplog) -> None:
    models = tmp_path / "models"
    for view in ("sax", "lax"):
        export_throwaway_model(models, view, "cine")
    manifest = json.loads((models / "manifest.json").read_text())
    manifest["models"].insert(0, {**manifest["models"][0], "name": "sax_bssfp", "sequence": "bssfp"})
    manifest["models"][2]["mirror_average"] = "yes"  # the one long-axis model, damaged
    (models / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="cmr_landmark.model_store"):
        assert [spec.name for spec in read_manifest(models)] == ["throwaway_sax_cine"]  # was a ModelError for all
    assert (f"{models / 'manifest.json'}: skipped manifest entry 'sax_bssfp': unknown view/sequence sax/bssfp"
            in caplog.text)
    assert find_model("sax", "cine", folder=models).name == "throwaway_sax_cine"
    with pytest.raises(ModelError, match="no model for view='lax' sequence='cine' in the manifest .*manifest.json; "
                                         "skipped as unusable: .*'throwaway_lax_cine': mirror_average must be"):
        find_model("lax", "cine", folder=models)


def test_a_missing_model_names_the_folder_the_variable_chose(tmp_path, monkeypatch) -> None:
    export_throwaway_model(tmp_path / "my_models", "sax", "cine")
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(tmp_path / "my_models"))
    with pytest.raises(ModelError, match=r"no model for view='lax' sequence='cine' in the manifest "
                                         rf"{tmp_path / 'my_models' / 'manifest.json'} \(the models folder "
                                         r"CMR_LANDMARK_MODELS names\)"):
        find_model("lax", "cine")
    with pytest.raises(ModelError, match=r"model 'lax_cine' is not in the manifest .* \(the models folder "
                                         r"CMR_LANDMARK_MODELS names\) \(have: throwaway_sax_cine\)"):
        find_model("lax", "cine", name="lax_cine")
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="no model manifest at .*nowhere/manifest.json .*CMR_LANDMARK_MODELS"):
        find_model("sax", "cine")

