"""Landmark labels drawn with the VGG Image Annotator (VIA 2.x, or a VIA 1.x project) as training/evaluation slices.

Label each image in VIA with **point** regions and a region attribute (default ``landmark``) whose value names
the landmark: ``A-RVI``, ``P-RVI``, ``C-LV`` (short axis) or ``MV-1``, ``MV-2``, ``APEX`` (long axis); a dropdown,
radio or text attribute, or a checkbox with one option ticked. An image with no points is a labelled image without
landmarks (e.g. a slice beyond the heart), which teaches the model not to report any there; so is every landmark an
image with some points lacks (a partly labelled image: said as a warning). Save the project (``Project -> Save``) or
export the annotations as JSON; both work.

Images: VIA runs in a browser, which shows PNG or JPEG, not DICOM. A DICOM file a project names (one written by a
script) is read too, recognised by its content ('DICM' at byte 128) whatever its name, e.g. a UID. The images are
looked for beside the VIA file unless ``--via-images`` (``images_dir``) names their folder. VIA records each file's
size in bytes: an image on disk of another size is not the one that was labelled (an upscaled or re-encoded copy)
and is refused; a size of 0 or less (VIA's for images added by URL), or none, is not checked.

Pixel spacing: a DICOM's PixelSpacing, else the file attribute ``pixel_spacing_mm`` (``"1.4"`` or ``"1.4,1.4"``,
row then column; a decimal point, not a comma), else ``--pixel-spacing-mm`` for all images
(``read_via_slices(pixel_spacing_mm=...)``). A spacing outside ``config.PLAUSIBLE_PIXEL_MM`` or with one side at
least ``MAX_PIXEL_ASPECT`` times the other is refused: "1,25" read as 1 by 25 mm is a decimal comma.
The errors name those command-line flags: the commands are how users meet them. An optional file attribute
``patient`` groups images of one subject (default: the file name).

Coordinates: VIA stores a point as ``cx`` (column) and ``cy`` (row) in pixels of the image measured from its
left and top *edges* (the click's offset on the canvas times the canvas scale, rounded: via-2.x.y/src/via.js,
``_via_reg_canvas_mouseup_handler``), so pixel j spans [j, j + 1) and its centre is j + 0.5. The arrays here index
pixel centres, so a point is at (row, col) = (cy - 0.5, cx - 0.5); :func:`via_point` is the inverse.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from .config import LANDMARKS_BY_VIEW, PLAUSIBLE_PIXEL_MM
from .datasets import Slice
from .output_paths import is_dicom_file

log = logging.getLogger("cmr_landmark.via")

# A pixel longer than this many times its width is a misread spacing, not an MR image: reconstructed MR pixels are
# square or nearly so, and "1,25" (a decimal comma) reads as 1 by 25 mm.
MAX_PIXEL_ASPECT = 2.0
# Image errors of one VIA file reported together (a wrong folder would otherwise list every image).
MAX_REPORTED_ERRORS = 20
# VIA's coordinates are measured from the pixel edges; array indices are pixel centres.
EDGE_TO_CENTRE_PX = 0.5


class ViaError(ValueError):
    """The VIA file or one of its images cannot be used as labelled slices."""


def via_point(row: float, col: float) -> dict[str, object]:
    """The VIA 2 point region shape (``shape_attributes``) of array position (row, col): what
    :func:`read_via_slices` reads back as (row, col)."""
    return {"name": "point", "cx": col + EDGE_TO_CENTRE_PX, "cy": row + EDGE_TO_CENTRE_PX}


def _read_image(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Grey-level 2-D image and, for a DICOM with PixelSpacing, its pixel spacing (row, col) in mm."""
    try:
        is_dicom = is_dicom_file(path)
    except OSError as error:
        raise ViaError(f"{path} could not be read: {error}") from error
    if is_dicom:
        import pydicom

        from .io.dicom import dicom_pixels
        from .io.image_series import ImageReadError

        try:
            dataset = pydicom.dcmread(path, force=True)
        except Exception as error:  # pydicom raises many types for files that are not DICOM images
            raise ViaError(f"{path} could not be read as a DICOM image: {error}") from error
        try:  # the pixels as detect reads them (modality LUT, MONOCHROME1, colour refused, decoder named)
            image = np.asarray(dicom_pixels(dataset, path), dtype=np.float32)
        except ImageReadError as error:
            raise ViaError(str(error)) from error
        # a DICOM exported without PixelSpacing: the file attribute or --pixel-spacing-mm gives it
        spacing = tuple(float(v) for v in dataset.PixelSpacing) if "PixelSpacing" in dataset else None
    else:
        import matplotlib.image

        try:
            image = np.asarray(matplotlib.image.imread(path), dtype=np.float32)
        except (OSError, ValueError, SyntaxError) as error:
            raise ViaError(f"{path} could not be read as an image: {error}") from error
        if image.ndim == 3:  # RGB(A) export of a grey image: average the colour channels, drop alpha
            image = image[..., :3].mean(axis=2)
        spacing = None
    if image.ndim != 2:
        raise ViaError(f"{path} holds a {image.ndim}-D image of shape {image.shape}, not one 2-D image")
    return image, spacing


