"""Freeze shipped model files again with today's ``export.freeze_cascade``, their weights bit for bit as they were.

Freezing decides more than the weights: the layout of the frozen weight constants decides the layout oneDNN runs
every convolution in (``export.freeze_cascade``). Files frozen before 2026-12-05 hold NCHW weights; the same
weights frozen channels-last run the models 1.5-1.65x faster (docs/benchmarks.md). The weights come back from the
file itself (``unfreeze.folded_cascade``), every convolution's weight and bias is checked equal to the file's, the
embedded training state is carried over byte for byte, and the manifest entry gets the new sha256 (nothing else in
it changes: the points are the same to float rounding, which tests/test_refreeze.py bounds).

    python -m cmr_landmark.refreeze                     # every landmark model in config.models_dir()
    python -m cmr_landmark.refreeze --models DIR sax_cine
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from .config import models_dir
from .export import TRAINING_STATE_FILE, embedded_training_state, freeze_cascade, write_model_file
from .model_store import edit_manifest, load_torchscript, read_manifest, sha256_of
from .training import STAGES
from .unfreeze import folded_cascade, graph_convolutions


def refreeze_model(folder: Path, name: str) -> str:
    """Freeze landmark model ``name`` of ``folder``/manifest.json again (see the module's text); its new sha256.

    Raises ``model_store.ModelError`` when the file fails its manifest's sha256, ``ValueError`` when the weights
    would not come back bit for bit (e.g. a file that is not a cascade of two ``network.UNet``)."""
    spec = next((s for s in read_manifest(folder) if s.name == name), None)
    if spec is None:
        raise ValueError(f"{folder / 'manifest.json'} lists no model {name!r}")
    original = load_torchscript(spec, torch.device("cpu"))  # checks the file against its sha256 first
    frozen = freeze_cascade(folded_cascade(spec.file))
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
    for name in args.names or [spec.name for spec in read_manifest(folder)]:
        print(f"{name}: sha256 {refreeze_model(folder, name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
