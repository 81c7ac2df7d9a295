"""Landmarks derived from segmentation masks (the training labels of every public set).

The public sets carry segmentations, not landmarks; this module turns a 2-D label mask into landmark points by
the project's rule (data README, "Deriving landmarks"):

Short axis (A-RVI, P-RVI, C-LV)
    C-LV is the centroid of the LV blood pool (its largest connected piece). The RV insertion points are the two
    ends of the arc of LV myocardium that the RV blood pool touches, seen as angles around C-LV. "Touches" means
    within ``contact_px`` pixels of the RV blood pool (default 1.5: the 8 neighbours, i.e. the RV dilated by one
    pixel with a 3 x 3 square, the middle of the data README's "1-2 pixel dilation"; counted in pixels as that
    dilation is, so it is 1.1 mm on MyoPS's 0.75 mm pixels and 2.2 mm on ACDC's 1.5 mm ones). Angles are measured in
    mm, so anisotropic pixels do not bend the arc. The arc is the complement of the largest
    angular gap in the contact set, which handles arcs running through +-180 degrees. The insertion points are
    absent when there is no RV, fewer than ``MIN_CONTACT_PIXELS`` contact pixels (a speck of contact has no two
    ends), or when the arc covers more than ``MAX_RV_ARC_DEG`` (an RV wrapped all round the LV has no insertions).

    Which end is anterior: in the standard display (seen from the apex, anterior up, RV on the viewer's left) the
    RV arc is on the left and A-RVI is its upper end, which is the clockwise end of the arc on screen. "Clockwise
    end" does not depend on in-plane rotation, so the rule holds for any image whose handedness is the standard
    one; a mirrored image (``mirrored=True``) swaps the two.

Long axis (MV-1, MV-2, APEX)
    The "open" part of the LV blood pool boundary is where the blood pool borders neither myocardium (the
    horseshoe around it) nor itself: the mitral opening towards the left atrium (unlabelled or background in the
    public sets). Its largest connected piece is the valve plane; its two ends, next to the tips of the
    myocardium, are the mitral points. APEX is the epicardial myocardium pixel farthest (in mm) from the mitral
    midpoint (the mean of the epicardial pixels within one pixel of the farthest, so a blunt apex
    gives its centre). Order: with the apex pointing down on screen (as scanners display a 4-chamber view), MV-1 is the
    left-hand point (the septal annulus, next to the RV, in a 4-chamber view) and MV-2 the right-hand one. Like
    the SAX rule this is rotation-invariant and a mirror swaps it (``config.MIRROR_SWAP``).

All points are (row, col) in the mask's own pixels; absent landmarks are NaN rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MIN_CONTACT_PIXELS = 3
MAX_RV_ARC_DEG = 300.0
DEFAULT_CONTACT_PX = 1.5


@dataclass(frozen=True)
class LabelCodes:
    """Which mask values are LV blood pool, LV myocardium and RV blood pool (several codes may share a class)."""

    lv_blood: tuple[int, ...]
    lv_myocardium: tuple[int, ...]
    rv_blood: tuple[int, ...]


# The codes every cached mask uses (datasets.py converts each set to these).
STANDARD_LABELS = LabelCodes(lv_blood=(1,), lv_myocardium=(2,), rv_blood=(3,))


def _largest_component(region: np.ndarray, eight_connected: bool = False) -> np.ndarray:
    labelled, count = ndimage.label(region, structure=np.ones((3, 3)) if eight_connected else None)
    if count <= 1:
        return region
    sizes = ndimage.sum_labels(region, labelled, index=np.arange(1, count + 1))
    return labelled == (int(np.argmax(sizes)) + 1)


def _check_mask(mask: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D label mask, got shape {mask.shape}")
    spacing = np.asarray(pixel_spacing_mm, dtype=np.float64)
    if spacing.shape != (2,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"pixel spacing must be two positive numbers of mm, got {pixel_spacing_mm!r}")
    return mask, spacing


def _screen_angles_rad(points_rc: np.ndarray, centre_rc: np.ndarray, spacing_mm: np.ndarray) -> np.ndarray:
    """Angles around ``centre_rc`` in mm, counter-clockwise on screen (row axis points down)."""
    offset_mm = (points_rc - centre_rc) * spacing_mm
    return np.arctan2(-offset_mm[:, 0], offset_mm[:, 1])


def derive_sax_landmarks(
    mask: np.ndarray,
    label_codes: LabelCodes = STANDARD_LABELS,
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
    mirrored: bool = False,
    contact_px: float = DEFAULT_CONTACT_PX,
) -> np.ndarray:
    """(A-RVI, P-RVI, C-LV) as a (3, 2) (row, col) array from a short-axis label mask; NaN rows where absent.

    ``mirrored`` says the mask is a left-right mirror of the standard display's handedness (then the clockwise
    end of the RV arc is the posterior one).
    """
    mask, spacing = _check_mask(mask, pixel_spacing_mm)
    points = np.full((3, 2), np.nan)
    lv_blood = _largest_component(np.isin(mask, label_codes.lv_blood))
    if not lv_blood.any():
        return points
    centre_rc = np.array(ndimage.center_of_mass(lv_blood))
    points[2] = centre_rc

    myocardium = np.isin(mask, label_codes.lv_myocardium)
    rv_blood = np.isin(mask, label_codes.rv_blood)
    if not myocardium.any() or not rv_blood.any():
        return points
    distance_to_rv_px = ndimage.distance_transform_edt(~rv_blood)
    contact_rc = np.argwhere(myocardium & (distance_to_rv_px <= contact_px)).astype(np.float64)
    if len(contact_rc) < MIN_CONTACT_PIXELS:
        return points

    angles = _screen_angles_rad(contact_rc, centre_rc, spacing)
    order = np.argsort(angles)
    sorted_angles = angles[order]
    # Gap after each sorted angle to the next one, the last wrapping round through +-180 degrees.
    gaps = np.diff(np.append(sorted_angles, sorted_angles[0] + 2 * np.pi))
    largest = int(np.argmax(gaps))
    if 360.0 - np.degrees(gaps[largest]) > MAX_RV_ARC_DEG:
        return points
    # Going counter-clockwise the arc starts just after the gap and ends just before it.
    clockwise_end = contact_rc[order[(largest + 1) % len(order)]]
    counter_clockwise_end = contact_rc[order[largest]]
    anterior, posterior = (counter_clockwise_end, clockwise_end) if mirrored else (clockwise_end, counter_clockwise_end)
    points[0], points[1] = anterior, posterior
    return points


def _touches(region: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Pixels of ``region`` with a 4-neighbour in ``other``."""
    return region & ndimage.binary_dilation(other, structure=ndimage.generate_binary_structure(2, 1))