def _spacing_problem(values: list[float]) -> str | None:
    """Why (row, col) values in mm are no pixel size of an MR image; None when they are one."""
    low, high = PLAUSIBLE_PIXEL_MM
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        return "must be two positive numbers (row, column)"
    if not all(low <= v <= high for v in values):
        return f"is not a pixel size an MR image has ({low:g}-{high:g} mm)"
    if max(values) / min(values) >= MAX_PIXEL_ASPECT:
        return f"gives pixels {max(values) / min(values):.3g} times longer than wide, which MR images do not have"
    return None


def _spacing(text: object) -> tuple[float, float]:
    """The ``pixel_spacing_mm`` file attribute, "1.4" or "1.4,1.4" (row, column)."""
    comma_hint = " (a decimal comma? write 1.25, or 1.25,1.25 for row and column)" if "," in str(text) else ""
    try:
        values = [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError as error:
        raise ViaError(f"pixel_spacing_mm {text!r} is not a number or a pair of numbers{comma_hint}") from error
    if len(values) not in (1, 2):
        raise ViaError(f"pixel_spacing_mm must be one or two positive numbers, got {text!r}")
    if len(values) == 1:
        values *= 2
    if problem := _spacing_problem(values):
        raise ViaError(f"pixel_spacing_mm {text!r} {problem}{comma_hint}")
    return values[0], values[1]


def _image_entries(project: object, via_json: Path) -> list[dict]:
    """The per-image entries of a VIA 2 project, a VIA 2 annotation export or a VIA 1 project."""
    metadata = project.get("_via_img_metadata", project) if isinstance(project, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, dict) and "filename" in v for v in metadata.values()):
        raise ViaError(f"{via_json} holds no VIA image metadata (entries with 'filename' and 'regions')")
    if not metadata:
        raise ViaError(f"{via_json} lists no images")
    return list(metadata.values())


def _regions(entry: dict) -> list[dict]:
    """An image's regions: a list (VIA 2) or a dict keyed by region index (VIA 1)."""
    regions = entry.get("regions") or []
    if isinstance(regions, dict):
        regions = list(regions.values())
    if not isinstance(regions, list) or not all(isinstance(region, dict) for region in regions):
        raise ViaError(f"regions must be a list of regions, got {entry.get('regions')!r}")
    return regions


def _landmark_name(region_attributes: object, attribute: str) -> str:
    """The landmark a region's ``attribute`` names: its text (dropdown, radio, text) or its one ticked option
    (checkbox: {option: true})."""
    attributes = region_attributes if isinstance(region_attributes, dict) else {}
    if attribute not in attributes:
        found = ", ".join(repr(name) for name in attributes) or "none"
        raise ViaError(f"a point has no region attribute {attribute!r} (its attributes: {found}); name the landmark "
                       f"attribute {attribute!r} in VIA")
    value = attributes[attribute]
    if isinstance(value, dict):  # a checkbox attribute: the options ticked
        ticked = [option for option, on in value.items() if on]
        if len(ticked) != 1:
            raise ViaError(f"a point's checkbox attribute {attribute!r} has {len(ticked)} options ticked "
                           f"({', '.join(ticked) or 'none'}): tick exactly one")
        value = ticked[0]
    return str(value).strip()


def _coordinate(shape: dict, key: str, name: str) -> float:
    value = shape.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ViaError(f"{name}'s point has {key} = {value!r}, not a number of pixels")
    return float(value)


