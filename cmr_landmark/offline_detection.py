"""Landmarks of every image of a series read from a file, with voxel indices, world mm and measures.

The record of one image (the JSON contract of ``cmr-landmark detect``)::

    {"slice": k, "phase": t,
     "landmarks": {NAME: null | {"voxel": [i, j], "world_mm": [x, y, z], "probability": p}},
     "lv_length_mm": float | null, "rv_insertion_angle_deg": float | null,
     "anterior_rvi_direction_deg": float | null}

``voxel`` is in the file's own index order (NIfTI: [i, j] = [row, col] of the array's first two axes; DICOM and
ISMRMRD: [column, row]); ``world_mm`` is in the file's world frame (NIfTI affine: RAS+, DICOM/ISMRMRD: LPS).

Each short-axis slice is shown to the model in the display it was trained on and the points are mapped back
(``detect_in_orientation``):
- where the file carries the scanner's patient geometry (DICOM, ISMRMRD), as the gadget does it: the standard display
  from read_dir and phase_dir (anterior up, the patient's right on the viewer's left), turned a quarter more for a
  model trained with the RV elsewhere (``geometry.model_display_orientation``), and A-RVI is then the end nearer the
  patient's anterior;
- a NIfTI file of one of the public sets, recognised by its file name (``datasets.public_set_of_file``), by the
  orientation decided for that set (``datasets.ORIENTATION_BY_DATASET``): their headers carry no trustworthy
  orientation (docs/data.md);
- any other NIfTI file by its anatomy: the mirror and quarter turn that bring the RV nearest where the model saw it
  most in training (``display_orientation``, all its images decided together; docs/orientation.md, arm 3);
- any NIfTI as stored on request (``detect --nifti-as-stored``), or from its affine as from a DICOM header
  (``detect --nifti-affine``: the user vouches that the affine is the scanner's, as dcm2niix writes it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import LANDMARKS_BY_VIEW, ORIENTATION_MAX_IMAGES, shipped_models_dir
from .datasets import ORIENTATION_BY_DATASET, public_set_of_file
from .detector import Detector, detect_in_orientation
from .display_orientation import StoredOrientation, display_orientation, estimate_stored_orientation
from .geometry import model_display_orientation
from .image_checks import label_map_reason, no_signal_reason
from .io import ImageReadError, ImageSeries
from .measures import REPORTED_MEASURE_KEYS, longitudinal_shortening_or_none, rounded_measure
from .model_store import ModelError, ModelSpec, load_orientation_network
from .slice_measures import measure_slice, with_left_out_phases

log = logging.getLogger(__name__)

# Parallel slices from which a series has a short-axis stack's shape: a long-axis view is one plane per series (the
# public sets' short-axis stacks have 3-21, their long-axis files 1).
SHORT_AXIS_STACK_MIN_SLICES = 3
# Below this fraction of images with every landmark found, the model is likely looking at another view. On the public
# files here the right view gave 0.33-1 (short axis, 34 files; 1 for every long-axis file), the wrong one 0-0.25 (0
# for every long-axis file given as short axis).
MIN_COMPLETE_FRACTION = 0.2
# Smaller than an adult heart's short axis: a pixel size given in the wrong unit, or not an image of the heart.
MIN_HEART_FIELD_OF_VIEW_MM = 60.0


@dataclass(frozen=True)
class DisplayOrientation:
    """How the images of a file were shown to the model: ``geometry.orient_image``'s (quarter_turns, mirror) and
    where that came from; reported in ``detect``'s output."""

    source: str  # 'header' (per short-axis slice, DICOM / ISMRMRD), 'public set <name>', 'anatomy', 'as stored'
    quarter_turns: int = 0
    mirror: bool = False
    anatomy: StoredOrientation | None = None  # 'anatomy': what display_orientation read from the images
    model_rv_direction_deg: float | None = None  # 'header': the model's display_rv_direction_deg, which each
    # slice's standard display was turned toward

    def as_record(self) -> dict:
        if self.source == "header":
            return {"source": self.source, "display_rv_direction_deg": self.model_rv_direction_deg}
        record = {"source": self.source, "quarter_turns": self.quarter_turns, "mirror": self.mirror}
        if self.anatomy is not None:
            record["stored_rv_direction_deg"] = round(self.anatomy.rv_direction_deg, 1)
            record["certainty"] = round(self.anatomy.certainty, 3)
        return record


