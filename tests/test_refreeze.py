"""Model files frozen again with channels-last weights, the weights bit for bit as they were (cmr_landmark.refreeze)."""

from pathlib import Path

import pytest
import torch
from test_unfreeze import export, smooth_images, trained_looking_cascade

from cmr_landmark.config import shipped_models_dir
from cmr_landmark.export import TRAINING_STATE_FILE, embedded_training_state, freeze_cascade, write_model_file
from cmr_landmark.model_store import ModelError, edit_manifest, read_manifest, sha256_of
from cmr_landmark.refreeze import main, refreeze_model
from cmr_landmark.training import STAGES
from cmr_landmark.unfreeze import folded_cascade, graph_convolutions


def weight_layouts(frozen: torch.jit.ScriptModule) -> set[str]:
    """The layout of each convolution weight of both stages' graphs that has one (a weight with one input channel
    or a 1x1 kernel is both layouts at once)."""
    def layout(weight: torch.Tensor) -> str:
        if weight.is_contiguous(memory_format=torch.channels_last):
            return "channels_last"
        return "nchw" if weight.is_contiguous() else "other"

    return {layout(weight) for stage in STAGES for weight, _ in graph_convolutions(frozen, stage)
            if weight.shape[1] > 1 and weight.shape[-1] > 1}


def frozen_as_before_2026_12_05(tmp_path: Path) -> Path:
    """An exported model with training state whose file is then frozen NCHW, as every file was before
    2026-12-05, its manifest sha256 updated to match."""
    path = export(trained_looking_cascade(), tmp_path, embed=True)
    state = embedded_training_state(path)
    nchw = freeze_cascade(folded_cascade(path), memory_format=torch.contiguous_format)
    write_model_file(nchw, path, {TRAINING_STATE_FILE: state})
    sha256 = sha256_of(path)
    edit_manifest(tmp_path, lambda manifest: manifest["models"][0].update(sha256=sha256))
    return path


def test_export_freezes_the_weights_channels_last(tmp_path: Path) -> None:
    path = export(trained_looking_cascade(), tmp_path, embed=False)
    assert weight_layouts(torch.jit.load(str(path))) == {"channels_last"}


def test_refreeze_keeps_weights_function_and_training_state_and_updates_the_manifest(tmp_path: Path) -> None:
    path = frozen_as_before_2026_12_05(tmp_path)
    before = torch.jit.load(str(path))
    assert weight_layouts(before) == {"nchw"}
    state_before, sha_before = embedded_training_state(path), sha256_of(path)

    sha256 = refreeze_model(tmp_path, "frozen")

    after = torch.jit.load(str(path))
    assert weight_layouts(after) == {"channels_last"}
    assert sha256 == sha256_of(path) != sha_before
    assert read_manifest(tmp_path)[0].sha256 == sha256
    assert embedded_training_state(path) == state_before and state_before
    for stage in STAGES:
        for (w_before, b_before), (w_after, b_after) in zip(graph_convolutions(before, stage),
                                                            graph_convolutions(after, stage), strict=True):
            assert torch.equal(w_before, w_after) and torch.equal(b_before, b_after)
    images = smooth_images(4, 64)
    with torch.inference_mode():
        for method in ("coarse_probabilities", "fine_probabilities"):
            torch.testing.assert_close(getattr(after, method)(images), getattr(before, method)(images),
                                       atol=1e-5, rtol=0)


def test_refreeze_refuses_a_file_that_fails_its_sha256_and_leaves_it(tmp_path: Path) -> None:
    path = frozen_as_before_2026_12_05(tmp_path)
    edit_manifest(tmp_path, lambda manifest: manifest["models"][0].update(sha256="0" * 64))
    content = path.read_bytes()
    with pytest.raises(ModelError, match="sha256"):
        refreeze_model(tmp_path, "frozen")
    assert path.read_bytes() == content
    with pytest.raises(ValueError, match="no model 'other'"):
        refreeze_model(tmp_path, "other")


def test_refreeze_command_does_every_model_listed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frozen_as_before_2026_12_05(tmp_path)
    assert main(["--models", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"frozen: sha256 {read_manifest(tmp_path)[0].sha256}\n"
    assert weight_layouts(torch.jit.load(str(tmp_path / "frozen.pt"))) == {"channels_last"}


@pytest.mark.parametrize("spec", read_manifest(shipped_models_dir()), ids=lambda spec: spec.name)
def test_shipped_models_are_frozen_channels_last(spec) -> None:
    # 1.5-1.65x faster than the same weights frozen NCHW (docs/benchmarks.md): a model exported or copied in
    # some other way would quietly give that back
    assert weight_layouts(torch.jit.load(str(spec.file))) == {"channels_last"}
