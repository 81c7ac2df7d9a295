"""Clinical measures from landmark points: LV length, longitudinal shortening, RV insertion angles.

Points are (row, col) pixels of one image; ``pixel_spacing_mm`` is (row_mm, col_mm), so every distance and angle
is taken in millimetres and stays right for non-square pixels.

Angles, defined once here and in docs/gadget.md:

- ``rv_insertion_angle_deg``: the angle at the LV centre between the anterior and the posterior RV insertion
  points, 0-180 degrees: the arc over which the RV attaches to the septum where that arc is 180 degrees or less
  (an arc of more, rare, reads as 360 minus it). It does not depend on how the image is displayed or oriented.
- ``anterior_rvi_direction_deg``: where the anterior RV insertion point lies, seen from the LV centre, measured
  from a reference direction (the patient's anterior direction in the image, from
  :func:`cmr_landmark.geometry.anterior_direction_in_image`, or image "up" when the geometry is unknown),
  counter-clockwise as the image is displayed (row 0 at the top, column 0 at the left), or, for an image stored
  mirrored (``mirrored``), as the standard short-axis display shows it, 0-360 degrees. The ray
  from the LV centre through the anterior RV insertion point is the boundary between AHA segments 1 (basal
  anterior) and 2 (basal anteroseptal); the other segment boundaries follow at 60 degree steps (basal and mid
  slices) or the apical boundaries at 45 degrees from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .geometry import GeometryError, anterior_direction_in_image, checked_pixel_spacing_mm, displayed_angle_deg

IMAGE_UP_RC = (-1.0, 0.0)
# A longitudinal shortening above this is no heart's (normal about 15-20 %, a hyperdynamic ventricle about 30 %):
# a landmark is off the ventricle in some phase (on the real cine with its apex cut off by the view: 86 %).
MAX_PLAUSIBLE_SHORTENING = 0.40


def _point(point_rc: Sequence[float], what: str) -> np.ndarray:
    point = np.asarray(point_rc, dtype=np.float64).reshape(-1)
    if point.shape != (2,) or not np.all(np.isfinite(point)):
        raise ValueError(f"{what} must be a finite (row, col) point, got {point_rc!r}")
    return point


def _to_mm(vector_rc: np.ndarray, pixel_spacing_mm: Sequence[float]) -> np.ndarray:
    return vector_rc * checked_pixel_spacing_mm(pixel_spacing_mm)


def lv_length_mm(
    mv1_rc: Sequence[float], mv2_rc: Sequence[float], apex_rc: Sequence[float], pixel_spacing_mm: Sequence[float]
) -> float:
    """Distance (mm) from the apex to the midpoint of the two mitral valve points."""
    mitral_midpoint = (_point(mv1_rc, "MV-1") + _point(mv2_rc, "MV-2")) / 2.0
    return float(np.linalg.norm(_to_mm(_point(apex_rc, "APEX") - mitral_midpoint, pixel_spacing_mm)))


def usable_lv_lengths_mm(lv_lengths_mm: Sequence[float]) -> np.ndarray:
    """The LV lengths (mm) a longitudinal shortening can use: the finite, positive ones. NaN is a frame where a
    landmark was not found; 0 the degenerate detection with the apex on the mitral midpoint. A negative length is
    no length at all (:func:`lv_length_mm` cannot give one) and raises."""
    lengths = np.asarray(lv_lengths_mm, dtype=np.float64).reshape(-1)
    if np.any(lengths < 0):
        raise ValueError(f"LV lengths cannot be negative, got {lengths.tolist()}")
    return lengths[np.isfinite(lengths) & (lengths > 0)]


def longitudinal_shortening_with_problem(lv_lengths_mm: Sequence[float]) -> tuple[float | None, str | None]:
    """(max - min) / max of the LV lengths of a cine's phases (a fraction, not percent; NaN where a phase has none)
    over the :func:`usable_lv_lengths_mm`, with None; or None with why there is none: fewer than two usable lengths,
    lengths on fewer than half the phases (the landmarks lost over most of the beat: the extremes are unknown), or a
    figure no heart has (above :data:`MAX_PLAUSIBLE_SHORTENING`: a landmark off the ventricle in some phase, e.g. the
    apex cut off by the field of view)."""
    phases = np.asarray(lv_lengths_mm, dtype=np.float64).reshape(-1)
    lengths = usable_lv_lengths_mm(phases)
    if len(lengths) < 2:
        return None, f"an LV length on {len(lengths)} of {len(phases)} phases, two are needed"
    if len(lengths) < len(phases) / 2:
        return None, f"an LV length on only {len(lengths)} of {len(phases)} phases: the beat's extremes are unknown"
    shortening = float((lengths.max() - lengths.min()) / lengths.max())
    if shortening > MAX_PLAUSIBLE_SHORTENING:
        return None, (f"a shortening of {100 * shortening:.0f} % (LV length {lengths.min():.1f}-{lengths.max():.1f} "
                      "mm) is no heart's: a landmark is off the ventricle in some phase")
    return shortening, None


def shortening_problem(lv_lengths_mm: Sequence[float]) -> str | None:
    """Why the LV lengths of a cine's phases give no longitudinal shortening, or None
    (:func:`longitudinal_shortening_with_problem`)."""
    return longitudinal_shortening_with_problem(lv_lengths_mm)[1]


def longitudinal_shortening_or_none(lv_lengths_mm: Sequence[float]) -> float | None:
    """The longitudinal shortening of a cine's LV lengths, None where :func:`shortening_problem` finds one
    (:func:`longitudinal_shortening_with_problem`)."""
    return longitudinal_shortening_with_problem(lv_lengths_mm)[0]


def longitudinal_shortening(lv_lengths_mm: Sequence[float]) -> float:
    """:func:`longitudinal_shortening_or_none`, for lengths that must allow one (raises ValueError otherwise)."""
    shortening, problem = longitudinal_shortening_with_problem(lv_lengths_mm)
    if shortening is None:
        raise ValueError(f"no longitudinal shortening: {problem}")
    return shortening


def rv_insertion_angle_deg(
    anterior_rc: Sequence[float],
    posterior_rc: Sequence[float],
    centre_rc: Sequence[float],
    pixel_spacing_mm: Sequence[float],
) -> float:
    """Angle (degrees, 0-180) at the LV centre between the anterior and posterior RV insertion points."""
    centre = _point(centre_rc, "C-LV")
    to_anterior = _to_mm(_point(anterior_rc, "A-RVI") - centre, pixel_spacing_mm)
    to_posterior = _to_mm(_point(posterior_rc, "P-RVI") - centre, pixel_spacing_mm)
    lengths = np.linalg.norm(to_anterior) * np.linalg.norm(to_posterior)
    if lengths == 0:
        raise ValueError("an RV insertion point coincides with the LV centre: the angle is undefined")
    cosine = np.clip(to_anterior @ to_posterior / lengths, -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)))


def anterior_rvi_direction_deg(
    anterior_rc: Sequence[float],
    centre_rc: Sequence[float],
    pixel_spacing_mm: Sequence[float],
    reference_direction_rc: Sequence[float] = IMAGE_UP_RC,
    mirrored: bool = False,
) -> float:
    """Direction (degrees, 0-360) of the anterior RV insertion point seen from the LV centre, counter-clockwise
    as displayed from ``reference_direction_rc`` (a direction in mm, (row, col) components; default image up).
    ``mirrored``: the image is stored as the mirror image of the standard short-axis display
    (``geometry.standard_short_axis_orientation``), so the angle is taken counter-clockwise in that display,
    i.e. clockwise as this image is displayed: the same heart gives the same angle however it is stored."""
    to_anterior = _to_mm(_point(anterior_rc, "A-RVI") - _point(centre_rc, "C-LV"), pixel_spacing_mm)
    reference = _point(reference_direction_rc, "reference direction")
    if not np.any(to_anterior) or not np.any(reference):
        raise ValueError("the anterior RV insertion point or the reference direction has zero length")
    angle = (displayed_angle_deg(to_anterior) - displayed_angle_deg(reference)) * (-1.0 if mirrored else 1.0) % 360.0
    return 0.0 if angle >= 360.0 else angle  # a rounding-level negative angle wraps to exactly 360.0


# The per-phase measures (image_measures' names) by their key in the JSON reports: `detect`'s records and the replay
# report's slice summaries.
REPORTED_MEASURE_KEYS = {"LVLength_mm": "lv_length_mm", "RVInsertionAngle_deg": "rv_insertion_angle_deg",
                         "AnteriorRVIDirection_deg": "anterior_rvi_direction_deg"}

# The measures that are directions (0-360 degrees): written rounded, they must still be below 360.
DIRECTION_MEASURES = frozenset({"AnteriorRVIDirection_deg"})


def rounded_measure(name: str, value: float, decimals: int) -> float:
    """``value`` of measure ``name`` rounded to ``decimals``; a direction wraps after rounding, so that 359.99996
    is written 0.0, never 360.0."""
    rounded = round(float(value), decimals)
    return rounded % 360.0 + 0.0 if name in DIRECTION_MEASURES else rounded  # + 0.0: no -0.0


# On a usual short-axis slice the two insertion points lie 20 mm or more apart along the patient's anterior; where
# they lie within this of each other, the slice is turned so that the anterior rule is decided by a millimetre of
# detection noise (the shipped sample replayed from GRAPPA raw data swapped one slice's names at 0.2 mm), and the
# model's handedness, the same over the whole stack, names them instead.
ANTERIOR_NAMING_MARGIN_MM = 5.0


def anterior_insertion_is_posterior(
    anterior_rc: Sequence[float],
    posterior_rc: Sequence[float],
    pixel_spacing_mm: Sequence[float],
    anterior_direction_rc: Sequence[float],
) -> bool:
    """True when the point labelled A-RVI lies further from the patient's anterior than the one labelled P-RVI,
    by more than ``ANTERIOR_NAMING_MARGIN_MM`` along the (unit) ``anterior_direction_rc``.

    The model names the two RV insertion ends by their handedness in the training display (seen from the apex);
    an image stored mirrored (seen from the base) swaps them. Where the geometry is known the data convention is
    anatomical — A-RVI is the end nearer the patient's anterior — so the caller swaps the names when this is True.
    """
    difference_mm = _to_mm(_point(anterior_rc, "A-RVI") - _point(posterior_rc, "P-RVI"), pixel_spacing_mm)
    return float(difference_mm @ _point(anterior_direction_rc, "anterior direction")) < -ANTERIOR_NAMING_MARGIN_MM


def name_rv_insertions_anatomically(found: Mapping[str, Any], pixel_spacing_mm: Sequence[float],
                                    read_dir: Sequence[float], phase_dir: Sequence[float]) -> dict[str, Any]:
    """``found`` (name -> a point with ``.row`` and ``.col``, or None) with A-RVI and P-RVI swapped when the image
    geometry shows the model's "anterior" end is the posterior one.

    The model names the ends by their handedness in the display it was trained on, and the gadget shows it each slice
    in that display (``geometry.model_display_orientation``). Where read_dir/phase_dir (patient
    LPS) are known, the data convention is anatomical: A-RVI is the end nearer the patient's anterior (the data
    README's rule). The two agree on a usual short-axis slice; this makes the anatomical one hold where they do not.
    A plane with no in-plane anterior direction (coronal-like), or two ends about equally anterior
    (``ANTERIOR_NAMING_MARGIN_MM``), keeps the model's handedness."""
    anterior_point, posterior_point = found.get("A-RVI"), found.get("P-RVI")
    if anterior_point is None or posterior_point is None:
        return dict(found)
    try:
        anterior = anterior_direction_in_image(read_dir, phase_dir)
    except GeometryError:
        return dict(found)
    if not anterior_insertion_is_posterior((anterior_point.row, anterior_point.col),
                                           (posterior_point.row, posterior_point.col), pixel_spacing_mm, anterior):
        return dict(found)
    return {**found, "A-RVI": posterior_point, "P-RVI": anterior_point}


