"""Freeze shipped model files again with today's ``export.freeze_cascade``, their weights bit for bit as they were.

Freezing decides more than the weights: the layout of the frozen weight constants decides the layout oneDNN runs
every convolution in (``export.freeze_cascade``). Files frozen before 2026-12-05 hold NCHW weights; the same
weights frozen channels-last run both stages about 1.8x faster in bf16 and 2x in fp32 (docs/benchmarks.md). The
weights come back from the file itself (``unfreeze.folded_cascade``), every convolution's weight and bias is checked
equal to the file's, the embedded training state is carried over byte for byte, and the manifest entry gets the new
sha256 (nothing else in it changes: the points are the same to float rounding, docs/benchmarks.md, "The model files
frozen again"). A file already frozen channels-last is left alone, so a second run changes nothing.

    python -m cmr_landmark.refreeze                     # every landmark model in config.models_dir()
    python -m cmr_landmark.refreeze --models DIR sax_cine

The file is replaced first and its manifest entry after: if the process dies in between, the model no longer loads
(its sha256 fails) and this command refuses it too; restore the file (``git checkout models/``) and run it again.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from .config import models_dir
from .export import TRAINING_STATE_FILE, embedded_training_state, freeze_cascade, write_model_file
from .model_store import ModelError, edit_manifest, load_torchscript, read_manifest, sha256_of
from .training import STAGES
from .unfreeze import folded_cascade, graph_convolutions


def is_frozen_channels_last(frozen: torch.jit.ScriptModule) -> bool:
    """Whether every convolution weight of both stages of a frozen cascade that has a layout (more than one input
    channel and a kernel wider than 1 pixel: the others are both layouts at once) is channels-last."""
    return all(weight.is_contiguous(memory_format=torch.channels_last)
               for stage in STAGES for weight, _ in graph_convolutions(frozen, stage)
               if weight.shape[1] > 1 and weight.shape[-1] > 1)


def refreeze_model(folder: Path, name: str) -> str | None:
    """Freeze landmark model ``name`` of ``folder``/manifest.json again (see the module's text); its new sha256, or
    None when the file was already frozen channels-last (then nothing is written).

    Raises ``model_store.ModelError`` when the manifest lists no such model or its file is missing or fails its
    sha256, ``ValueError`` when the weights would not come back bit for bit (e.g. an ensemble of several cascades);
    the file and the manifest are then left as they were."""
    spec = next((s for s in read_manifest(folder) if s.name == name), None)
    if spec is None:
        raise ModelError(f"{Path(folder) / 'manifest.json'} lists no model {name!r}")
    original = load_torchscript(spec, torch.device("cpu"))  # checks the file against its sha256 first
    if is_frozen_channels_last(original):
        return None
    try:
        frozen = freeze_cascade(folded_cascade(spec.file))
    except ValueError as error:
        raise ValueError(f"{spec.file}: {error}") from error
    for stage in STAGES:
        before = [t for pair in graph_convolutions(original, stage) for t in pair]
        after = [t for pair in graph_convolutions(frozen, stage) for t in pair]
        if len(before) != len(after) or not all(torch.equal(a, b) for a, b in zip(before, after, strict=True)):
            raise ValueError(f"{spec.file}: the {stage} stage's weights do not come back bit for bit; left as it was")
    training_state = embedded_training_state(spec.file)
    write_model_file(frozen, spec.file, {TRAINING_STATE_FILE: training_state} if training_state else {})
    sha256 = sha256_of(spec.file)

    def set_sha256(manifest: dict) -> None:
        next(entry for entry in manifest["models"] if entry["name"] == name)["sha256"] = sha256

    edit_manifest(folder, set_sha256)
    return sha256


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="models to freeze again (default: every landmark model listed)")
    parser.add_argument("--models", type=Path, default=None, help="folder with manifest.json (default: models/)")
    args = parser.parse_args(argv)
    folder = args.models or models_dir()
    failed = 0
    for name in args.names or [spec.name for spec in read_manifest(folder)]:
        try:  # one model's problem does not stop the others
            sha256 = refreeze_model(folder, name)
        except (ModelError, ValueError) as error:
            print(f"{name}: not frozen again: {error}")
            failed += 1
            continue
        print(f"{name}: " + ("already channels-last, left as it is" if sha256 is None else f"sha256 {sha256}"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
