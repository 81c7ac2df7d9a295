"""DICOM reader: one file or a folder of one series, grouped into slices (by position along the slice normal)
and phases (by TriggerTime, then InstanceNumber), via pydicom."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from ..geometry import GeometryError, image_axes
from .image_series import ISMRMRD_SUFFIXES, NIFTI_SUFFIXES, ImageReadError, ImageSeries, SliceGeometry

log = logging.getLogger(__name__)

# Slices closer than this along the normal are the same slice (positions are written to ~1e-3 mm precision).
SAME_SLICE_TOLERANCE_MM = 0.01


def _read_file(path: Path) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError):
        return None


GEOMETRY_TAGS = ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")


def _plane(dataset: pydicom.Dataset, path: Path) -> tuple[SliceGeometry, np.ndarray, tuple[float, float]]:
    missing = [tag for tag in GEOMETRY_TAGS if tag not in dataset]
    if missing:
        raise ImageReadError(f"{path}: DICOM image without {' and '.join(missing)}: its pixel size and place in "
                             "the patient are unknown")
    orientation = np.asarray(dataset.ImageOrientationPatient, dtype=np.float64)
    position = np.asarray(dataset.ImagePositionPatient, dtype=np.float64)
    spacing = np.asarray(dataset.PixelSpacing, dtype=np.float64)  # (between rows, between columns)
    if (orientation.shape != (6,) or position.shape != (3,) or spacing.shape != (2,)
            or not np.all(np.isfinite(np.concatenate([orientation, position, spacing]))) or np.any(spacing <= 0)):
        raise ImageReadError(f"{path}: malformed ImageOrientationPatient/ImagePositionPatient/PixelSpacing")
    along_row, along_column = orientation[:3], orientation[3:]  # directions of increasing column, increasing row
    try:  # unit length (within 1 %: writers round the cosines) and orthogonal, or the normal means nothing
        along_row, along_column = image_axes(along_row, along_column)
    except GeometryError as error:
        raise ImageReadError(f"{path}: ImageOrientationPatient {orientation.tolist()}: {error}") from error
    geometry = SliceGeometry(position, along_column * spacing[0], along_row * spacing[1])
    normal = np.cross(along_row, along_column)
    return geometry, normal / np.linalg.norm(normal), (float(spacing[0]), float(spacing[1]))


@contextlib.contextmanager
def _pydicom_quiet() -> Iterator[None]:
    """pydicom logs a decoder's failure with its traceback before raising; the raised error is reported instead."""
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        pydicom_log.setLevel(level)


