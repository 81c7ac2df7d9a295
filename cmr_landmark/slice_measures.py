"""After the model, for one slice: its phases' landmarks named, smoothed over the beat and measured.

    Detector output per phase
    -> A-RVI / P-RVI named by the patient's anatomy (short axis, where the image plane is known)
    -> smoothed and gap-filled over the phases (long-axis cine: :func:`cine.smooth_cine_detections`)
    -> measures per phase (:func:`measures.image_measures`) -> longitudinal shortening over the phases

One function for the gadget and for offline detection, so that both report the same points and numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .cine import smooth_cine_detections
from .config import LANDMARKS_BY_VIEW
from .detector import ImageLandmarks
from .geometry import GeometryError, anterior_direction_in_image, standard_short_axis_orientation
from .measures import image_measures, longitudinal_shortening_with_problem, name_rv_insertions_anatomically

log = logging.getLogger(__name__)

PlaneDirections = tuple[Sequence[float], Sequence[float]]  # an image's ISMRMRD (read_dir, phase_dir), unit vectors


@dataclass(frozen=True)
class MeasuredSlice:
    """One slice's landmarks per phase as reported, with the measures each phase allows."""

    landmarks: list[ImageLandmarks]
    measures: list[dict[str, float]]  # measures.image_measures' names; LongitudinalShortening on every phase of a
    # slice whose LV lengths give one (measures.longitudinal_shortening_with_problem)
    filled: list[dict[str, bool]] | None  # long-axis cine: which landmarks were filled in from neighbouring phases


def with_left_out_phases(found_usable: Iterable[ImageLandmarks], left_out: Container[int], n_phases: int, view: str
                         ) -> list[ImageLandmarks]:
    """Every phase's landmarks from those of the phases the model saw (``found_usable``, in phase order): a phase in
    ``left_out`` (an image with nothing in it, kept out of the model's batch) has nothing found, so that a cine is
    smoothed over its real phases and the gap filled."""
    found = iter(found_usable)
    return [dict.fromkeys(LANDMARKS_BY_VIEW[view]) if phase in left_out else next(found) for phase in range(n_phases)]


def measure_slice(found_per_phase: Sequence[ImageLandmarks], view: str, pixel_spacing_mm: tuple[float, float],
                  probability_threshold: float, plane_directions: Sequence[PlaneDirections] | None = None
                  ) -> MeasuredSlice:
    """The landmarks and measures of one slice's phases (``Detector.detect`` output, all on one pixel grid).

    ``plane_directions``: each phase's (read_dir, phase_dir) where the patient geometry is known (ISMRMRD, DICOM);
    with it, short-axis A-RVI / P-RVI are named by the patient's anterior and ``AnteriorRVIDirection_deg`` is
    measured. ``probability_threshold``: below it a long-axis cine point is weak and filled from its neighbours.
    """
    landmarks = list(found_per_phase)
    if plane_directions is not None and len(plane_directions) != len(landmarks):
        raise ValueError(f"{len(plane_directions)} plane directions for {len(landmarks)} phases")
    if view == "sax" and plane_directions is not None:
        landmarks = [named_by_anatomy(found, pixel_spacing_mm, directions)
                     for found, directions in zip(landmarks, plane_directions, strict=True)]
    filled = None
    if view == "lax" and len(landmarks) > 1:
        # a cine: each point smoothed over the phases, a weak or outlying one filled from its neighbours
        cine = smooth_cine_detections(landmarks, pixel_spacing_mm, probability_threshold)
        landmarks, filled = cine.landmarks, cine.filled
    displays: list[tuple[np.ndarray | None, bool]] = [(None, False)] * len(landmarks)
    if view == "sax" and plane_directions is not None:
        # one look-up (and at most one warning) per distinct plane: the phases of a slice share theirs
        planes = [tuple(tuple(float(v) for v in direction) for direction in directions)
                  for directions in plane_directions]
        by_plane = {plane: anterior_in_display(plane) for plane in dict.fromkeys(planes)}
        displays = [by_plane[plane] for plane in planes]
    measures = [image_measures({name: (lm.row, lm.col) for name, lm in found.items() if lm is not None}, view,
                               pixel_spacing_mm, *display)
                for found, display in zip(landmarks, displays, strict=True)]
    lengths = [m.get("LVLength_mm", np.nan) for m in measures]
    shortening, problem = longitudinal_shortening_with_problem(lengths)
    if shortening is None and len(lengths) > 1 and np.isfinite(lengths).any():  # a cine with lengths: say why
        log.warning("no longitudinal shortening: %s", problem)
    if shortening is not None:
        for m in measures:
            m["LongitudinalShortening"] = shortening
    return MeasuredSlice(landmarks, measures, filled)


def named_by_anatomy(found: ImageLandmarks, pixel_spacing_mm: tuple[float, float],
                     plane_directions: PlaneDirections) -> ImageLandmarks:
    """A-RVI / P-RVI named by the patient's anterior direction in the image
    (:func:`measures.name_rv_insertions_anatomically`), logged when that swaps the model's names."""
    named = name_rv_insertions_anatomically(found, pixel_spacing_mm, *plane_directions)
    if named.get("A-RVI") is not found.get("A-RVI"):
        log.info("A-RVI/P-RVI swapped to match the patient's anterior direction in the image")
    return named


def anterior_in_display(plane_directions: PlaneDirections) -> tuple[np.ndarray | None, bool]:
    """The patient's anterior direction in the image (row, col) and whether the standard short-axis display mirrors
    the image (the AHA segments run counter-clockwise seen from the apex), for ``AnteriorRVIDirection_deg``;
    (None, False), with a warning, for a plane with no in-plane anterior direction."""
    try:
        return (anterior_direction_in_image(*plane_directions),
                standard_short_axis_orientation(*plane_directions)[1])
    except GeometryError as error:
        log.warning("no anterior RV insertion direction: %s", error)
        return None, False
