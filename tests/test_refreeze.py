"""Model files frozen again with channels-last weights, the weights bit for bit as they were (cmr_landmark.refreeze)."""

import json
from pathlib import Path

import pytest
import torch
from test_unfreeze import smooth_images, trained_looking_cascade

from cmr_landmark import refreeze
from cmr_landmark.config import COARSE_GRID, FINE_GRID_BY_VIEW, shipped_models_dir
from cmr_landmark.export import (
    TRAINING_STATE_FILE,
    embedded_training_state,
    export_cascade,
    freeze_cascade,
    write_model_file,
)
from cmr_landmark.model_store import ModelError, edit_manifest, read_manifest, sha256_of
from cmr_landmark.refreeze import is_frozen_channels_last, main, refreeze_model
from cmr_landmark.training import STAGES
from cmr_landmark.unfreeze import folded_cascade, graph_convolutions

NAMES = ("first", "second")
ORIENTATION_ENTRY = {"file": "sax_orientation.pt", "sha256": "0" * 64}


def frozen_as_before_2026_12_05(folder: Path) -> None:
    """Two exported models with training state whose files are then frozen NCHW, as every file was before
    2026-12-05 (manifest sha256 updated to match), beside an orientation-network entry, as models/ has."""
    for seed, name in enumerate(NAMES):
        path = export_cascade(trained_looking_cascade(seed), name, "lax", "cine", COARSE_GRID,
                              FINE_GRID_BY_VIEW["lax"], 0.3, folder, embed_training_state=True)
        state = embedded_training_state(path)
        write_model_file(freeze_cascade(folded_cascade(path), memory_format=torch.contiguous_format), path,
                         {TRAINING_STATE_FILE: state})
        sha256 = sha256_of(path)
        edit_manifest(folder, lambda manifest, name=name, sha256=sha256: next(
            entry for entry in manifest["models"] if entry["name"] == name).update(sha256=sha256))
    edit_manifest(folder, lambda manifest: manifest.update(orientation_network=ORIENTATION_ENTRY))


def manifest_sha256(folder: Path) -> dict[str, str]:
    return {spec.name: spec.sha256 for spec in read_manifest(folder)}


def test_export_freezes_the_weights_channels_last(tmp_path: Path) -> None:
    cascade = trained_looking_cascade()
    assert is_frozen_channels_last(freeze_cascade(cascade))
    assert not is_frozen_channels_last(freeze_cascade(cascade, memory_format=torch.contiguous_format))
    # the caller's cascade is not changed by freezing it
    assert cascade.fine.encoders[1][0].weight.is_contiguous()


def test_refreeze_keeps_weights_function_training_state_and_the_rest_of_the_manifest(tmp_path: Path) -> None:
    frozen_as_before_2026_12_05(tmp_path)
    path, other = tmp_path / "first.pt", tmp_path / "second.pt"
    before, other_bytes = torch.jit.load(str(path)), other.read_bytes()
    assert not is_frozen_channels_last(before)
    state_before, sha_before = embedded_training_state(path), manifest_sha256(tmp_path)

    sha256 = refreeze_model(tmp_path, "first")

    after = torch.jit.load(str(path))
    assert is_frozen_channels_last(after)
    assert manifest_sha256(tmp_path) == {**sha_before, "first": sha256} and sha256 == sha256_of(path)
    assert sha256 != sha_before["first"]
    assert json.loads((tmp_path / "manifest.json").read_text())["orientation_network"] == ORIENTATION_ENTRY
    assert other.read_bytes() == other_bytes
    assert embedded_training_state(path) == state_before and state_before
    for stage in STAGES:
        for (w_before, b_before), (w_after, b_after) in zip(graph_convolutions(before, stage),
                                                            graph_convolutions(after, stage), strict=True):
            assert torch.equal(w_before, w_after) and torch.equal(b_before, b_after)
    images = smooth_images(4, 64)
    with torch.inference_mode():
        for method in ("coarse_probabilities", "fine_probabilities"):
            torch.testing.assert_close(getattr(after, method)(images), getattr(before, method)(images),
                                       atol=1e-4, rtol=0)

    # a second run finds it channels-last and writes nothing
    content = path.read_bytes()
    assert refreeze_model(tmp_path, "first") is None
    assert path.read_bytes() == content and manifest_sha256(tmp_path)["first"] == sha256


def test_refreeze_refuses_weights_that_do_not_come_back_bit_for_bit(tmp_path: Path, monkeypatch) -> None:
    frozen_as_before_2026_12_05(tmp_path)
    path = tmp_path / "first.pt"
    content, manifest = path.read_bytes(), (tmp_path / "manifest.json").read_text()

    def one_weight_off(file: Path):
        cascade = folded_cascade(file)
        with torch.no_grad():
            cascade.fine.encoders[1][0].weight[0, 0, 0, 0] += 1e-6
        return cascade

    monkeypatch.setattr(refreeze, "folded_cascade", one_weight_off)
    with pytest.raises(ValueError, match="fine stage's weights do not come back bit for bit"):
        refreeze_model(tmp_path, "first")
    assert path.read_bytes() == content and (tmp_path / "manifest.json").read_text() == manifest


def test_refreeze_refuses_a_file_that_fails_its_sha256_and_an_unknown_name(tmp_path: Path) -> None:
    frozen_as_before_2026_12_05(tmp_path)
    edit_manifest(tmp_path, lambda manifest: next(
        entry for entry in manifest["models"] if entry["name"] == "first").update(sha256="0" * 64))
    path = tmp_path / "first.pt"
    content = path.read_bytes()
    with pytest.raises(ModelError, match="sha256"):
        refreeze_model(tmp_path, "first")
    assert path.read_bytes() == content
    with pytest.raises(ModelError, match="no model 'other'"):
        refreeze_model(tmp_path, "other")


def test_refreeze_command_does_every_model_and_goes_on_past_a_missing_file(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    frozen_as_before_2026_12_05(tmp_path)
    (tmp_path / "first.pt").unlink()
    assert main(["--models", str(tmp_path)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("first: not frozen again: ") and "missing" in printed[0]
    assert printed[1] == f"second: sha256 {manifest_sha256(tmp_path)['second']}"
    assert is_frozen_channels_last(torch.jit.load(str(tmp_path / "second.pt")))
    assert main(["--models", str(tmp_path), "second"]) == 0
    assert capsys.readouterr().out == "second: already channels-last, left as it is\n"


@pytest.mark.parametrize("spec", read_manifest(shipped_models_dir()), ids=lambda spec: spec.name)
def test_shipped_models_are_frozen_channels_last(spec) -> None:
    # about 2x faster than the same weights frozen NCHW (docs/benchmarks.md): a model exported or copied in some
    # other way would quietly give that back
    assert is_frozen_channels_last(torch.jit.load(str(spec.file)))