def display_orientation_of(series: ImageSeries, spec: ModelSpec, nifti_as_stored: bool = False,
                           nifti_affine: bool = False) -> DisplayOrientation:
    """How to show a file's short-axis images to the model ``spec``. DICOM / ISMRMRD: the standard display from
    each slice's header, turned toward the model's ``display_rv_direction_deg`` (``geometry.
    model_display_orientation``), and so a NIfTI with ``nifti_affine``. NIfTI: its public set's decided orientation when
    the file name is one of theirs; else the mirror and quarter turn that its anatomy says bring the RV nearest the
    direction the model saw most in training (:func:`anatomy_orientation`), which also checks a public set's name
    (a warning where the anatomy reads the other mirror). As stored
    with ``nifti_as_stored``, for the long axis (its model was trained at every orientation), and where the model
    records no direction or the models folder has no orientation network (logged)."""
    if spec.view != "sax":
        return DisplayOrientation("as stored")
    if series.frame == "LPS" or nifti_affine:  # nifti_affine: the user vouches for it (dcm2niix writes the DICOM's)
        return DisplayOrientation("header", model_rv_direction_deg=spec.display_rv_direction_deg)
    if nifti_as_stored:
        return DisplayOrientation("as stored")
    dataset = public_set_of_file(series.source)
    if dataset is not None:
        by_name = DisplayOrientation(f"public set {dataset}", *ORIENTATION_BY_DATASET[dataset])
        try:
            by_anatomy = anatomy_orientation(series, spec)
        except ModelError:  # nothing to check the name against
            return by_name
        # The anatomy agreed with the set's mirror on all 249 public short-axis files here (docs/orientation.md): a
        # file it contradicts is likely another source's with a public set's name, whose A-RVI / P-RVI would swap.
        if by_anatomy.mirror != by_name.mirror:
            log.warning("%s is named like a file of the public set %s and is shown to the model as that set's files "
                        "are, but its anatomy reads as the mirror image of that display: if it is not a %s file, A-RVI "
                        "and P-RVI come back swapped; rename it so that its anatomy decides",
                        series.source, dataset, dataset)
        return by_name
    try:
        return anatomy_orientation(series, spec)
    except ModelError as error:
        log.warning("%s: showing %s to the model as stored", error, series.source)
        return DisplayOrientation("as stored")


def anatomy_orientation(series: ImageSeries, spec: ModelSpec) -> DisplayOrientation:
    """The display the orientation network reads from a file's anatomy (all images decided together, from at most
    ``config.ORIENTATION_MAX_IMAGES`` spread evenly over slices and phases); ModelError where the model records no
    direction or no orientation network can be loaded."""
    if spec.display_rv_direction_deg is None:
        raise ModelError(f"model {spec.name} records no display_rv_direction_deg")
    network = _orientation_network(spec.file.parent)
    images = series.images.reshape(-1, *series.images.shape[-2:])
    chosen = np.unique(np.linspace(0, len(images) - 1, min(len(images), ORIENTATION_MAX_IMAGES)).round().astype(int))
    stored = estimate_stored_orientation(network, images[chosen], series.pixel_spacing_mm)
    return DisplayOrientation("anatomy", *display_orientation(stored, spec.display_rv_direction_deg), stored)


