"""The public sets as 2-D training samples (one per slice and phase), their patient split, and a fast cache.

Every set stores its arrays in its own orientation. Each is brought once, here, to the standard short-axis
display (seen from the apex, anterior up, RV on the viewer's left) by a per-set turn and mirror
(``ORIENTATION_BY_DATASET``) decided by looking at the images (evidence in docs/data.md), so every cached image
has the standard handedness and the landmark rule of :mod:`cmr_landmark.landmarks` applies without a mirror flag.
Masks are converted to the standard codes {0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool}.

``phase`` is 0 for end-diastole, 1 for end-systole, 0 for LGE, and the frame number for an unlabelled cine.
``labelled`` says the mask is a real annotation: a labelled slice with all landmarks NaN is a genuine
"no landmark" image (outside the heart); an unlabelled one (M&Ms-2 LA_CINE) has unknown landmarks.

Cache format (no pickle): ``cache_dir()/slices_<dataset>.npz`` holds the images, masks and pathology maps
flattened and concatenated, plus per-slice offsets/shapes/spacings/landmarks; ``slices_<dataset>.json`` holds
the per-slice text metadata, the data folder the cache was built from and a fingerprint of its files
(:func:`data_fingerprint`): a cache of other data than the set's folder holds now is built again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from .config import cache_dir, data_root
from .geometry import orient_image, oriented_spacing_mm
from .landmarks import STANDARD_LABELS, LabelCodes, derive_lax_landmarks, derive_sax_landmarks
from .output_paths import write_json_atomically, written_beside

log = logging.getLogger("cmr_landmark.datasets")

SPLITS_PATH = Path(__file__).resolve().parent / "splits.json"
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 20210601
CACHE_FORMAT_VERSION = 2  # 2: RV contact within 1.5 pixels, not 3 mm (landmarks.py)


# Decided by looking (docs/data.md): ACDC arrays have anterior up but the liver on the viewer's right and the RV
# upper right (viewed from the base), so their columns are flipped. MS-CMRSeg and MyoPS (same centre) have the
# standard handedness with the chest wall up-right and the RV up; a quarter turn counter-clockwise puts the RV
# on the left. M&Ms-2 arrays come from DICOM in the scanner's display and are already standard.
# Each as ``geometry.orient_image``'s (quarter_turns, mirror), the one encoding of a display used everywhere.
ORIENTATION_BY_DATASET: dict[str, tuple[int, bool]] = {
    "acdc": (0, True),
    "mscmrseg_lge": (1, False),
    "myops": (1, False),
    "mnms2": (0, False),
}
DATASETS: tuple[str, ...] = tuple(ORIENTATION_BY_DATASET)

# The public sets' image file names (their labels end in _gt / _manual / _gd and are not images to detect on), so that
# ``cmr-landmark detect`` can show a NIfTI of one of them to the model in the standard display: their headers carry no
# trustworthy orientation, and each set's was decided by looking (ORIENTATION_BY_DATASET, docs/data.md).
PUBLIC_SET_FILE_NAMES: dict[str, re.Pattern] = {
    "acdc": re.compile(r"^patient\d{3}_(frame\d{2}|4d)\.nii(\.gz)?$"),
    "mscmrseg_lge": re.compile(r"^subject\d+_(DE|C0|T2)\.nii(\.gz)?$"),
    "myops": re.compile(r"^Case\d+_(C0|LGE|T2|DE)\.nii(\.gz)?$"),
    "mnms2": re.compile(r"^\d{3}_(SA|LA)_(ED|ES|CINE)\.nii(\.gz)?$"),
}


def public_set_of_file(path: Path | str) -> str | None:
    """The public set whose image file naming ``path`` follows (ACDC patient001_frame01.nii.gz, ...), or None."""
    name = Path(path).name
    return next((dataset for dataset, pattern in PUBLIC_SET_FILE_NAMES.items() if pattern.match(name)), None)

# Label codes of each set's masks (data README).
ACDC_LABELS = LabelCodes(lv_blood=(3,), lv_myocardium=(2,), rv_blood=(1,))
MSCMR_LABELS = LabelCodes(lv_blood=(3,), lv_myocardium=(2,), rv_blood=(1,))
MYOPS_LABELS = LabelCodes(lv_blood=(500,), lv_myocardium=(200, 1220, 2221), rv_blood=(600,))
MNMS2_LABELS = LabelCodes(lv_blood=(1,), lv_myocardium=(2,), rv_blood=(3,))
# MyoPS pathology inside the myocardium: 1 oedema, 2 scar (0 elsewhere).
MYOPS_PATHOLOGY = {1220: 1, 2221: 2}


@dataclass
class Slice:
    """One 2-D image in the standard orientation with its derived landmarks (NaN rows where absent)."""

    image: np.ndarray  # float32 (H, W)
    pixel_spacing_mm: tuple[float, float]  # (row, col)
    landmarks_rc: np.ndarray  # (3, 2) float, order of config.LANDMARKS_BY_VIEW[view]
    view: str  # 'sax' | 'lax'
    sequence: str  # 'cine' | 'lge' | 't1'
    dataset: str
    patient: str
    slice_index: int
    phase: int
    labelled: bool = True
    mask: np.ndarray | None = None  # uint8 (H, W) in standard codes
    pathology: np.ndarray | None = None  # uint8 (H, W): 1 oedema, 2 scar (MyoPS only)
    source_image: np.ndarray | None = None  # a synthetic copy's real image (the teacher's input in distillation)

    @property
    def has_all_landmarks(self) -> bool:
        return bool(np.all(np.isfinite(self.landmarks_rc)))

    @property
    def is_no_landmark_image(self) -> bool:
        """A labelled image with no landmark at all (a slice outside the heart)."""
        return self.labelled and not np.any(np.isfinite(self.landmarks_rc))


def stack_indices(slices: Sequence[Slice]) -> list[list[int]]:
    """The indices of each stack's slices: one patient's slices of one view, phase and sequence, stored and decided
    alike.

    A slice position seen a second time in a group starts a second stack: MyoPS's co-registered cine and LGE
    slices share patient, phase and slice positions, and a synthetic set made of both (every one ``sequence`` t1,
    or a clinical contrast) would otherwise hold each of them twice. The n-th copy of each position goes to the
    n-th stack, which is right where the copies cover the same positions (MyoPS's share one label map)."""
    stacks: dict[tuple, list[int]] = {}
    seen: dict[tuple, int] = {}
    for index, s in enumerate(slices):
        group = (s.dataset, s.patient, s.view, s.phase, s.sequence)
        repeat = seen.get((*group, s.slice_index), 0)
        seen[(*group, s.slice_index)] = repeat + 1
        stacks.setdefault((*group, repeat), []).append(index)
    return list(stacks.values())


def _to_standard_codes(mask: np.ndarray, codes: LabelCodes) -> np.ndarray:
    standard = np.zeros(mask.shape, dtype=np.uint8)
    for values, code in ((codes.lv_blood, 1), (codes.lv_myocardium, 2), (codes.rv_blood, 3)):
        standard[np.isin(mask, values)] = code
    return standard


def _load_volume(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A NIfTI volume as an array (x, y, ...) and the in-plane spacing of its first two axes in mm."""
    if not path.exists():
        raise FileNotFoundError(f"missing data file {path}")
    image = nib.load(str(path))
    zooms = image.header.get_zooms()
    return np.asanyarray(image.dataobj), (float(zooms[0]), float(zooms[1]))


def _stack_slices(
    dataset: str,
    patient: str,
    image_path: Path,
    mask_path: Path | None,
    codes: LabelCodes,
    view: str,
    sequence: str,
    phase: int,
    pathology_codes: dict[int, int] | None = None,
) -> Iterator[Slice]:
    """Every z slice of one labelled (or, without ``mask_path``, unlabelled) 3-D stack."""
    orientation = ORIENTATION_BY_DATASET[dataset]
    volume, spacing = _load_volume(image_path)
    raw_mask = _load_volume(mask_path)[0] if mask_path is not None else None
    if raw_mask is not None and raw_mask.shape != volume.shape:
        raise ValueError(f"{mask_path} has shape {raw_mask.shape}, image {image_path} has {volume.shape}")
    spacing = oriented_spacing_mm(spacing, orientation[0])
    derive = derive_sax_landmarks if view == "sax" else derive_lax_landmarks
    for z in range(volume.shape[2]):
        image = orient_image(np.asarray(volume[:, :, z], dtype=np.float32), *orientation)
        if raw_mask is None:
            yield Slice(image, spacing, np.full((3, 2), np.nan), view, sequence, dataset, patient, z, phase,
                        labelled=False)
            continue
        layer = np.rint(np.asarray(raw_mask[:, :, z])).astype(np.int32)
        mask = orient_image(_to_standard_codes(layer, codes), *orientation)
        pathology = None
        if pathology_codes is not None:
            pathology = np.zeros(layer.shape, dtype=np.uint8)
            for value, code in pathology_codes.items():
                pathology[layer == value] = code
            pathology = orient_image(pathology, *orientation)
        landmarks = derive(mask, STANDARD_LABELS, spacing)
        yield Slice(image, spacing, landmarks, view, sequence, dataset, patient, z, phase, True, mask, pathology)


def _acdc_frames(folder: Path) -> tuple[str, str]:
    """The (end-diastole, end-systole) frame names of one ACDC patient: ``ED:`` and ``ES:`` of its Info.cfg (the
    challenge's layout: patientNNN_frame01 and e.g. patientNNN_frame12), else frame01 and frame02 (the
    repackaging in ../shared/data, whose Info.cfg says "frame01: end-diastole", "frame02: end-systole")."""
    info_path = folder / "Info.cfg"
    info = info_path.read_text() if info_path.is_file() else ""
    numbers = [re.search(rf"^{phase}:\s*(\d+)\s*$", info, flags=re.MULTILINE) for phase in ("ED", "ES")]
    if all(numbers):
        return tuple(f"frame{int(number.group(1)):02d}" for number in numbers)
    return "frame01", "frame02"


def _patient_folders(root: Path, dataset: str, pattern: str) -> list[Path]:
    """The subject folders of a set (files beside them are not subjects: said when that is all there is)."""
    folders = sorted(p for p in (root / dataset).glob(pattern) if p.is_dir())
    if not folders and any((root / dataset).glob("*.nii*")):
        raise FileNotFoundError(f"{root / dataset} holds NIfTI files but no {pattern} folders: each subject's files "
                                f"go in a folder of their own, e.g. {dataset}/{pattern.replace('*', 'NNN')}/ "
                                "(docs/data.md)")
    return folders


def _acdc(root: Path) -> Iterator[Slice]:
    for folder in _patient_folders(root, "acdc", "patient*"):
        for frame, phase in zip(_acdc_frames(folder), (0, 1), strict=True):
            stem = folder / f"{folder.name}_{frame}"
            yield from _stack_slices("acdc", folder.name, Path(f"{stem}.nii.gz"), Path(f"{stem}_gt.nii.gz"),
                                     ACDC_LABELS, "sax", "cine", phase)


def _mscmrseg_lge(root: Path) -> Iterator[Slice]:
    folders = sorted(_patient_folders(root, "mscmrseg_lge", "subject*"),
                     key=lambda p: int(p.name.removeprefix("subject")))
    for folder in folders:
        yield from _stack_slices("mscmrseg_lge", folder.name, folder / f"{folder.name}_DE.nii.gz",
                                 folder / f"{folder.name}_DE_manual.nii.gz", MSCMR_LABELS, "sax", "lge", 0)


def _myops(root: Path) -> Iterator[Slice]:
    for folder in _patient_folders(root, "myops", "Case*"):
        for suffix, sequence in (("C0", "cine"), ("LGE", "lge")):
            yield from _stack_slices("myops", folder.name, folder / f"{folder.name}_{suffix}.nii.gz",
                                     folder / f"{folder.name}_gd.nii.gz", MYOPS_LABELS, "sax", sequence, 0,
                                     MYOPS_PATHOLOGY)


def _mnms2(root: Path) -> Iterator[Slice]:
    for folder in sorted((root / "mnms2").iterdir()):
        if not folder.is_dir():
            continue
        patient = folder.name
        for axis, view in (("SA", "sax"), ("LA", "lax")):
            for phase_name, phase in (("ED", 0), ("ES", 1)):
                stem = folder / f"{patient}_{axis}_{phase_name}"
                yield from _stack_slices("mnms2", patient, Path(f"{stem}.nii.gz"), Path(f"{stem}_gt.nii.gz"),
                                         MNMS2_LABELS, view, "cine", phase)
        cine_path = folder / f"{patient}_LA_CINE.nii.gz"
        if cine_path.exists():
            cine, spacing = _load_volume(cine_path)
            orientation = ORIENTATION_BY_DATASET["mnms2"]
            cine = cine.reshape(cine.shape[0], cine.shape[1], -1)  # (x, y, 1, frames) -> (x, y, frames)
            for frame in range(cine.shape[2]):
                image = orient_image(np.asarray(cine[:, :, frame], dtype=np.float32), *orientation)
                yield Slice(image, oriented_spacing_mm(spacing, orientation[0]), np.full((3, 2), np.nan), "lax", "cine",
                            "mnms2", patient, 0, frame, labelled=False)


BUILDERS: dict[str, Callable[[Path], Iterator[Slice]]] = {
    "acdc": _acdc,
    "mscmrseg_lge": _mscmrseg_lge,
    "myops": _myops,
    "mnms2": _mnms2,
}


def iter_slices(dataset: str, root: Path | None = None) -> Iterator[Slice]:
    """Read a set straight from the public files (slow; :func:`load_slices` reads the cache)."""
    if dataset not in BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    root = data_root() if root is None else root
    if not (root / dataset).is_dir():
        raise FileNotFoundError(f"data set folder {root / dataset} not found (set CMR_LANDMARK_DATA)")
    return BUILDERS[dataset](root)


# --- split --------------------------------------------------------------------------------------------------


def _acdc_group(root: Path, patient: str) -> str:
    info = (root / "acdc" / patient / "Info.cfg").read_text()
    match = re.search(r"^Group:\s*(\S+)", info, flags=re.MULTILINE)
    return match.group(1) if match else "unknown"


def make_splits(root: Path | None = None) -> dict[str, dict[str, list[str]]]:
    """A deterministic patient-level train/val split of every set (ACDC stratified by pathology group).

    M&Ms-2 has one subject; it goes to 'val' (the long-axis engineer validates on it).
    """
    root = data_root() if root is None else root
    rng = np.random.default_rng(SPLIT_SEED)
    patients = {
        "acdc": [p.name for p in _patient_folders(root, "acdc", "patient*")],
        "mscmrseg_lge": sorted((p.name for p in _patient_folders(root, "mscmrseg_lge", "subject*")),
                               key=lambda name: int(name.removeprefix("subject"))),
        "myops": [p.name for p in _patient_folders(root, "myops", "Case*")],
    }
    splits: dict[str, dict[str, list[str]]] = {}
    for dataset, names in patients.items():
        strata: dict[str, list[str]] = {}
        for name in names:
            strata.setdefault(_acdc_group(root, name) if dataset == "acdc" else "all", []).append(name)
        validation: list[str] = []
        for group in sorted(strata):
            members = list(rng.permutation(strata[group]))
            validation += members[: int(round(VALIDATION_FRACTION * len(members)))]
        splits[dataset] = {"train": sorted(set(names) - set(validation)), "val": sorted(validation)}
    splits["mnms2"] = {"train": [], "val": sorted(p.name for p in (root / "mnms2").iterdir() if p.is_dir())}
    return splits


def read_splits() -> dict[str, dict[str, list[str]]]:
    """The committed split (cmr_landmark/splits.json)."""
    return json.loads(SPLITS_PATH.read_text())


def dataset_names(text: str) -> list[str]:
    """The set names of a comma-separated list as a user types it ("acdc, myops"): stripped, each once, in order."""
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


# --- cache --------------------------------------------------------------------------------------------------


def cache_paths(dataset: str, folder: Path | None = None) -> tuple[Path, Path]:
    folder = cache_dir() if folder is None else folder
    return folder / f"slices_{dataset}.npz", folder / f"slices_{dataset}.json"


def _storage_dtype(images: Sequence[np.ndarray]) -> np.dtype:
    """uint16 when every image holds whole numbers 0..65535 (all sets here), else float32."""
    for image in images:
        if image.min() < 0 or image.max() > 65535 or not np.array_equal(image, np.rint(image)):
            return np.dtype(np.float32)
    return np.dtype(np.uint16)


def data_fingerprint(dataset: str, root: Path) -> str:
    """sha256 of the relative path, size and modification time of every file under ``root``/``dataset`` (the files
    the builder reads, and any beside them): a stat per file, and an added, removed, replaced or edited file
    changes it."""
    folder = root / dataset
    digest = hashlib.sha256()
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories.sort()  # the same order on every file system
        for name in sorted(files):
            path = Path(directory) / name
            stat = path.stat()
            digest.update(f"{path.relative_to(folder).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def build_cache(dataset: str, force: bool = False, folder: Path | None = None, root: Path | None = None) -> Path:
    """Write the cache of one set unless it is current (or ``force``); returns the .npz path
    (:func:`_current_cache`)."""
    return _current_cache(dataset, force, folder, root)[0]


def _current_cache(dataset: str, force: bool, folder: Path | None, root: Path | None) -> tuple[Path, dict]:
    """The .npz path of the cache of one set and its metadata, the cache written first unless it is current (or
    ``force``).

    Current: of this format and, where the data is checked, built from the files ``root``/``dataset`` (default
    :func:`config.data_root`) holds now (:func:`data_fingerprint`). The data is checked when ``root`` is given, and
    for the commands' cache (neither ``folder`` nor ``root`` given), so that ``CMR_LANDMARK_DATA`` pointing at other
    data builds the cache of that data. A ``folder`` given without ``root`` is the caller's cache of data it chose
    (built from data_root() only when missing or of an older format). Where the set's folder is missing, a cache of
    this format serves as it is (CI and users without the data)."""
    npz_path, json_path = cache_paths(dataset, folder)
    check_data = root is not None or folder is None
    root = data_root() if root is None else root
    data_folder = root / dataset
    recorded = _current_metadata(npz_path, json_path)
    # taken before the files are read: a file changed while they are makes the next call build the cache again
    fingerprint = None
    if not force and recorded is not None:
        if not check_data:
            return npz_path, recorded
        if not data_folder.is_dir():
            built_from = recorded.get("data_folder")
            if built_from and Path(built_from) != data_folder.resolve():
                log.warning("%s not found: using the cache %s built from %s", data_folder, json_path, built_from)
            return npz_path, recorded
        fingerprint = data_fingerprint(dataset, root)
        if recorded.get("data_fingerprint") == fingerprint:
            return npz_path, recorded
    elif data_folder.is_dir():
        fingerprint = data_fingerprint(dataset, root)
    try:
        slices = list(iter_slices(dataset, root))
    except FileNotFoundError as error:
        if json_path.exists() and recorded is None:  # an old cache, and no data to derive it again from
            raise FileNotFoundError(
                f"{json_path} is cache format {_cache_format(json_path)}, this version needs {CACHE_FORMAT_VERSION} "
                f"(its labels are derived by a newer rule) and deriving it again needs the data: {error}") from error
        raise
    if not slices:
        raise ValueError(f"data set {dataset!r} has no images under {root}")
    images = [s.image for s in slices]
    shapes = np.array([s.image.shape for s in slices], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])])

    def flat_or_zeros(layers: list[np.ndarray | None]) -> np.ndarray:
        # Slices without a mask (or pathology map) keep their place in the flat array as zeros.
        return np.concatenate([(np.zeros(s.image.shape, np.uint8) if layer is None else layer).ravel()
                               for s, layer in zip(slices, layers, strict=True)])

    arrays = {
        "images": np.concatenate([i.ravel() for i in images]).astype(_storage_dtype(images)),
        "masks": flat_or_zeros([s.mask for s in slices]),
        "pathology": flat_or_zeros([s.pathology for s in slices]),
        "offsets": offsets,
        "shapes": shapes,
        "pixel_spacing_mm": np.array([s.pixel_spacing_mm for s in slices], dtype=np.float64),
        "landmarks_rc": np.stack([s.landmarks_rc for s in slices]),
    }
    metadata = {
        "format_version": CACHE_FORMAT_VERSION,
        "dataset": dataset,
        "data_folder": str(data_folder.resolve()),
        "data_fingerprint": fingerprint,
        "slices": [
            {"view": s.view, "sequence": s.sequence, "patient": s.patient, "slice_index": s.slice_index,
             "phase": s.phase, "labelled": s.labelled, "has_mask": s.mask is not None,
             "has_pathology": s.pathology is not None}
            for s in slices
        ],
    }
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    # a reader never sees half a cache, nor two processes deriving the same stale cache at once each other's half
    with written_beside(npz_path) as partial, partial.open("wb") as file:  # a file: np.savez names no .npz on it
        np.savez(file, **arrays)
    write_json_atomically(json_path, metadata)
    return npz_path, metadata


def _cache_format(json_path: Path) -> int | None:
    return json.loads(json_path.read_text()).get("format_version")


def _current_metadata(npz_path: Path, json_path: Path) -> dict | None:
    """The cache's metadata, read once, where the cache is there and of this format; else None."""
    if not (npz_path.exists() and json_path.exists()):
        return None
    metadata = json.loads(json_path.read_text())
    return metadata if metadata.get("format_version") == CACHE_FORMAT_VERSION else None


def load_slices(dataset: str, split: str | None = None, folder: Path | None = None,
                root: Path | None = None) -> list[Slice]:
    """All cached slices of a set (building the cache first where :func:`build_cache` finds it not current, from
    ``root``), optionally of one split only. Patients in neither split of splits.json (a subject of your own added
    to a set's folder) belong to no split: said as a warning."""
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be 'train', 'val' or None, got {split!r}")
    # A missing cache is built; one of an older format holds labels derived by an older rule: derived again (seconds).
    npz_path, metadata = _current_cache(dataset, False, folder, root)
    wanted = None
    if split is not None:
        splits = read_splits()[dataset]
        wanted = set(splits[split])
        if unsplit := sorted({info["patient"] for info in metadata["slices"]} - set(splits["train"])
                             - set(splits["val"])):
            log.warning("%s: %d patient(s) are in neither split of %s, so not among the %r slices: %s%s (add them to a "
                        "split there to use them)", dataset, len(unsplit), SPLITS_PATH, split,
                        ", ".join(unsplit[:10]), " ..." if len(unsplit) > 10 else "")
    with np.load(npz_path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    slices = []
    for index, info in enumerate(metadata["slices"]):
        if wanted is not None and info["patient"] not in wanted:
            continue
        start, stop = arrays["offsets"][index], arrays["offsets"][index + 1]
        shape = tuple(int(n) for n in arrays["shapes"][index])
        slices.append(Slice(
            image=arrays["images"][start:stop].reshape(shape).astype(np.float32),
            pixel_spacing_mm=(float(arrays["pixel_spacing_mm"][index, 0]), float(arrays["pixel_spacing_mm"][index, 1])),
            landmarks_rc=arrays["landmarks_rc"][index].copy(),
            view=info["view"], sequence=info["sequence"], dataset=dataset, patient=info["patient"],
            slice_index=info["slice_index"], phase=info["phase"], labelled=info["labelled"],
            mask=arrays["masks"][start:stop].reshape(shape) if info["has_mask"] else None,
            pathology=arrays["pathology"][start:stop].reshape(shape) if info["has_pathology"] else None,
        ))
    return slices


def main_build_cache(argv: Sequence[str] | None = None) -> int:
    """``cmr-landmark build-cache [--dataset NAME|all] [--force]`` / ``python -m cmr_landmark.datasets [names]``."""
    parser = argparse.ArgumentParser(prog="cmr-landmark build-cache", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="data sets to cache (default: all)")
    parser.add_argument("--dataset", action="append", default=[],
                        help=f"one of {', '.join(DATASETS)} or 'all'; several separated by commas")
    parser.add_argument("--force", action="store_true", help="rebuild even if a cache exists")
    args = parser.parse_args(argv)
    names = dataset_names(",".join([*args.names, *args.dataset]))
    if not names or "all" in names:
        names = list(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown data set(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    for name in names:
        try:
            path = build_cache(name, force=args.force)
            slices = load_slices(name)
        except (OSError, ValueError) as error:  # the data folder or one of its files missing, or no images in it
            parser.error(str(error))
        complete = sum(s.has_all_landmarks for s in slices)
        empty = sum(s.is_no_landmark_image for s in slices)
        print(f"{name}: {len(slices)} slices, {complete} with all landmarks, {empty} no-landmark -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main_build_cache(sys.argv[1:]))
