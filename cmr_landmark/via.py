"""Landmark labels drawn with the VGG Image Annotator (VIA 2.x) as training/evaluation slices.

Label each image in VIA with **point** regions and a region attribute (default ``landmark``) whose value names
the landmark: ``A-RVI``, ``P-RVI``, ``C-LV`` (short axis) or ``MV-1``, ``MV-2``, ``APEX`` (long axis). An image
with no points is a labelled image without landmarks (e.g. a slice beyond the heart), which teaches the model
not to report any there. Save the project (``Project -> Save``) or export the annotations as JSON; both work.

Pixel spacing: DICOM images carry it (PixelSpacing); for PNG/JPEG give it per image as a file attribute
``pixel_spacing_mm`` (``"1.4"`` or ``"1.4,1.4"``, row then column) or for all images with ``--pixel-spacing-mm``
(``read_via_slices(pixel_spacing_mm=...)``). The images are looked for beside the VIA file unless ``--via-images``
(``images_dir``) names their folder. The errors name those command-line flags: the commands are how users meet them.
An optional file attribute ``patient`` groups images of one subject (default: the file name).
VIA stores a point as ``cx`` (column) and ``cy`` (row) in pixels of the image as shown, which are the
(row, col) = (cy, cx) pixel coordinates of the image array read here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import LANDMARKS_BY_VIEW
from .datasets import Slice


class ViaError(ValueError):
    """The VIA file or one of its images cannot be used as labelled slices."""


def _read_image(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Grey-level image and, for DICOM, its pixel spacing (row, col) in mm."""
    if not path.is_file():
        raise ViaError(f"image {path} named in the VIA file is not there (give the images' folder with --via-images)")
    if path.suffix.lower() in (".dcm", ".ima", ""):
        import pydicom

        try:
            dataset = pydicom.dcmread(path)
            image = dataset.pixel_array.astype(np.float32)
            spacing = tuple(float(v) for v in dataset.PixelSpacing)
        except Exception as error:  # pydicom raises many types for files that are not DICOM images
            raise ViaError(f"{path} could not be read as a DICOM image: {error}") from error
        return image, (spacing[0], spacing[1])
    import matplotlib.image

    try:
        image = np.asarray(matplotlib.image.imread(path), dtype=np.float32)
    except (OSError, ValueError, SyntaxError) as error:
        raise ViaError(f"{path} could not be read as an image: {error}") from error
    if image.ndim == 3:  # RGB(A) export of a grey image: average the colour channels, drop alpha
        image = image[..., :3].mean(axis=2)
    return image, None


def _spacing(text: str, where: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError as error:
        raise ViaError(f"{where}: pixel_spacing_mm {text!r} is not a number or a pair of numbers") from error
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) <= 0:
        raise ViaError(f"{where}: pixel_spacing_mm must be one or two positive numbers, got {text!r}")
    return values[0], values[1]


def read_via_slices(
    via_json: Path,
    view: str,
    sequence: str,
    images_dir: Path | None = None,
    pixel_spacing_mm: tuple[float, float] | None = None,
    attribute: str = "landmark",
) -> list[Slice]:
    """One labelled :class:`~cmr_landmark.datasets.Slice` per image of a VIA project or annotation export."""
    if pixel_spacing_mm is not None and not (
            len(pixel_spacing_mm) == 2 and all(np.isfinite(v) and v > 0 for v in pixel_spacing_mm)):
        raise ViaError(f"--pixel-spacing-mm must be two positive numbers (row, column), got {list(pixel_spacing_mm)}")
    via_json = Path(via_json)
    try:
        project = json.loads(via_json.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ViaError(f"{via_json} is not a readable VIA JSON file: {error}") from error
    metadata = project.get("_via_img_metadata", project) if isinstance(project, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, dict) and "filename" in v for v in metadata.values()):
        raise ViaError(f"{via_json} holds no VIA image metadata (entries with 'filename' and 'regions')")
    names = LANDMARKS_BY_VIEW[view]
    lookup = {name.lower(): k for k, name in enumerate(names)}
    images_dir = Path(images_dir) if images_dir is not None else via_json.parent
    slices = []
    for index, entry in enumerate(metadata.values()):
        where = f"{via_json.name}: {entry['filename']}"
        image, dicom_spacing = _read_image(images_dir / entry["filename"])
        file_attributes = entry.get("file_attributes") or {}
        if dicom_spacing is not None:
            spacing = dicom_spacing
        elif file_attributes.get("pixel_spacing_mm"):
            spacing = _spacing(file_attributes["pixel_spacing_mm"], where)
        elif pixel_spacing_mm is not None:
            spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
        else:
            raise ViaError(f"{where}: no pixel spacing (give the image a pixel_spacing_mm file attribute in VIA, or "
                           "all images one with --pixel-spacing-mm ROW COL)")
        landmarks = np.full((len(names), 2), np.nan)
        for region in entry.get("regions") or []:
            shape = region.get("shape_attributes", {})
            label = str((region.get("region_attributes") or {}).get(attribute, "")).strip()
            if shape.get("name") != "point":
                raise ViaError(f"{where}: landmarks must be point regions, found a {shape.get('name')!r}")
            if label.lower() not in lookup:
                raise ViaError(f"{where}: region attribute {attribute!r} = {label!r} is none of {', '.join(names)}")
            k = lookup[label.lower()]
            if np.isfinite(landmarks[k, 0]):
                raise ViaError(f"{where}: {names[k]} is marked twice")
            row, col = float(shape["cy"]), float(shape["cx"])
            if not (0 <= row < image.shape[0] and 0 <= col < image.shape[1]):
                raise ViaError(f"{where}: {names[k]} at (row {row}, col {col}) is outside the {image.shape} image")
            landmarks[k] = (row, col)
        slices.append(Slice(
            image=image, pixel_spacing_mm=spacing, landmarks_rc=landmarks, view=view, sequence=sequence,
            dataset="via", patient=str(file_attributes.get("patient") or Path(entry["filename"]).stem),
            slice_index=index, phase=0,
        ))
    if not slices:
        raise ViaError(f"{via_json} lists no images")
    return slices