def _orientation_network(models_folder: Path) -> torch.nn.Module:
    """The orientation network of the model's own folder, else the shipped one: a folder of one's own exported
    landmark models (``export --models-dir``) need not carry a copy."""
    try:
        return load_orientation_network(models_folder)
    except ModelError:
        if models_folder.resolve() == shipped_models_dir().resolve():
            raise
    return load_orientation_network(shipped_models_dir())


def check_pixels(series: ImageSeries) -> None:
    """Refuse (:class:`ImageReadError`) a series in which the detector has nothing to look at: no image with signal
    (no finite pixel, or every pixel one value), or a label map (a few whole numbers, a
    segmentation given in place of its image). Warn (one line) of single images without signal, which
    :func:`detect_series` leaves out."""
    reasons = [no_signal_reason(image) for image in series.images.reshape(-1, *series.images.shape[-2:])]
    blank = [n for n, reason in enumerate(reasons) if reason is not None]
    if len(blank) == len(reasons):
        first_reasons = "; ".join(list(dict.fromkeys(reasons))[:3])  # each different reason once, a few at most
        raise ImageReadError(f"{series.source}: nothing to find landmarks in: {first_reasons}")
    if reason := label_map_reason(series.images):
        raise ImageReadError(f"{series.source}: {reason}; give the image it segments")
    if blank:
        where = ", ".join(f"slice {n // series.n_phases} phase {n % series.n_phases}" for n in blank[:5])
        more = f" and {len(blank) - 5} more" if len(blank) > 5 else ""
        log.warning("%s: %d of %d images hold nothing to find landmarks in (%s%s; e.g. %s): they are left out and "
                    "report no landmarks", series.source, len(blank), len(reasons), where, more, reasons[blank[0]])


def view_warning(series: ImageSeries, spec: ModelSpec, records: list[dict]) -> str | None:
    """One line where the series looks like another view than the model's, naming the likely fix, else None: a
    long-axis model given a stack of parallel slices, or a model that found all its landmarks in fewer than
    ``MIN_COMPLETE_FRACTION`` of the images (:func:`detect_series`'s ``records``)."""
    other = "sax" if spec.view == "lax" else "lax"
    if spec.view == "lax" and series.n_slices >= SHORT_AXIS_STACK_MIN_SLICES:
        cine_hint = (" (if they are the phases of one long-axis cine, give --nifti-3d phases)"
                     if series.frame == "RAS" and series.n_phases == 1 else "")
        return (f"{series.source}: {series.n_slices} parallel slices, a short-axis stack's shape, given as --view lax: "
                f"if it is a short-axis stack, run with --view sax{cine_hint}")
    # the phase's own detections: a point filled in from the neighbouring phases says nothing of this image
    complete = sum(all(landmark is not None and not landmark.get("filled") for landmark in record["landmarks"].values())
                   for record in records)
    if complete >= MIN_COMPLETE_FRACTION * len(records):
        return None
    rows, cols = series.images.shape[-2:]
    row_mm, col_mm = series.pixel_spacing_mm
    if min(rows * row_mm, cols * col_mm) < MIN_HEART_FIELD_OF_VIEW_MM:
        return (f"{series.source}: a field of view of {rows * row_mm:.3g} x {cols * col_mm:.3g} mm is too small to "
                f"hold a heart: check the pixel size ({row_mm:.3g} x {col_mm:.3g} mm)")
    if spec.view == "sax" and sum(record["landmarks"]["C-LV"] is not None for record in records) >= len(records) / 2:
        return None  # the LV is there: slices beyond the RV's reach (base, apex) have no insertion points
    return (f"{series.source}: model {spec.name} found all its landmarks in {complete} of {len(records)} images, "
            f"which {spec.view} images seldom give: if it is a {other} image, run with --view {other}; else check "
            f"--sequence and the pixel size ({row_mm:.3g} x {col_mm:.3g} mm, a field of view of "
            f"{rows * row_mm:.0f} x {cols * col_mm:.0f} mm)")


