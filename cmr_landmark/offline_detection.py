"""Landmarks of every image of a series read from a file, with voxel indices, world mm and measures.

The record of one image (the JSON contract of ``cmr-landmark detect``)::

    {"slice": k, "phase": t,
     "landmarks": {NAME: null | {"voxel": [i, j], "world_mm": [x, y, z], "probability": p}},
     "lv_length_mm": float | null, "rv_insertion_angle_deg": float | null}

``voxel`` is in the file's own index order (NIfTI: [i, j] = [row, col] of the array's first two axes; DICOM and
ISMRMRD: [column, row]); ``world_mm`` is in the file's world frame (NIfTI affine: RAS+, DICOM/ISMRMRD: LPS).

Short-axis images are treated as the gadget treats them: where the file carries the scanner's patient geometry
(DICOM, ISMRMRD) each slice is shown to the model in the standard display, and A-RVI is the end nearer the patient's
anterior; a NIfTI file is detected as stored and keeps the model's naming, because the public NIfTI sets carry no
trustworthy orientation (docs/data.md).
"""

from __future__ import annotations

import math

import numpy as np

from .config import LANDMARKS_BY_VIEW
from .detector import Detector, ImageLandmarks, detect_in_orientation
from .geometry import GeometryError, standard_short_axis_orientation
from .io import ImageSeries
from .measures import image_measures, longitudinal_shortening, name_rv_insertions_anatomically


def record_measures(found: ImageLandmarks, view: str, pixel_spacing_mm: tuple[float, float]) -> dict[str, float | None]:
    """LV length (lax) and RV insertion angle (sax) of one image; None when a landmark it needs is missing."""
    points = {name: (lm.row, lm.col) for name, lm in found.items() if lm is not None}
    try:
        measures = image_measures(points, view, pixel_spacing_mm)
    except ValueError:  # an insertion point on the LV centre: the angle is undefined
        measures = {}
    return {"lv_length_mm": measures.get("LVLength_mm"), "rv_insertion_angle_deg": measures.get("RVInsertionAngle_deg")}


def image_directions(series: ImageSeries, slice_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(read_dir, phase_dir): the unit world directions of one column and one row step of a slice (ISMRMRD's names;
    DICOM's ImageOrientationPatient row and column cosines)."""
    geometry = series.slice_geometry[slice_index]
    return (geometry.col_step_mm / np.linalg.norm(geometry.col_step_mm),
            geometry.row_step_mm / np.linalg.norm(geometry.row_step_mm))


def model_orientation(series: ImageSeries, slice_index: int, view: str) -> tuple[int, bool]:
    """As the gadget: a short-axis slice with patient geometry (DICOM, ISMRMRD) is shown to the model in the standard
    display (``geometry.standard_short_axis_orientation``); anything else as stored."""
    if view != "sax" or series.frame != "LPS":
        return (0, False)
    try:
        return standard_short_axis_orientation(*image_directions(series, slice_index))
    except GeometryError:
        return (0, False)


def detect_series(series: ImageSeries, detector: Detector) -> list[dict]:
    """One record per (slice, phase), slice-major. The phases of a slice are detected together (one crop)."""
    view = detector.spec.view
    records = []
    for slice_index in range(series.n_slices):
        orientation = model_orientation(series, slice_index, view)
        found_per_phase = detect_in_orientation(detector, series.images[slice_index], series.pixel_spacing_mm,
                                                *orientation, same_slice=series.n_phases > 1)
        for phase, found in enumerate(found_per_phase):
            if view == "sax" and series.frame == "LPS":
                found = name_rv_insertions_anatomically(found, series.pixel_spacing_mm,
                                                        *image_directions(series, slice_index))
            landmarks: dict[str, dict | None] = {}
            for name in LANDMARKS_BY_VIEW[view]:
                landmark = found.get(name)
                if landmark is None:
                    landmarks[name] = None
                    continue
                world = series.pixel_to_world_mm(slice_index, [[landmark.row, landmark.col]])[0]
                landmarks[name] = {
                    "voxel": series.voxel(round(landmark.row, 3), round(landmark.col, 3)),
                    "world_mm": [round(float(v), 3) for v in world],
                    "probability": round(landmark.probability, 4),
                }
            records.append(
                {"slice": slice_index, "phase": phase, "landmarks": landmarks,
                 **record_measures(found, view, series.pixel_spacing_mm)}
            )
    return records


def shortening_per_slice(records: list[dict]) -> list[dict]:
    """Longitudinal shortening (fraction) of each slice with LV lengths in at least two phases."""
    lengths: dict[int, list[float]] = {}
    for record in records:
        if record["lv_length_mm"] is not None and math.isfinite(record["lv_length_mm"]):
            lengths.setdefault(record["slice"], []).append(record["lv_length_mm"])
    return [
        {"slice": slice_index, "longitudinal_shortening": round(longitudinal_shortening(values), 4)}
        for slice_index, values in sorted(lengths.items())
        if len(values) >= 2
    ]