def _segment_ends(pixels_rc: np.ndarray, spacing_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two mutually farthest-apart pixels of a thin segment (one farthest from the middle, then its farthest)."""
    middle = pixels_rc.mean(axis=0)
    first = pixels_rc[np.argmax(np.linalg.norm((pixels_rc - middle) * spacing_mm, axis=1))]
    second = pixels_rc[np.argmax(np.linalg.norm((pixels_rc - first) * spacing_mm, axis=1))]
    return first, second


def _epicardial_apex(lv_blood: np.ndarray, myocardium: np.ndarray, mitral_midpoint_rc: np.ndarray,
                     spacing_mm: np.ndarray) -> np.ndarray | None:
    """The epicardial myocardium pixel farthest (mm) from the mitral midpoint (None without epicardium)."""
    epicardium_rc = np.argwhere(_touches(myocardium, ~(myocardium | lv_blood))).astype(np.float64)
    if len(epicardium_rc) == 0:
        return None
    distance_mm = np.linalg.norm((epicardium_rc - mitral_midpoint_rc) * spacing_mm, axis=1)
    # A blunt apex has several pixels within rounding of the farthest; their mean is a stable, centred apex.
    return epicardium_rc[distance_mm >= distance_mm.max() - spacing_mm.min()].mean(axis=0)


def derive_lax_landmarks(
    mask: np.ndarray,
    label_codes: LabelCodes = STANDARD_LABELS,
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
    mirrored: bool = False,
) -> np.ndarray:
    """(MV-1, MV-2, APEX) as a (3, 2) (row, col) array from a long-axis label mask; NaN rows where absent."""
    mask, spacing = _check_mask(mask, pixel_spacing_mm)
    points = np.full((3, 2), np.nan)
    lv_blood = _largest_component(np.isin(mask, label_codes.lv_blood))
    myocardium = np.isin(mask, label_codes.lv_myocardium)
    if not lv_blood.any() or not myocardium.any():
        return points
    # Pixels outside the image count as neither, so a blood pool cut by the image edge opens there too; padding
    # with myocardium keeps the edge closed.
    padded_lv = np.pad(lv_blood, 1)
    padded_myocardium = np.pad(myocardium, 1, constant_values=True)
    open_boundary = _touches(padded_lv, ~(padded_lv | padded_myocardium))[1:-1, 1:-1]
    # A slanted valve line is a staircase of pixels that touch only diagonally: join them 8-connected.
    valve = _largest_component(open_boundary, eight_connected=True)
    if valve.sum() < 2:
        return points
    end_a, end_b = _segment_ends(np.argwhere(valve).astype(np.float64), spacing)
    mitral_midpoint = (end_a + end_b) / 2.0

    apex = _epicardial_apex(lv_blood, myocardium, mitral_midpoint, spacing)
    if apex is None:
        return points

    # Screen cross product (x = col, y = up) of apex direction and point offset: negative = left of an apex
    # pointing down.
    apex_dir = (apex - mitral_midpoint) * spacing
    offset = (end_a - mitral_midpoint) * spacing
    cross = -apex_dir[1] * offset[0] + apex_dir[0] * offset[1]
    end_a_is_first = (cross < 0) != mirrored
    points[0], points[1] = (end_a, end_b) if end_a_is_first else (end_b, end_a)
    points[2] = apex
    return points


def lax_apex_about(
    mitral_midpoint_rc: np.ndarray,
    mask: np.ndarray,
    label_codes: LabelCodes = STANDARD_LABELS,
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """(row, col) of the apex :func:`derive_lax_landmarks` takes, about a mitral midpoint known from elsewhere (a
    synthetic anatomy's, where the rule cannot find the valve: the aortic opening of a 3-chamber view would be
    taken for part of it); NaN without an LV blood pool or epicardium."""
    mask, spacing = _check_mask(mask, pixel_spacing_mm)
    lv_blood = _largest_component(np.isin(mask, label_codes.lv_blood))
    myocardium = np.isin(mask, label_codes.lv_myocardium)
    apex = _epicardial_apex(lv_blood, myocardium, np.asarray(mitral_midpoint_rc), spacing) if lv_blood.any() else None
    return np.full(2, np.nan) if apex is None else apex
