"""The model manifest (models/manifest.json) and verified loading of TorchScript model files.

A model file is loaded only when its sha256 matches the manifest: nothing else is trusted, and nothing from the
input data is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from .config import LANDMARKS_BY_VIEW, MIRROR_POOLINGS, MODEL_SEQUENCES, VIEWS, StageGrid, models_dir
from .display_orientation import OrientationAveraged
from .output_paths import write_json_atomically

log = logging.getLogger("cmr_landmark.model_store")
T = TypeVar("T")


class ModelError(RuntimeError):
    """A model is missing, corrupt, not in the manifest, or does not fit the request."""


def _manifest_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"manifest entry {name!r}: mirror_average must be true or false, got {value!r}")
    return value


def _manifest_pooling(entry: dict) -> str:
    value = entry.get("mirror_pooling", "mean")
    if value not in MIRROR_POOLINGS:
        raise ModelError(f"manifest entry {entry['name']!r}: mirror_pooling must be one of {MIRROR_POOLINGS}, "
                         f"got {value!r}")
    return value


def _manifest_radius(entry: dict, key: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ModelError(f"manifest entry {entry['name']!r}: {key} must be a positive number of mm or null, "
                         f"got {value!r}")
    return float(value)


def _manifest_threshold(entry: dict) -> float:
    value = entry["probability_threshold"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ModelError(f"manifest entry {entry['name']!r}: probability_threshold must be a probability in [0, 1], "
                         f"got {value!r}")
    return float(value)


def _manifest_patients(entry: dict) -> tuple[str, ...]:
    patients = entry.get("training_patients", [])
    if not isinstance(patients, list) or not all(isinstance(patient, str) for patient in patients):
        raise ModelError(f"manifest entry {entry.get('name')!r}: training_patients must be a list of "
                         f"\"set/patient\" names, got {patients!r}")
    return tuple(patients)


def _manifest_direction(entry: dict, key: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 360.0:
        raise ModelError(f"manifest entry {entry['name']!r}: {key} must be degrees in [0, 360) or null, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry: what a model file is and how to feed it."""

    name: str
    file: Path
    sha256: str
    view: str
    sequence: str
    landmarks: tuple[str, ...]
    coarse_grid: StageGrid
    fine_grid: StageGrid
    probability_threshold: float
    mirror_average: bool = False  # run the fine stage on the mirrored crop too and average (Detector)
    mirror_pooling: str = "mean"  # how the two passes are averaged: config.MIRROR_POOLINGS
    fine_search_radius_mm: float | None = None  # fine stage looks near the coarse landmarks only (Detector)
    fine_centroid_radius_mm: float | None = None  # fine points: centre of mass within this radius; None: the peak
    # short axis: the direction (degrees, display_orientation.rv_direction_deg) from the LV centre to the RV
    # insertion points the model saw most in training. The gadget and detect turn a slice's standard display toward
    # it (geometry.model_display_orientation), and detect a NIfTI's anatomy (display_orientation). None: neither.
    display_rv_direction_deg: float | None = None
    # long axis: the direction (degrees, detector.long_axis_direction_deg) from apex to mitral midpoint in the real
    # frames the model was trained on; the Detector turns each image to it for a second pass. None: one pass.
    display_long_axis_deg: float | None = None
    # "set/patient" of the public sets' subjects the model was trained on outside the train split (lax_cine: the one
    # labelled long-axis subject): evaluate calls its figures on them training figures
    training_patients: tuple[str, ...] = ()

    @staticmethod
    def from_manifest_entry(entry: dict, folder: Path) -> ModelSpec:
        try:
            view, sequence = entry["view"], entry["sequence"]
            if view not in VIEWS or sequence not in MODEL_SEQUENCES:
                raise ModelError(f"manifest entry {entry.get('name')!r}: unknown view/sequence {view}/{sequence}")
            landmarks = tuple(entry["landmarks"])
            if landmarks != LANDMARKS_BY_VIEW[view]:
                raise ModelError(f"manifest entry {entry['name']!r}: landmarks {landmarks} do not match view {view}")
            return ModelSpec(
                name=entry["name"],
                file=folder / entry["file"],
                sha256=entry["sha256"],
                view=view,
                sequence=sequence,
                landmarks=landmarks,
                coarse_grid=StageGrid(**entry["coarse_grid"]),
                fine_grid=StageGrid(**entry["fine_grid"]),
                probability_threshold=_manifest_threshold(entry),
                mirror_average=_manifest_bool(entry.get("mirror_average", False), entry["name"]),
                mirror_pooling=_manifest_pooling(entry),
                fine_search_radius_mm=_manifest_radius(entry, "fine_search_radius_mm"),
                fine_centroid_radius_mm=_manifest_radius(entry, "fine_centroid_radius_mm"),
                display_rv_direction_deg=_manifest_direction(entry, "display_rv_direction_deg"),
                display_long_axis_deg=_manifest_direction(entry, "display_long_axis_deg"),
                training_patients=_manifest_patients(entry),
            )
        except (KeyError, TypeError) as error:
            raise ModelError(f"malformed manifest entry {entry!r}: {error}") from error