def image_measures(
    points_rc: dict[str, Sequence[float]],
    view: str,
    pixel_spacing_mm: Sequence[float],
    anterior_direction_rc: Sequence[float] | None = None,
    mirrored: bool = False,
) -> dict[str, float]:
    """The measures one image's found landmarks allow, by name: ``LVLength_mm`` (lax), ``RVInsertionAngle_deg``
    (sax) and, when the patient's anterior direction in the image is known, ``AnteriorRVIDirection_deg`` (sax;
    ``mirrored`` as :func:`anterior_rvi_direction_deg`).
    A measure whose landmarks are not all in ``points_rc``, or which they leave undefined (an insertion point on the
    LV centre), is left out; a bad pixel spacing raises ValueError."""
    checked_pixel_spacing_mm(pixel_spacing_mm)  # a bad spacing is the caller's error, not a measure the points lack
    p = points_rc
    candidates = {
        "LVLength_mm": (view == "lax" and {"MV-1", "MV-2", "APEX"} <= p.keys(),
                        lambda: lv_length_mm(p["MV-1"], p["MV-2"], p["APEX"], pixel_spacing_mm)),
        "RVInsertionAngle_deg": (view == "sax" and {"A-RVI", "P-RVI", "C-LV"} <= p.keys(),
                                 lambda: rv_insertion_angle_deg(p["A-RVI"], p["P-RVI"], p["C-LV"], pixel_spacing_mm)),
        "AnteriorRVIDirection_deg": (
            view == "sax" and anterior_direction_rc is not None and {"A-RVI", "C-LV"} <= p.keys(),
            lambda: anterior_rvi_direction_deg(p["A-RVI"], p["C-LV"], pixel_spacing_mm, anterior_direction_rc,
                                               mirrored)),
    }
    measures: dict[str, float] = {}
    for name, (allowed, measure) in candidates.items():
        if allowed:
            try:
                measures[name] = measure()
            except ValueError:  # degenerate points: this measure is undefined on this image, the others stand
                continue
    return measures
