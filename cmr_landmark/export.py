"""Export a trained cascade as a frozen TorchScript file and register it in the manifest (sha256 and all)."""

from __future__ import annotations

import copy
import io
from dataclasses import asdict
from pathlib import Path

import torch

from .config import FINE_CENTROID_RADIUS_MM, LANDMARKS_BY_VIEW, MODEL_SEQUENCES, VIEWS, StageGrid
from .model_store import edit_manifest, sha256_of
from .network import LandmarkCascade
from .output_paths import written_beside

MAX_MODEL_BYTES = 10 * 1024 * 1024
TRAINING_STATE_FILE = "training_state.pt"


def _training_state_bytes(cascade: LandmarkCascade) -> bytes:
    state = {
        stage: {key: value.half() if value.is_floating_point() else value for key, value in unet.state_dict().items()}
        for stage, unet in (("coarse", cascade.coarse), ("fine", cascade.fine))
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def embedded_training_state(path: Path) -> bytes:
    """The training-state bytes a model file carries (empty when it was exported without them)."""
    extra_files = {TRAINING_STATE_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)
    return extra_files[TRAINING_STATE_FILE]


def has_training_state(path: Path) -> bool:
    """Whether an exported model file carries its unfrozen weights (``embed_training_state``)."""
    return bool(embedded_training_state(path))


def load_training_state(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The unfrozen ``{"coarse": state_dict, "fine": state_dict}`` embedded in an exported model file."""
    embedded = embedded_training_state(path)
    if not embedded:
        raise ValueError(f"{path} was exported without its training state; initialise from a run folder, or from "
                         f"the weights `python -m cmr_landmark.unfreeze {path} --out RUN` recovers (long axis)")
    state = torch.load(io.BytesIO(embedded), map_location="cpu", weights_only=True)
    return {stage: {key: value.float() if value.is_floating_point() else value for key, value in weights.items()}
            for stage, weights in state.items()}


def freeze_cascade(cascade: LandmarkCascade,
                   memory_format: torch.memory_format = torch.channels_last) -> torch.jit.ScriptModule:
    """Script and freeze a copy of ``cascade`` for inference, keeping its two exported methods (BatchNorm folds into
    the convolutions here).

    The weights are frozen channels-last because they, not the input, decide the layout oneDNN runs every layer in:
    a 1-channel image is the same tensor in either layout, so only the weights can ask for channels-last. Measured
    (docs/benchmarks.md, options table): both stages about 1.8x faster in bf16 and 2x in fp32 than with the NCHW
    weights of the files frozen before 2026-12-05. ``memory_format`` is there for that comparison."""
    cascade = copy.deepcopy(cascade).to(memory_format=memory_format)  # Module.to works in place: not the caller's
    return torch.jit.freeze(torch.jit.script(cascade), preserved_attrs=["coarse_probabilities", "fine_probabilities"])


def write_model_file(frozen: torch.jit.ScriptModule, path: Path, extra_files: dict[str, bytes]) -> None:
    """Save ``frozen`` (with ``extra_files``) as ``path``, refused over ``MAX_MODEL_BYTES``. Written beside and
    checked first, so a refused or failed save leaves the file in place (and its manifest entry) as they were."""
    with written_beside(path) as partial:
        torch.jit.save(frozen, str(partial), _extra_files=extra_files)
        size = partial.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ValueError(f"{path} would be {size} bytes, over the {MAX_MODEL_BYTES} byte limit")


def export_cascade(
    cascade: LandmarkCascade,
    name: str,
    view: str,
    sequence: str,
    coarse_grid: StageGrid,
    fine_grid: StageGrid,
    probability_threshold: float,
    folder: Path,
    card: str = "",
    extra: dict | None = None,
    embed_training_state: bool = False,
    mirror_average: bool = False,
    mirror_pooling: str = "mean",
    fine_search_radius_mm: float | None = None,
    fine_centroid_radius_mm: float | None = FINE_CENTROID_RADIUS_MM,
) -> Path:
    """Script + freeze ``cascade`` into ``folder/name.pt`` and add its entry to ``folder/manifest.json``: appended,
    or in the place of the entry of the same name, so that the model detect and the gadget choose by default for a
    view and sequence (the first one listed) stays the one it was.

    ``card`` (markdown) is written to ``folder/name.md``; ``extra`` (e.g. measured accuracy) goes into the entry.
    ``embed_training_state`` stores the unfrozen weights (fp16) in the file too, so a user can fine-tune the
    shipped model (:func:`load_training_state`); freezing folds BatchNorm into the convolutions for good.
    ``mirror_average`` tells the Detector to average the fine stage over the crop and its mirror (the threshold
    and the measured accuracy must have been obtained that way), pooled as ``mirror_pooling`` says
    (``config.MIRROR_POOLINGS``). ``fine_search_radius_mm`` (None: off) makes the
    fine stage look for each landmark only near the coarse stage's point (``Detector``).
    ``fine_centroid_radius_mm`` (None: the peak) decodes each fine point as its map's centre of mass within that
    radius (``config.FINE_CENTROID_RADIUS_MM``).
    """
    if view not in VIEWS or sequence not in MODEL_SEQUENCES:  # the manifest could not list it: refused before writing
        raise ValueError(f"a model is for a view of {', '.join(VIEWS)} and a sequence of {', '.join(MODEL_SEQUENCES)}, "
                         f"not {view}/{sequence}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cascade = cascade.float().eval()
    extra_files = {TRAINING_STATE_FILE: _training_state_bytes(cascade)} if embed_training_state else {}
    frozen = freeze_cascade(cascade)
    path = folder / f"{name}.pt"
    write_model_file(frozen, path, extra_files)
    if card:
        (folder / f"{name}.md").write_text(card)
    entry = {
        "name": name,
        "file": path.name,
        "sha256": sha256_of(path),
        "view": view,
        "sequence": sequence,
        "landmarks": list(LANDMARKS_BY_VIEW[view]),
        "coarse_grid": asdict(coarse_grid),
        "fine_grid": asdict(fine_grid),
        "probability_threshold": probability_threshold,
        "mirror_average": mirror_average,
        "mirror_pooling": mirror_pooling,
        "fine_search_radius_mm": fine_search_radius_mm,
        "fine_centroid_radius_mm": fine_centroid_radius_mm,
        "card": f"{name}.md" if card else "",
        **(extra or {}),
    }

    def add_entry(manifest: dict) -> None:
        names = [model.get("name") if isinstance(model, dict) else None for model in manifest.setdefault("models", [])]
        place = names.index(name) if name in names else len(names)  # the first entry of that name's, else the end
        manifest["models"] = [model for model, named in zip(manifest["models"], names, strict=True) if named != name]
        manifest["models"].insert(place, entry)

    edit_manifest(folder, add_entry)
    return path