def _manifest_json(folder: Path | None) -> tuple[Path, dict]:
    """(the models folder, its manifest.json parsed); default folder :func:`config.models_dir`."""
    defaulted = folder is None
    folder = models_dir() if defaulted else Path(folder)
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ModelError(f"no model manifest at {_which_manifest(path, defaulted)}") from error
    except json.JSONDecodeError as error:
        raise ModelError(f"model manifest {path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models", []), list):
        raise ModelError(f"model manifest {path} is not a manifest (an object with a list of \"models\")")
    return folder, manifest


def json_safe(value: object) -> object:
    """``value`` with NaN and infinities as None and numpy numbers as Python ones: strict JSON (jq, JavaScript, a
    scanner's parser) has no NaN, which a landmark never detected leaves in its mean distance."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def edit_manifest(folder: Path, change: Callable[[dict], T]) -> T:
    """Read ``folder``/manifest.json (``{"models": []}`` when there is none yet), let ``change`` edit it in place,
    write it back; ``change``'s result. The one place exports and scripts rewrite the manifest."""
    path = Path(folder) / "manifest.json"
    manifest = _manifest_json(Path(folder))[1] if path.exists() else {"models": []}  # a broken one: said, not edited
    result = change(manifest)
    write_json_atomically(path, json_safe(manifest))  # json_safe: strict JSON, no NaN
    return result


def _manifest_specs(folder: Path | None) -> tuple[Path, list[ModelSpec], list[str]]:
    """(the manifest's path, its usable entries, why each other entry cannot be used). An entry that cannot be used
    (an unknown view or sequence, a malformed field) is passed over: one bad entry must not make a models folder,
    and the gadget reading it, unusable."""
    folder, manifest = _manifest_json(folder)
    specs, skipped = [], []
    for entry in manifest.get("models", []):
        try:
            specs.append(ModelSpec.from_manifest_entry(entry, folder))
        except ModelError as error:
            skipped.append(str(error))
    return folder / "manifest.json", specs, skipped


def read_manifest(folder: Path | None = None) -> list[ModelSpec]:
    """All usable models listed in ``folder``/manifest.json (default :func:`config.models_dir`); an entry that cannot
    be used is skipped with a logged warning naming it and the file."""
    path, specs, skipped = _manifest_specs(folder)
    _warn_skipped(path, skipped)
    return specs


# The warnings said so far in this scan (the gadget's connection) or command: a model is looked up once per slice.
_said: ContextVar[set[str] | None] = ContextVar("model_store_warnings_said", default=None)


def warnings_said_afresh() -> None:
    """Start a new scan's record of warnings said (the gadget calls it per connection; a passive server serves
    many, each in its own thread and context), so that each scan's log says each warning once."""
    _said.set(set())


def warn_once_per_scan(message: str, logger: logging.Logger = log) -> None:
    """``message`` as a warning on ``logger``, unless this scan (or command) has said it already."""
    said = _said.get()
    if said is None:  # a command, or a thread that did not start a record: its own from here on
        said = set()
        _said.set(said)
    if message not in said:
        said.add(message)
        logger.warning("%s", message)


def _warn_skipped(path: Path, skipped: list[str]) -> None:
    for reason in skipped:
        warn_once_per_scan(f"{path}: skipped {reason}")


def model_names(folder: Path) -> set[str]:
    """The names of the entries ``folder``/manifest.json lists, usable or not; none where it has no manifest yet
    (an export's new folder). What the commands that write models check before they replace one."""
    if not (Path(folder) / "manifest.json").exists():
        return set()
    _, manifest = _manifest_json(folder)
    return {entry.get("name") for entry in manifest.get("models", []) if isinstance(entry, dict)} - {None}


def _default_model(specs: list[ModelSpec], view: str, sequence: str) -> ModelSpec | None:
    """The first of ``specs`` for (view, sequence), else for (view, 'any'), else for (view, 'cine')."""
    for wanted in dict.fromkeys((sequence, "any", "cine")):
        for spec in specs:
            if spec.view == view and spec.sequence == wanted:
                return spec
    return None