def _labelled_slice(entry: dict, index: int, images_dir: Path, given_images_dir: bool, view: str, sequence: str,
                    pixel_spacing_mm: tuple[float, float] | None, attribute: str) -> Slice:
    """The slice of one image entry (``given_images_dir``: its folder was given, with --via-images); a ViaError
    (its message without the file and image) if it cannot be one."""
    path = images_dir / str(entry["filename"])
    if not path.is_file():
        hint = "" if given_images_dir else " (give the images' folder with --via-images)"
        raise ViaError(f"image {path} named in the VIA file is not there{hint}")
    expected_bytes = entry.get("size")
    actual_bytes = path.stat().st_size
    if isinstance(expected_bytes, int) and not isinstance(expected_bytes, bool) and expected_bytes > 0 and (
            actual_bytes != expected_bytes):
        raise ViaError(f"{path} is {actual_bytes} bytes, the VIA project labelled a file of {expected_bytes}: not "
                       "the image that was labelled (an upscaled or re-encoded copy?)")
    image, dicom_spacing = _read_image(path)
    file_attributes = entry.get("file_attributes") or {}
    if dicom_spacing is not None:
        if problem := _spacing_problem(list(dicom_spacing)):
            raise ViaError(f"DICOM PixelSpacing {list(dicom_spacing)} {problem}")
        spacing = dicom_spacing
    elif file_attributes.get("pixel_spacing_mm"):
        spacing = _spacing(file_attributes["pixel_spacing_mm"])
    elif pixel_spacing_mm is not None:
        spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    else:
        raise ViaError("no pixel spacing (give the image a pixel_spacing_mm file attribute in VIA, or all images one "
                       "with --pixel-spacing-mm ROW COL)")
    names = LANDMARKS_BY_VIEW[view]
    lookup = {name.lower(): k for k, name in enumerate(names)}
    landmarks = np.full((len(names), 2), np.nan)
    for region in _regions(entry):
        shape = region.get("shape_attributes") or {}
        if shape.get("name") != "point":
            raise ViaError(f"landmarks must be point regions, found a {shape.get('name')!r}")
        label = _landmark_name(region.get("region_attributes"), attribute)
        if label.lower() not in lookup:
            raise ViaError(f"region attribute {attribute!r} = {label!r} is none of {', '.join(names)}")
        k = lookup[label.lower()]
        if np.isfinite(landmarks[k, 0]):
            raise ViaError(f"{names[k]} is marked twice")
        cx, cy = _coordinate(shape, "cx", names[k]), _coordinate(shape, "cy", names[k])
        height, width = image.shape
        if not (0 <= cy <= height and 0 <= cx <= width):  # edge coordinates: the far edges are the image's too
            raise ViaError(f"{names[k]} at (cx {cx:g}, cy {cy:g}) is outside the {width} x {height} (width x height) "
                           "image")
        landmarks[k] = (cy - EDGE_TO_CENTRE_PX, cx - EDGE_TO_CENTRE_PX)
    return Slice(
        image=image, pixel_spacing_mm=spacing, landmarks_rc=landmarks, view=view, sequence=sequence,
        dataset="via", patient=str(file_attributes.get("patient") or Path(str(entry["filename"])).stem),
        slice_index=index, phase=0,
    )


def read_via_slices(
    via_json: Path,
    view: str,
    sequence: str,
    images_dir: Path | None = None,
    pixel_spacing_mm: tuple[float, float] | None = None,
    attribute: str = "landmark",
) -> list[Slice]:
    """One labelled :class:`~cmr_landmark.datasets.Slice` per image of a VIA project or annotation export.

    Every image is checked before any is refused: the ViaError names the VIA file and each image that cannot be used
    (the first ``MAX_REPORTED_ERRORS``), one line each. Partly labelled images (some of the view's landmarks, not
    all) are counted in a logged warning: their missing landmarks are taught as absent."""
    if pixel_spacing_mm is not None and (problem := _spacing_problem([float(v) for v in pixel_spacing_mm])):
        raise ViaError(f"--pixel-spacing-mm {problem}, got {list(pixel_spacing_mm)}")
    via_json = Path(via_json)
    try:
        project = json.loads(via_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ViaError(f"{via_json} is not a readable VIA JSON file: {error}") from error
    entries = _image_entries(project, via_json)
    folder = Path(images_dir) if images_dir is not None else via_json.parent
    slices, errors = [], []
    for index, entry in enumerate(entries):
        try:
            slices.append(_labelled_slice(entry, index, folder, images_dir is not None, view, sequence,
                                          pixel_spacing_mm, attribute))
        except ViaError as error:
            errors.append(f"{via_json.name}: {entry['filename']}: {error}")
    if errors:
        shown = errors[:MAX_REPORTED_ERRORS]
        more = f"\n... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        head = f"{len(errors)} of {len(entries)} images of {via_json} cannot be used:\n" if len(errors) > 1 else ""
        raise ViaError(head + "\n".join(shown) + more)
    names = LANDMARKS_BY_VIEW[view]
    partly = [(entries[s.slice_index]["filename"], [name for name, point in zip(names, s.landmarks_rc, strict=True)
                                                    if not np.isfinite(point).all()])
              for s in slices if np.isfinite(s.landmarks_rc).any() and not s.has_all_landmarks]
    if partly:
        example, missing = partly[0]
        log.warning("%s: %d of %d images are partly labelled, e.g. %s without %s: a landmark an image lacks is "
                    "taught as absent there (label every landmark the image shows)", via_json.name, len(partly),
                    len(slices), example, ", ".join(missing))
    return slices