def detect_series(series: ImageSeries, detector: Detector, orientation: DisplayOrientation | None = None
                  ) -> list[dict]:
    """One record per (slice, phase), slice-major. The phases of a slice are detected together (one crop), shown as
    ``orientation`` says (default :func:`display_orientation_of`). A long-axis cine's points are smoothed over its
    phases and weak ones filled from their neighbours, by the gadget's own steps (:func:`slice_measures.measure_slice`;
    each landmark then says whether it was ``filled``)."""
    view = detector.spec.view
    records = []
    orientation = orientation or display_orientation_of(series, detector.spec)
    for slice_index in range(series.n_slices):
        # the scanner's patient geometry (DICOM, ISMRMRD, a NIfTI affine vouched for) says how the model wants to see
        # the slice; the public sets' NIfTI affines do not
        plane = (series.ismrmrd_plane(slice_index) if series.frame == "LPS" or orientation.source == "header"
                 else None)
        shown_as = (model_display_orientation(view, plane.read_dir, plane.phase_dir,
                                              detector.spec.display_rv_direction_deg) if plane
                    else (orientation.quarter_turns, orientation.mirror))
        # an image with nothing in it (check_pixels warned of it) is left out of the model's batch and reports
        # nothing, as the gadget does (gadget.finish_slice): it neither moves the slice's crop nor gets points
        images = series.images[slice_index]
        blank = {phase for phase, image in enumerate(images) if no_signal_reason(image) is not None}
        usable = [phase for phase in range(len(images)) if phase not in blank]
        found = (detect_in_orientation(detector, images[usable], series.pixel_spacing_mm, *shown_as,
                                       same_slice=series.n_phases > 1) if usable else [])
        measured = measure_slice(with_left_out_phases(found, blank, len(images), view), view,
                                 series.pixel_spacing_mm, detector.spec.probability_threshold,
                                 None if plane is None else [(plane.read_dir, plane.phase_dir)] * series.n_phases)
        for phase, (found, measures) in enumerate(zip(measured.landmarks, measured.measures, strict=True)):
            landmarks: dict[str, dict | None] = {}
            for name in LANDMARKS_BY_VIEW[view]:
                landmark = found.get(name)
                if landmark is None:
                    landmarks[name] = None
                    continue
                # world_mm from the voxel as written, so that affine @ voxel gives world_mm to its 3 decimals
                row, col = round(landmark.row, 3), round(landmark.col, 3)
                world = series.pixel_to_world_mm(slice_index, [[row, col]])[0]
                landmarks[name] = {
                    "voxel": series.voxel(row, col),
                    "world_mm": [round(float(v), 3) for v in world],
                    "probability": round(landmark.probability, 4),
                }
                if measured.filled is not None:
                    landmarks[name]["filled"] = measured.filled[phase][name]
            records.append({"slice": slice_index, "phase": phase, "landmarks": landmarks,
                            # the AHA orientation (the last) needs the patient's anterior: the scanner's geometry
                            **{key: _rounded(measures, name) for name, key in REPORTED_MEASURE_KEYS.items()}})
    return records


def _rounded(measures: dict[str, float], name: str) -> float | None:
    return None if measures.get(name) is None else rounded_measure(name, measures[name], 2)


def shortening_per_slice(records: list[dict]) -> list[dict]:
    """Longitudinal shortening (fraction) of each slice that allows one
    (:func:`measures.longitudinal_shortening_or_none`: a missing length, or one of 0 from the degenerate detection
    with the apex on the mitral midpoint, is left out)."""
    lengths: dict[int, list[float]] = {}
    for record in records:
        length = record["lv_length_mm"]
        lengths.setdefault(record["slice"], []).append(np.nan if length is None else length)
    shortenings = {slice_index: longitudinal_shortening_or_none(values) for slice_index, values in lengths.items()}
    return [{"slice": slice_index, "longitudinal_shortening": round(shortening, 4)}
            for slice_index, shortening in sorted(shortenings.items()) if shortening is not None]