def default_model(view: str, sequence: str, folder: Path | None = None) -> ModelSpec | None:
    """The model :func:`find_model` chooses for (view, sequence) when no name is given, or None; without its
    warnings (what export reports before and after it adds a model)."""
    return _default_model(_manifest_specs(folder)[1], view, sequence)


def _which_manifest(path: Path, defaulted: bool) -> str:
    """The manifest an error is about: its path, and the variable that chose it where one did (``defaulted``: no
    folder was given, :func:`config.models_dir` chose it)."""
    if defaulted and os.environ.get("CMR_LANDMARK_MODELS"):  # the folder the user's variable names
        return f"{path} (the models folder CMR_LANDMARK_MODELS names)"
    return str(path)


def _skipped_note(skipped: list[str]) -> str:
    return f"; skipped as unusable: {'; '.join(skipped)}" if skipped else ""


def find_model(view: str, sequence: str, name: str | None = None, folder: Path | None = None) -> ModelSpec:
    """The manifest entry by ``name``, else the one for (view, sequence), else the view's contrast-agnostic one
    (sequence 'any'), else the view's cine model: the first one listed of each.

    The last step serves the long axis, which has no contrast-agnostic model: the shipped ``lax_cine`` was trained
    on synthetic images of mixed contrast (a fifth LGE-like, docs/lax.md) besides two real cine frames, and cine is
    what a long-axis series almost always is. ``sequence`` 'any' means the contrast is unknown."""
    if not name and (view not in VIEWS or sequence not in MODEL_SEQUENCES):  # a typo would fall back silently
        raise ModelError(f"no model for view={view!r} sequence={sequence!r}: the view is one of {', '.join(VIEWS)}, "
                         f"the sequence one of {', '.join(MODEL_SEQUENCES)}")
    path, specs, skipped = _manifest_specs(folder)
    _warn_skipped(path, skipped)
    if name:
        for spec in specs:
            if spec.name == name:
                return spec
        raise ModelError(f"model {name!r} is not in the manifest {_which_manifest(path, folder is None)} (have: "
                         f"{', '.join(s.name for s in specs)}){_skipped_note(skipped)}")
    spec = _default_model(specs, view, sequence)
    if spec is None:
        raise ModelError(f"no model for view={view!r} sequence={sequence!r} in the manifest "
                         f"{_which_manifest(path, folder is None)}{_skipped_note(skipped)}")
    if spec.sequence != sequence:
        # 'any' included: the long axis has no contrast-agnostic model, and its cine model is not one
        warn_once_per_scan(f"no {view} model for sequence {sequence!r}: using {spec.name} "
                           f"(trained for {spec.sequence!r})")
    return spec


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_torchscript(spec: ModelSpec, device: torch.device) -> torch.jit.ScriptModule:
    """Load the TorchScript file of ``spec`` after checking its sha256 against the manifest."""
    return _load_checked_torchscript(spec.file, spec.sha256, device)


def load_orientation_network(folder: Path | None = None) -> torch.nn.Module:
    """The short-axis orientation network (``display_orientation``) listed under ``orientation_network`` in
    ``folder``/manifest.json (default :func:`config.models_dir`), on the CPU (it is small and runs once per file),
    its answer averaged over the 8 ways an image can be stored (``display_orientation.OrientationAveraged``)."""
    folder, manifest = _manifest_json(folder)
    try:
        entry = manifest["orientation_network"]
        path, sha256 = folder / entry["file"], entry["sha256"]
    except (KeyError, TypeError) as error:
        raise ModelError(f"{folder / 'manifest.json'} lists no orientation network ({error})") from error
    return OrientationAveraged(_load_checked_torchscript(path, sha256, torch.device("cpu"))).eval()


def _load_checked_torchscript(path: Path, sha256: str, device: torch.device) -> torch.jit.ScriptModule:
    if not path.is_file():
        raise ModelError(f"model file {path} is missing")
    actual = sha256_of(path)
    if actual != sha256:
        raise ModelError(f"model file {path} has sha256 {actual}, the manifest says {sha256}")
    try:
        # TorchScript is this project's deliberate model format (models/*.pt, checked against the manifest above);
        # torch 2.13 warns on every load that it is deprecated in favour of torch.export. Silence exactly that
        # warning, here only, so detect runs and gadget logs stay clean; any other warning still shows.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`?torch\.jit\.load`? is deprecated",
                                    category=DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as error:  # torch raises RuntimeError or zipfile errors for damaged archives
        raise ModelError(f"model file {path} could not be loaded: {error}") from error
    return module.eval()