def dicom_pixels(dataset: pydicom.Dataset, path: Path) -> np.ndarray:
    """One image's pixel values (modality LUT applied; MONOCHROME1, stored dark-is-high, turned the usual way)."""
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise ImageReadError(f"{path}: a colour DICOM image ({dataset.get('PhotometricInterpretation', '')}, "
                             f"{samples} samples per pixel), not an MR image; export the series in grey scale")
    try:
        with _pydicom_quiet():
            pixels = apply_modality_lut(dataset.pixel_array, dataset)
    except RuntimeError as error:
        if "missing dependencies" in str(error):  # pydicom has no decoder for this compression
            syntax = dataset.file_meta.get("TransferSyntaxUID")
            raise ImageReadError(f"{path}: pixel data compressed as {getattr(syntax, 'name', syntax)}, with no "
                                 "decoder installed: pip install -e '.[dicom]' in the repository") from error
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data ({error})") from error
    except (AttributeError, ValueError, NotImplementedError, OSError) as error:
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data ({error})") from error
    if dataset.get("PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels
    return pixels


def _without_copies(path: Path, datasets: list[tuple[Path, pydicom.Dataset]]) -> list[tuple[Path, pydicom.Dataset]]:
    """The first file of each SOPInstanceUID (a folder copied into itself, "IM1 (1).dcm"): a copy read as one more
    image of its slice would pass for another phase. Files without the UID (anonymised) are all kept."""
    seen: set[str] = set()
    kept, copies = [], []
    for file_path, dataset in datasets:
        uid = str(dataset.get("SOPInstanceUID", ""))
        if uid and uid in seen:
            copies.append(file_path)
            continue
        seen.add(uid)
        kept.append((file_path, dataset))
    if copies:
        log.warning("%s: files that repeat another file's image (the same SOPInstanceUID): %d, e.g. %s; each image is "
                    "read once", path, len(copies), copies[0])
    return kept


def read_dicom(path: Path) -> ImageSeries:
    """Read a DICOM file, or a folder holding the files of one series, into an :class:`ImageSeries` (LPS)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    datasets = [(f, d) for f in files if (d := _read_file(f)) is not None and "PixelData" in d]
    if not datasets:
        if path.is_file():  # read_series sends every file that is not NIfTI or ISMRMRD by its name here
            raise ImageReadError(f"{path}: not a DICOM image, and not NIfTI (.nii, .nii.gz) or ISMRMRD (.h5, .mrd) "
                                 "by its name")
        others = [f.name for f in files if f.name.lower().endswith(NIFTI_SUFFIXES + ISMRMRD_SUFFIXES)]
        if others:  # a folder is read as DICOM; the other formats are read one file at a time
            raise ImageReadError(f"{path}: no DICOM images in this folder, but {len(others)} NIfTI/ISMRMRD files "
                                 f"(e.g. {others[0]}); give one file")
        raise ImageReadError(f"{path}: no DICOM images in this folder")
    datasets = _without_copies(path, datasets)
    multi_frame = next((f for f, d in datasets if int(d.get("NumberOfFrames", 1) or 1) > 1), None)
    if multi_frame is not None:  # enhanced MR keeps each frame's geometry in functional groups, not read here
        raise ImageReadError(f"{multi_frame}: a multi-frame (enhanced) DICOM image, which is not read; export the "
                             "series as single-frame images (classic MR Image Storage)")
    # the series UID, and where anonymisation removed it, patient, study and series number
    series: dict[tuple[str, ...], list[pydicom.Dataset]] = {}
    for _, dataset in datasets:
        key = tuple(str(dataset.get(tag, "")) for tag in ("SeriesInstanceUID", "PatientID", "StudyInstanceUID",
                                                          "SeriesNumber"))
        series.setdefault(key, []).append(dataset)
    if len(series) > 1:
        listed = "; ".join(f"series {members[0].get('SeriesNumber', '?')} "
                           f"'{members[0].get('SeriesDescription', '')}' ({len(members)} images)"
                           for members in list(series.values())[:5])
        raise ImageReadError(f"{path}: holds {len(series)} DICOM series ({listed}{'; ...' if len(series) > 5 else ''})"
                             "; give the folder or file of one series")
    first_path, first = datasets[0]
    _, normal, spacing = _plane(first, first_path)
    # Group by position along the slice normal; phases of a slice sort by trigger time, then instance number.
    slices: dict[float, list[tuple[float, int, Path, pydicom.Dataset]]] = {}
    for file_path, dataset in datasets:
        geometry, file_normal, file_spacing = _plane(dataset, file_path)
        if not np.allclose(file_spacing, spacing, rtol=1e-3):
            raise ImageReadError(f"{file_path}: pixel spacing {file_spacing} differs from {spacing} of the series")
        if abs(float(file_normal @ normal)) < 1.0 - 1e-3:
            raise ImageReadError(f"{file_path}: its plane is not parallel to the series' first image; give the "
                                 "folder or file of one series")
        location = float(geometry.origin_mm @ normal)
        key = next((k for k in slices if abs(k - location) < SAME_SLICE_TOLERANCE_MM), location)
        trigger = float(dataset.get("TriggerTime", 0.0) or 0.0)
        slices.setdefault(key, []).append((trigger, int(dataset.get("InstanceNumber", 0) or 0), file_path, dataset))
    phase_counts = {len(members) for members in slices.values()}
    if len(phase_counts) != 1:
        raise ImageReadError(f"{path}: slices have different numbers of phases {sorted(phase_counts)}")
    stack, geometries, triggers = [], [], []
    for location in sorted(slices):
        members = sorted(slices[location], key=lambda m: (m[0], m[1]))
        pixels = [dicom_pixels(d, file_path) for _, _, file_path, d in members]
        shapes = {p.shape for p in pixels}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ImageReadError(f"{path}: expected 2-D images of one size, got shapes {sorted(shapes)}")
        stack.append(np.stack(pixels))
        geometries.append(_plane(members[0][3], members[0][2])[0])
        triggers.append([m[0] for m in members])
    if len({s.shape for s in stack}) != 1:
        raise ImageReadError(f"{path}: slices have different image sizes")
    return ImageSeries(
        images=np.stack(stack),
        pixel_spacing_mm=spacing,
        slice_geometry=tuple(geometries),
        frame="LPS",
        voxel_order="col_row",
        source=str(path),
        slice_thickness_mm=float(first.get("SliceThickness", 0.0) or 0.0),
        trigger_times_ms=np.asarray(triggers, dtype=np.float64),
    )
