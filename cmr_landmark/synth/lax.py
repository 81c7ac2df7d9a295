"""Synthetic long-axis (4CH, 2CH, 3CH) cine/LGE images with known mitral-valve and apex landmarks.

No public set labels long-axis landmarks, so the long-axis model learns mostly from a parametric chest instead. The
anatomy is a set of implicit surfaces (truncated prolate ellipsoids, ellipsoids, tubes, elliptic cylinders)
evaluated directly at the 3-D points of the image plane, so a slice costs one pass over its pixels and no voxel
volume is ever built:

    random anatomy (sizes, wall, tilt, pose in the chest) -> phase of the heart beat (shortening, ejection)
    -> view plane as a planner sets it (+ planning error) -> label map at twice the resolution
    -> per-tissue intensities (bSSFP-like, LGE-like or random) with texture -> coil bias -> partial volume
    (2x downsampling) -> k-space truncation (ringing) -> Rician noise.

Heart coordinates (mm): origin at the mitral annulus centre, +z from the base toward the apex, +x from the LV
toward the RV (through the septum), +y completing a right-handed frame (anterior-ish). Labels 1-3 are those of
the real data sets (1 LV blood, 2 LV myocardium, 3 RV blood); the other tissues get their own codes so that
they can be rendered, and are set to 0 before the landmark rule sees the map, exactly as in the real labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..config import cache_dir
from ..landmarks import derive_lax_landmarks, lax_apex_about
from ..output_paths import written_beside

LAX_VIEWS: tuple[str, ...] = ("4ch", "2ch", "3ch")
CONTRASTS: tuple[str, ...] = ("bssfp", "lge", "random")

# Label codes: 1-3 as in the real data; the rest are extra tissues of the synthetic chest.
BACKGROUND, LV_BLOOD, LV_MYOCARDIUM, RV_BLOOD = 0, 1, 2, 3
LA_BLOOD, RA_BLOOD, AORTA_BLOOD, RV_WALL, HEART_FAT, SKIN_FAT, MUSCLE, LUNG, LIVER, SOFT_TISSUE, BONE, VALVE = range(
    4, 16
)
N_LABELS = 16
REAL_DATA_LABELS: tuple[int, ...] = (LV_BLOOD, LV_MYOCARDIUM, RV_BLOOD)
# The rule's landmarks are the target where they are this close (mm) to the anatomy's (a wall thickness).
RULE_AGREEMENT_MM = 6.0
# Part of the cache file names: raised whenever the targets of the same scenes change, so that no cache of older
# targets is trained on (2: the apex of geometry-target scenes on the rule's pixel, 2026-12-06).
TARGETS_VERSION = 2

# Relative intensity ranges per label (low, high): bSSFP blood and fat bright, myocardium dark, lung black;
# LGE (inversion-nulled myocardium) blood grey, myocardium black, fat bright.
_BLOOD = (0.75, 1.0)
_BSSFP_RANGES = {
    BACKGROUND: (0.0, 0.01), LV_BLOOD: _BLOOD, LV_MYOCARDIUM: (0.15, 0.32), RV_BLOOD: _BLOOD, LA_BLOOD: _BLOOD,
    RA_BLOOD: _BLOOD, AORTA_BLOOD: _BLOOD, RV_WALL: (0.15, 0.32), HEART_FAT: (0.6, 1.0), SKIN_FAT: (0.6, 1.0),
    MUSCLE: (0.15, 0.3), LUNG: (0.01, 0.08), LIVER: (0.2, 0.4), SOFT_TISSUE: (0.2, 0.5), BONE: (0.15, 0.45),
    VALVE: (0.1, 0.3),
}
_LGE_RANGES = {
    **_BSSFP_RANGES, LV_BLOOD: (0.35, 0.7), RV_BLOOD: (0.35, 0.7), LA_BLOOD: (0.35, 0.7), RA_BLOOD: (0.35, 0.7),
    AORTA_BLOOD: (0.35, 0.7), LV_MYOCARDIUM: (0.0, 0.08), RV_WALL: (0.02, 0.15), HEART_FAT: (0.5, 0.9),
    SKIN_FAT: (0.5, 0.9), LIVER: (0.25, 0.5), MUSCLE: (0.1, 0.25),
}


@dataclass(frozen=True)
class HeartAnatomy:
    """One synthetic heart in heart coordinates (mm) and its pose in the chest."""

    lv_length_mm: float  # mitral annulus plane to epicardial apex
    lv_radius_mm: float  # endocardial radius at the equator
    equator_depth_fraction: float  # where the widest point lies along the cavity, from the base (0) to the apex (1)
    wall_thickness_mm: float
    apex_wall_fraction: float  # apical wall as a fraction of the free wall
    base_tilt_rad: tuple[float, float]  # tilt of the annulus plane about x and y
    rv_size: tuple[float, float, float]  # RV cavity semi-axes (x, y, z) as fractions of the LV radius / length
    rv_offset_fraction: float  # RV centre along +x, in LV radii
    rv_wall_mm: float
    la_radius_mm: float
    ra_radius_mm: float
    aorta_radius_mm: float
    aorta_angle_rad: float  # direction of the aortic valve around the LV axis, from +x toward +y
    heart_fat_mm: float
    heart_to_body: np.ndarray  # (3, 3) rotation, columns = heart axes in body coordinates (left, anterior, superior)
    heart_origin_body_mm: np.ndarray  # (3,) mitral centre in body coordinates
    torso_semi_axes_mm: tuple[float, float]  # left-right, anterior-posterior
    skin_fat_mm: float
    muscle_mm: float
    diaphragm_z_mm: float
    la_depth_fraction: float = 0.9  # LA centre above the annulus plane, in LA radii (< 1: a wide mitral opening)
    base_wall_taper: float = 0.0  # fraction of the wall lost toward the annulus (thin basal myocardium tips)
    tricuspid_offset_mm: float = 6.0  # tricuspid annulus this far apical of the mitral one
    # Valve detail (the "*_valves" families): leaflets of both valves in every phase (open in diastole, closed in
    # systole), LV papillary muscles and the RV moderator band; off, the heart is the earlier, plainer one.
    valve_detail: bool = False
    leaflet_opening_rad: float = 0.0  # diastolic leaflet angle to the annulus plane (pi/2: along the walls)
    mitral_leaflets_mm: tuple[float, float] = (22.0, 13.0)  # anterior (aortic side), posterior
    tricuspid_leaflet_mm: float = 16.0
    papillary_radius_mm: float = 0.0  # 0: no papillary muscles
    papillary_azimuths_rad: tuple[float, float] = (2.7, 3.6)  # around the LV axis, from +x toward +y
    moderator_band_radius_mm: float = 0.0  # 0: no moderator band
    phase: float = 0.0  # 0 = end-diastole, 1 = end-systole
    shortening: float = 0.17  # longitudinal shortening at end-systole
    ejection_radius_fraction: float = 0.25  # endocardial radius lost at end-systole

    def at_phase(self, phase: float) -> HeartAnatomy:
        """The same heart at another point of the beat (0 = ED, 1 = ES)."""
        # refused rather than clipped: a clipped phase would leave the caller recording one phase and drawing another
        if not 0.0 <= phase <= 1.0:
            raise ValueError(f"phase must be in 0 (end-diastole) .. 1 (end-systole), got {phase}")
        return replace(self, phase=float(phase))

    # geometry at the current phase --------------------------------------------------------------------------
    @property
    def current_lv_length_mm(self) -> float:
        return self.lv_length_mm * (1.0 - self.shortening * self.phase)

    @property
    def current_wall_mm(self) -> float:
        # the wall thickens as the cavity empties (myocardial volume is roughly conserved)
        return self.wall_thickness_mm * (1.0 + 0.5 * self.phase * self.ejection_radius_fraction / 0.25)

    @property
    def current_radius_mm(self) -> float:
        return self.lv_radius_mm * (1.0 - self.ejection_radius_fraction * self.phase)

    def lv_axes(self) -> tuple[float, float, float, float]:
        """(equator z, endocardial z semi-axis, endocardial radius, apical wall) of the LV at this phase."""
        wall_apex = self.current_wall_mm * self.apex_wall_fraction
        cavity_length = self.current_lv_length_mm - wall_apex
        equator_z = self.equator_depth_fraction * cavity_length
        return equator_z, cavity_length - equator_z, self.current_radius_mm, wall_apex

    def apex_mm(self) -> np.ndarray:
        """Epicardial apex in heart coordinates."""
        return np.array([0.0, 0.0, self.current_lv_length_mm])

    def annulus_ring_mm(self, n: int = 720) -> np.ndarray:
        """Points (n, 3) on the mitral annulus: the endocardial LV edge at the (tilted) base plane."""
        equator_z, semi_z, radius, _ = self.lv_axes()
        ring_radius = radius * np.sqrt(max(1.0 - (equator_z / semi_z) ** 2, 0.05))
        angle = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        x, y = ring_radius * np.cos(angle), ring_radius * np.sin(angle)
        return np.stack([x, y, self._base_z(x, y)], axis=1)

    def _base_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.tan(self.base_tilt_rad[0]) * y + np.tan(self.base_tilt_rad[1]) * x

    def aortic_valve_mm(self) -> np.ndarray:
        _, _, radius, _ = self.lv_axes()
        r = radius * 0.85
        x, y = r * np.cos(self.aorta_angle_rad), r * np.sin(self.aorta_angle_rad)
        return np.array([x, y, float(self._base_z(np.array(x), np.array(y)))])

    # labels -------------------------------------------------------------------------------------------------
    def label_points(self, heart_mm: np.ndarray) -> np.ndarray:
        """Tissue label of each point (N, 3) given in heart coordinates."""
        labels = self._body_labels(heart_mm)
        # the heart and its fat fit in a sphere around mid-LV: evaluate the heart's surfaces only there
        reach_mm = 1.1 * self.lv_length_mm + 2.5 * self.lv_radius_mm + 90.0
        near = np.linalg.norm(heart_mm - np.array([0.0, 0.0, 0.4 * self.lv_length_mm]), axis=1) < reach_mm
        heart_labels = labels[near]
        self._label_heart(heart_mm[near], heart_labels)
        labels[near] = heart_labels
        return labels

    def _label_heart(self, heart_mm: np.ndarray, labels: np.ndarray) -> None:
        """Overwrite ``labels`` (N,) with the heart's tissues at points (N, 3), in place."""
        x, y, z = heart_mm[:, 0], heart_mm[:, 1], heart_mm[:, 2]
        equator_z, semi_z, radius, wall_apex = self.lv_axes()
        wall = self.current_wall_mm
        base_z = self._base_z(x, y)
        above_base = z >= base_z  # ventricular side of the annulus plane
        rho_xy2 = x**2 + y**2
        endo = rho_xy2 / radius**2 + ((z - equator_z) / semi_z) ** 2
        epi = rho_xy2 / (radius + wall) ** 2 + ((z - equator_z) / (semi_z + wall_apex)) ** 2
        if self.base_wall_taper > 0:  # the wall thins over the last 20 mm toward the annulus
            wall_here = wall * (1.0 - self.base_wall_taper * np.clip(1.0 - (z - base_z) / 20.0, 0.0, 1.0))
            epi = rho_xy2 / (radius + wall_here) ** 2 + ((z - equator_z) / (semi_z + wall_apex)) ** 2
        in_endo = (endo <= 1.0) & above_base
        in_epi = (epi <= 1.0) & above_base

        # RV: an ellipsoid beside the LV minus the LV itself leaves a crescent wrapping the septum
        rv_sx, rv_sy, rv_sz = self.rv_size
        rv_semi = np.array([rv_sx * radius, rv_sy * radius, rv_sz * self.current_lv_length_mm / 2])
        rv_centre = np.array([self.rv_offset_fraction * radius, 0.0, rv_semi[2] + 4.0])
        rv_rho = _ellipsoid(heart_mm, rv_centre, rv_semi)
        tricuspid_z = self.tricuspid_offset_mm + base_z
        rv_side = z >= tricuspid_z
        in_rv = (rv_rho <= 1.0) & rv_side & ~in_epi
        rv_outer = (np.sqrt(rv_rho) <= 1.0 + self.rv_wall_mm / rv_semi.min()) & rv_side & ~in_epi

        # atria above the valve planes, aortic root from the LV outflow upward
        la_centre = np.array([-0.15 * radius, -0.2 * radius, -self.la_depth_fraction * self.la_radius_mm])
        la_semi = np.array([1.0, 1.1, 1.0]) * self.la_radius_mm
        in_la = (_ellipsoid(heart_mm, la_centre, la_semi) <= 1.0) & ~above_base
        ra_centre = np.array([rv_centre[0] + 0.3 * rv_semi[0], 0.2 * radius,
                              self.tricuspid_offset_mm - 0.9 * self.ra_radius_mm])
        ra_semi = np.array([1.0, 1.0, 1.1]) * self.ra_radius_mm
        in_ra = (_ellipsoid(heart_mm, ra_centre, ra_semi) <= 1.0) & (z < tricuspid_z)
        valve = self.aortic_valve_mm()
        aorta_start = valve + np.array([0.0, 0.0, 12.0])
        aorta_dir = np.array([0.35 * np.cos(self.aorta_angle_rad), 0.35 * np.sin(self.aorta_angle_rad), -1.0])
        in_aorta_tube = _tube(heart_mm, aorta_start, aorta_dir, 70.0, self.aorta_radius_mm)
        in_lvot = in_aorta_tube & above_base & in_epi
        in_aorta = in_aorta_tube & ~above_base
        aorta_wall = _tube(heart_mm, aorta_start, aorta_dir, 70.0, self.aorta_radius_mm + 2.5) & ~above_base & ~in_aorta
        heart_core = in_epi | rv_outer | in_la | in_ra | in_aorta_tube
        fat_centre = np.array([0.3 * radius, 0.0, self.current_lv_length_mm * 0.35])
        fat = self.heart_fat_mm
        fat_semi = np.array([2.6 * radius + fat, 2.2 * radius + fat, 0.95 * self.lv_length_mm])
        near_heart = _ellipsoid(heart_mm, fat_centre, fat_semi) <= 1.0
        # pericardial fat: a layer over the ventricles, thickest in the atrioventricular groove
        groove = np.abs(z - base_z) < 12.0
        over_ventricles = epi <= (1.0 + self.heart_fat_mm / radius) ** 2
        fat_layer = near_heart & ~heart_core & (over_ventricles | (groove & (epi < 2.2)))
        labels[fat_layer & (labels != BONE)] = HEART_FAT
        labels[aorta_wall] = MUSCLE
        labels[in_la] = LA_BLOOD
        labels[in_ra] = RA_BLOOD
        labels[rv_outer] = RV_WALL
        labels[in_rv] = RV_BLOOD
        labels[in_aorta] = AORTA_BLOOD
        labels[in_epi] = LV_MYOCARDIUM
        labels[in_endo | in_lvot] = LV_BLOOD
        if self.valve_detail:
            self._label_valve_detail(heart_mm, labels, base_z, in_endo, in_rv, rv_centre, rv_semi)
        elif self.phase > 0.6:  # closed mitral leaflets: a thin dark line across the annulus in systole
            leaflets = (z < base_z) & (z > base_z - 2.0) & (rho_xy2 < (radius * 0.9) ** 2) & ~in_aorta_tube
            labels[leaflets] = VALVE

    def _label_valve_detail(
        self, heart_mm: np.ndarray, labels: np.ndarray, base_z: np.ndarray, in_endo: np.ndarray, in_rv: np.ndarray,
        rv_centre: np.ndarray, rv_semi: np.ndarray,
    ) -> None:
        """What tells the two valves apart on a real 4CH, in place: both valves' leaflets, the LV papillary
        muscles, the RV moderator band. Leaflets only replace blood, so walls keep their shape. ``base_z``: the
        mitral annulus plane's z at each point (``_base_z``, as the caller has it)."""
        x, y, z = heart_mm[:, 0], heart_mm[:, 1], heart_mm[:, 2]
        equator_z, semi_z, radius, _ = self.lv_axes()
        systole = self.phase >= 0.5
        # closed: bowed a little into the atrium and meeting in the middle; open: hanging into the ventricle
        angle = -0.2 if systole else self.leaflet_opening_rad
        blood = np.isin(labels, (LV_BLOOD, LA_BLOOD, RV_BLOOD, RA_BLOOD))

        mitral_ring_mm = radius * np.sqrt(max(1.0 - (equator_z / semi_z) ** 2, 0.05))
        azimuth = np.arctan2(y, x)
        anterior = np.cos(azimuth - self.aorta_angle_rad) > 0.3  # the anterior leaflet lies on the aortic side
        mitral_length = np.where(anterior, *self.mitral_leaflets_mm)
        mitral = _leaflet(np.hypot(x, y), z - base_z, mitral_ring_mm,
                          angle, mitral_ring_mm * 1.02 if systole else mitral_length)

        # tricuspid annulus: where the RV ellipsoid meets the tricuspid plane, an ellipse around the RV's axis
        tricuspid_z = self.tricuspid_offset_mm + base_z
        section = np.sqrt(max(1.0 - ((self.tricuspid_offset_mm - rv_centre[2]) / rv_semi[2]) ** 2, 0.05))
        semi_x, semi_y = rv_semi[0] * section, rv_semi[1] * section
        rv_azimuth = np.arctan2(y, x - rv_centre[0])
        ring_mm = 1.0 / np.sqrt((np.cos(rv_azimuth) / semi_x) ** 2 + (np.sin(rv_azimuth) / semi_y) ** 2)
        tricuspid = _leaflet(np.hypot(x - rv_centre[0], y), z - tricuspid_z, ring_mm, angle,
                             ring_mm * 1.02 if systole else np.full_like(ring_mm, self.tricuspid_leaflet_mm))
        labels[blood & (mitral | tricuspid)] = VALVE

        if self.papillary_radius_mm > 0:  # two muscles from the free wall at mid-cavity, long along the LV axis
            r = self.papillary_radius_mm
            cavity_mm = equator_z + semi_z
            for azimuth_rad in self.papillary_azimuths_rad:
                centre = np.array([0.6 * radius * np.cos(azimuth_rad), 0.6 * radius * np.sin(azimuth_rad),
                                   0.55 * cavity_mm])
                labels[in_endo & (_ellipsoid(heart_mm, centre, np.array([r, r, 2.5 * r])) <= 1.0)] = LV_MYOCARDIUM
        if self.moderator_band_radius_mm > 0:  # across the apical RV, from the septum to the free wall
            band_z = 0.68 * self.current_lv_length_mm
            septum = np.array([radius + self.current_wall_mm, 0.0, band_z])
            reach = rv_semi[0] * np.sqrt(max(1.0 - ((band_z - rv_centre[2]) / rv_semi[2]) ** 2, 0.0))
            free_wall = np.array([rv_centre[0] + reach + 2.0, 0.0, band_z + 6.0])
            band = _tube(heart_mm, septum, free_wall - septum, float(np.linalg.norm(free_wall - septum)),
                         self.moderator_band_radius_mm)
            labels[band & in_rv] = RV_WALL

    def _body_labels(self, heart_mm: np.ndarray) -> np.ndarray:
        """Chest around the heart: skin fat, muscle, lungs, mediastinum, liver below the diaphragm, spine."""
        body = heart_mm @ self.heart_to_body.T + self.heart_origin_body_mm  # (left, anterior, superior)
        bx, by, bz = body[:, 0], body[:, 1], body[:, 2]
        ax, ay = self.torso_semi_axes_mm
        torso = np.sqrt((bx / ax) ** 2 + (by / ay) ** 2)
        labels = np.full(len(body), BACKGROUND, dtype=np.uint8)
        inside = torso <= 1.0
        labels[inside] = SKIN_FAT
        muscle_edge = 1.0 - self.skin_fat_mm / ay
        labels[torso <= muscle_edge] = MUSCLE
        inner = torso <= muscle_edge - self.muscle_mm / ay
        # diaphragm: a dome highest under the heart, the right side higher (liver)
        dome = self.diaphragm_z_mm - 0.003 * (bx + 20.0) ** 2 - 0.002 * by**2 - 0.15 * bx
        labels[inner & (bz > dome)] = LUNG
        labels[inner & (bz <= dome)] = LIVER
        # oesophagus and great vessels between the heart and the spine
        mediastinum = inner & (np.abs(bx - 5.0) < 22.0) & (by > -ay + 25.0) & (by < self.heart_origin_body_mm[1] - 25.0)
        labels[mediastinum & (bz > dome)] = SOFT_TISSUE
        spine = np.hypot(bx, by + ay - 45.0) < 20.0
        labels[spine & inner] = BONE
        descending_aorta = np.hypot(bx - 22.0, by + ay - 68.0) < 11.0
        labels[descending_aorta & inner & (bz > dome - 40)] = AORTA_BLOOD
        return labels


def _ellipsoid(points: np.ndarray, centre: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    return (((points - centre) / semi_axes) ** 2).sum(axis=1)


def _leaflet(
    radial_mm: np.ndarray, axial_mm: np.ndarray, ring_mm: np.ndarray | float, angle_rad: float,
    length_mm: np.ndarray | float, half_thickness_mm: float = 1.0,
) -> np.ndarray:
    """Points within ``half_thickness_mm`` of a valve leaflet: in the (radial, axial) half-plane around a valve's
    axis, a segment from the annulus (``ring_mm``, 0) pointing inward and ``angle_rad`` toward the ventricle
    (+axial), ``length_mm`` long."""
    cos_a, sin_a = np.cos(angle_rad), np.sin(angle_rad)
    along = np.clip(-(radial_mm - ring_mm) * cos_a + axial_mm * sin_a, 0.0, length_mm)
    return np.hypot(radial_mm - (ring_mm - along * cos_a), axial_mm - along * sin_a) <= half_thickness_mm


def _tube(
    points: np.ndarray, start: np.ndarray, direction: np.ndarray, length_mm: float, radius_mm: float
) -> np.ndarray:
    direction = direction / np.linalg.norm(direction)
    along = (points - start) @ direction
    radial = np.linalg.norm(points - start - along[:, None] * direction, axis=1)
    return (along >= 0) & (along <= length_mm) & (radial <= radius_mm)


# Size ranges of the two anatomy families (docs/lax.md compares them on the real 4CH): "broad" was the first
# guess; "slender" is closer to the real M&Ms-2 4CH (narrower LV, thinner wall, an RV as wide as the LV and
# reaching nearer the apex, an LA as wide as the mitral opening, thin myocardium tips at the annulus), so the
# valve is found by the tips of the myocardium rather than by where a chamber narrows.
ANATOMY_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "broad": {"lv_radius_mm": (18.0, 30.0), "wall_mm": (6.0, 14.0), "rv_x": (0.9, 1.4), "rv_y": (1.5, 2.1),
              "rv_z": (0.65, 0.85), "rv_offset": (0.9, 1.4)},
    "slender": {"lv_radius_mm": (14.0, 26.0), "wall_mm": (5.0, 12.0), "rv_x": (1.1, 1.9), "rv_y": (1.5, 2.3),
                "rv_z": (0.75, 0.95), "rv_offset": (0.8, 1.3), "la_depth": (0.45, 0.75), "base_taper": (0.2, 0.6)},
}
# The same two with what tells the mitral from the tricuspid valve on a real 4CH (HeartAnatomy.valve_detail): both
# valves' leaflets in every phase, the tricuspid annulus 4-12 mm apical of the mitral, LV papillary muscles, the RV
# moderator band (docs/lax.md, "Telling the valves apart").
_VALVE_RANGES = {"tricuspid_offset": (4.0, 12.0), "leaflet_opening": (0.2, 1.4), "anterior_leaflet": (18.0, 26.0),
                 "posterior_leaflet": (10.0, 16.0), "tricuspid_leaflet": (12.0, 20.0), "papillary": (3.5, 6.0),
                 "moderator_band": (1.5, 3.0)}
# "*_wide": the valve detail, and neither chamber size nor wall thickness tells the ventricles apart: an RV of any
# size against the LV (RV/LV cavity width in 4CH about 0.4-1.5, "slender" 0.25-0.9; RV disease, as in M&Ms-2,
# dilates it) and LV walls from 3.5 mm (thinned, or thin at 4 mm pixels). A dilated RV grows away from the septum
# (its centre moves out with it), not around the LV.
_WIDE_RANGES = {"rv_x": (1.1, 2.2), "rv_z": (0.75, 1.0), "rv_offset": (1.2, 2.0)}
ANATOMY_RANGES |= {
    **{f"{name}_valves": {**ranges, **_VALVE_RANGES} for name, ranges in ANATOMY_RANGES.items()},
    **{f"{name}_wide": {**ranges, **_VALVE_RANGES, **_WIDE_RANGES, "wall_mm": (3.5, ranges["wall_mm"][1])}
       for name, ranges in ANATOMY_RANGES.items()},
}


def random_anatomy(rng: np.random.Generator, family: str = "broad") -> HeartAnatomy:
    """A heart with sizes drawn from ``family`` (ANATOMY_RANGES), posed in a random chest."""
    if family not in ANATOMY_RANGES:
        raise ValueError(f"unknown anatomy family {family!r}; expected one of {sorted(ANATOMY_RANGES)}")
    ranges = ANATOMY_RANGES[family]
    lv_length = rng.uniform(70.0, 110.0)
    # heart axes in the body (left, anterior, superior): the LV axis points left, anterior and down
    axis = np.array([0.6, 0.45, -0.6]) + rng.normal(0.0, 0.15, 3)
    axis /= np.linalg.norm(axis)
    toward_rv = np.array([-0.4, 0.8, 0.2]) + rng.normal(0.0, 0.15, 3)
    toward_rv -= toward_rv @ axis * axis
    toward_rv /= np.linalg.norm(toward_rv)
    third = np.cross(axis, toward_rv)
    heart_to_body = np.stack([toward_rv, third, axis], axis=1)
    torso = (rng.uniform(135.0, 185.0), rng.uniform(95.0, 130.0))
    origin = np.array([rng.uniform(0.0, 30.0), torso[1] - rng.uniform(75.0, 100.0), rng.uniform(-10.0, 10.0)])
    apex_z = (origin + heart_to_body @ np.array([0.0, 0.0, lv_length]))[2]
    return HeartAnatomy(
        lv_length_mm=lv_length,
        lv_radius_mm=rng.uniform(*ranges["lv_radius_mm"]),
        equator_depth_fraction=rng.uniform(0.05, 0.35),
        wall_thickness_mm=rng.uniform(*ranges["wall_mm"]),
        apex_wall_fraction=rng.uniform(0.5, 0.9),
        base_tilt_rad=tuple(rng.uniform(-0.15, 0.15, 2)),
        rv_size=(rng.uniform(*ranges["rv_x"]), rng.uniform(*ranges["rv_y"]), rng.uniform(*ranges["rv_z"])),
        rv_offset_fraction=rng.uniform(*ranges["rv_offset"]),
        rv_wall_mm=rng.uniform(2.5, 4.5),
        la_radius_mm=rng.uniform(17.0, 28.0),
        ra_radius_mm=rng.uniform(17.0, 27.0),
        aorta_radius_mm=rng.uniform(9.0, 13.0),
        aorta_angle_rad=rng.uniform(0.9, 1.3),
        heart_fat_mm=rng.uniform(1.0, 8.0),
        heart_to_body=heart_to_body,
        heart_origin_body_mm=origin,
        torso_semi_axes_mm=torso,
        skin_fat_mm=rng.uniform(5.0, 25.0),
        muscle_mm=rng.uniform(8.0, 18.0),
        diaphragm_z_mm=apex_z - rng.uniform(0.0, 25.0),
        shortening=rng.uniform(0.10, 0.25),
        ejection_radius_fraction=rng.uniform(0.15, 0.35),
        # drawn last, and only for families that set them, so the "broad" sets stay reproducible
        **(
            {
                "la_depth_fraction": rng.uniform(*ranges["la_depth"]),
                "base_wall_taper": rng.uniform(*ranges["base_taper"]),
            }
            if "la_depth" in ranges
            else {}
        ),
        **(_valve_detail(rng, ranges) if "tricuspid_offset" in ranges else {}),
    )


def _valve_detail(rng: np.random.Generator, ranges: dict[str, tuple[float, float]]) -> dict:
    """HeartAnatomy's valve-detail fields drawn from ``ranges`` (a "*_valves" or "*_wide" family)."""
    return {
        "valve_detail": True,
        "tricuspid_offset_mm": rng.uniform(*ranges["tricuspid_offset"]),
        "leaflet_opening_rad": rng.uniform(*ranges["leaflet_opening"]),
        "mitral_leaflets_mm": (rng.uniform(*ranges["anterior_leaflet"]), rng.uniform(*ranges["posterior_leaflet"])),
        "tricuspid_leaflet_mm": rng.uniform(*ranges["tricuspid_leaflet"]),
        # not every plane or heart shows them
        "papillary_radius_mm": rng.uniform(*ranges["papillary"]) if rng.random() < 0.85 else 0.0,
        "papillary_azimuths_rad": (rng.uniform(2.5, 2.95), rng.uniform(3.35, 3.8)),
        "moderator_band_radius_mm": rng.uniform(*ranges["moderator_band"]) if rng.random() < 0.7 else 0.0,
    }


# --- view planning ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewPlane:
    """An image plane: pixel (row, col) -> heart point = origin + row * row_dir + col * col_dir (mm)."""

    origin_mm: np.ndarray  # heart coordinates of pixel (0, 0)
    row_dir_mm: np.ndarray  # step of one row, mm, in heart coordinates
    col_dir_mm: np.ndarray
    shape: tuple[int, int]

    def points_mm(self) -> np.ndarray:
        rows, cols = np.meshgrid(np.arange(self.shape[0]), np.arange(self.shape[1]), indexing="ij")
        return self.origin_mm + rows.reshape(-1, 1) * self.row_dir_mm + cols.reshape(-1, 1) * self.col_dir_mm

    def to_pixels(self, heart_mm: np.ndarray) -> np.ndarray:
        """Project heart points (..., 3) onto the plane; (row, col) pixels."""
        basis = np.stack([self.row_dir_mm, self.col_dir_mm], axis=1)  # (3, 2)
        rc, *_ = np.linalg.lstsq(basis, (np.atleast_2d(heart_mm) - self.origin_mm).T, rcond=None)
        return rc.T

    def distance_mm(self, heart_mm: np.ndarray) -> np.ndarray:
        normal = np.cross(self.row_dir_mm, self.col_dir_mm)
        normal /= np.linalg.norm(normal)
        return (np.atleast_2d(heart_mm) - self.origin_mm) @ normal

    def upsampled(self, factor: int) -> ViewPlane:
        """The same plane sampled ``factor`` times finer; pixel centres of the coarse grid stay put."""
        shift = (factor - 1) / (2.0 * factor)
        return ViewPlane(
            origin_mm=self.origin_mm - shift * (self.row_dir_mm + self.col_dir_mm),
            row_dir_mm=self.row_dir_mm / factor,
            col_dir_mm=self.col_dir_mm / factor,
            shape=(self.shape[0] * factor, self.shape[1] * factor),
        )


def _rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * k @ k


def plan_view(
    anatomy: HeartAnatomy,
    view: str,
    rng: np.random.Generator,
    pixel_spacing_mm: float,
    shape: tuple[int, int],
    plane_error_deg: float = 4.0,
    plane_error_mm: float = 3.0,
) -> ViewPlane:
    """The plane a planner would set for ``view`` at end-diastole, off by a few degrees and mm.

    4CH contains the LV axis and the RV direction, 2CH the LV axis at ~90 degrees from it (no RV), 3CH the LV
    axis and the aortic valve. In-plane rotation, mirroring and the heart's position in the field of view are
    random, as they are between scanners and operators.
    """
    if view == "4ch":
        in_plane = np.array([1.0, 0.0, 0.0])
    elif view == "2ch":
        # away from the aortic valve (52-75 degrees), else the plane would show the outflow tract
        angle = rng.uniform(np.deg2rad(110), np.deg2rad(135))
        in_plane = np.array([np.cos(angle), np.sin(angle), 0.0])
    elif view == "3ch":
        valve = anatomy.aortic_valve_mm()
        in_plane = np.array([valve[0], valve[1], 0.0]) / np.hypot(valve[0], valve[1])
    else:
        raise ValueError(f"unknown long-axis view {view!r}; expected one of {LAX_VIEWS}")
    long_axis = np.array([0.0, 0.0, 1.0])
    error = _rotation(rng.normal(size=3), np.deg2rad(rng.normal(0.0, plane_error_deg)))
    long_axis, in_plane = error @ long_axis, error @ in_plane
    in_plane -= in_plane @ long_axis * long_axis
    in_plane /= np.linalg.norm(in_plane)
    normal = np.cross(long_axis, in_plane)
    # image axes: a random in-plane rotation (and mirror) of (long axis, in-plane direction)
    theta = rng.uniform(0.0, 2 * np.pi)
    row_dir = np.cos(theta) * long_axis + np.sin(theta) * in_plane
    col_dir = np.cross(normal, row_dir) * (1.0 if rng.random() < 0.5 else -1.0)
    centre = np.array([0.0, 0.0, 0.45 * anatomy.lv_length_mm]) + rng.normal(0.0, plane_error_mm) * normal
    centre += rng.uniform(-35.0, 35.0) * row_dir + rng.uniform(-35.0, 35.0) * col_dir
    centre_px = (np.array(shape) - 1) / 2.0
    origin = centre - pixel_spacing_mm * (centre_px[0] * row_dir + centre_px[1] * col_dir)
    return ViewPlane(origin, row_dir * pixel_spacing_mm, col_dir * pixel_spacing_mm, tuple(shape))


def geometric_landmarks_rc(anatomy: HeartAnatomy, plane: ViewPlane) -> np.ndarray:
    """True (MV-a, MV-b, APEX) in pixels of ``plane``: where the annulus ring crosses the plane, and the apex.

    The two mitral points are unordered here (the rule's order is image-based); compare them as a set.
    """
    ring = anatomy.annulus_ring_mm()
    distance = plane.distance_mm(ring)
    crossings = []
    for i in np.nonzero(np.sign(distance) != np.sign(np.roll(distance, -1)))[0]:
        j = (i + 1) % len(ring)
        t = distance[i] / (distance[i] - distance[j])
        crossings.append(ring[i] + t * (ring[j] - ring[i]))
    if len(crossings) != 2:
        raise ValueError("the view plane does not cut the mitral annulus twice")
    return plane.to_pixels(np.stack([*crossings, anatomy.apex_mm()]))


# --- rendering ----------------------------------------------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """A smooth zero-mean unit-std random field with about ``cells`` bumps across the image."""
    coarse = rng.normal(size=(cells + 2, cells + 2))
    field = ndimage.zoom(coarse, (shape[0] / coarse.shape[0], shape[1] / coarse.shape[1]), order=3)
    field = field[: shape[0], : shape[1]]
    if field.shape != shape:
        field = np.pad(field, [(0, shape[0] - field.shape[0]), (0, shape[1] - field.shape[1])], mode="edge")
    return (field - field.mean()) / (field.std() + 1e-9)


def tissue_intensities(rng: np.random.Generator, contrast: str) -> np.ndarray:
    """Mean intensity of each label (N_LABELS,) for a contrast family."""
    if contrast == "random":  # SynthSeg-like: any order of brightness, but blood and myocardium must differ
        values = rng.uniform(0.0, 1.0, N_LABELS)
        values[BACKGROUND] = rng.uniform(0.0, 0.05)
        blood = rng.uniform(0.0, 1.0)
        values[[LV_BLOOD, RV_BLOOD, LA_BLOOD, RA_BLOOD, AORTA_BLOOD]] = blood + rng.normal(0.0, 0.03, 5)
        myo = (blood + rng.uniform(0.25, 0.75)) % 1.0
        values[[LV_MYOCARDIUM, RV_WALL]] = myo
        return np.clip(values, 0.0, 1.0)
    ranges = {"bssfp": _BSSFP_RANGES, "lge": _LGE_RANGES}.get(contrast)
    if ranges is None:
        raise ValueError(f"unknown contrast {contrast!r}; expected one of {CONTRASTS}")
    values = np.array([rng.uniform(*ranges[label]) for label in range(N_LABELS)])
    blood = values[LV_BLOOD]  # one blood signal for all chambers, with small flow-related differences
    values[[RV_BLOOD, LA_BLOOD, RA_BLOOD, AORTA_BLOOD]] = blood * rng.uniform(0.85, 1.05, 4)
    return values


def render_image(
    labels_fine: np.ndarray,
    rng: np.random.Generator,
    contrast: str = "bssfp",
    bias_and_ringing: bool = True,
) -> np.ndarray:
    """MR-like magnitude image from a label map sampled at twice the output resolution.

    Texture, coil bias, partial volume (2x2 averaging), k-space truncation (ringing) and Rician noise.
    Returns float32 (H, W) in arbitrary scanner-like units (0..~1000).
    """
    if labels_fine.ndim != 2 or labels_fine.shape[0] % 2 or labels_fine.shape[1] % 2:
        raise ValueError(f"expected a 2-D label map of even size, got {labels_fine.shape}")
    means = tissue_intensities(rng, contrast)
    shape = labels_fine.shape
    image = means[labels_fine]
    texture = _smooth_field(rng, shape, int(rng.integers(8, 24))) * rng.uniform(0.02, 0.1)
    image = image * (1.0 + texture) + _smooth_field(rng, shape, 40) * rng.uniform(0.0, 0.03) * (labels_fine > 0)
    if bias_and_ringing:
        image = image * np.exp(_smooth_field(rng, shape, 2) * rng.uniform(0.1, 0.45))
    image = image.reshape(shape[0] // 2, 2, shape[1] // 2, 2).mean(axis=(1, 3))  # partial volume
    kspace = np.fft.fftshift(np.fft.fft2(image))
    if bias_and_ringing:  # acquired matrix smaller than the reconstructed one: truncation ringing
        for axis, keep in enumerate(rng.uniform(0.45, 0.9, 2)):
            n = kspace.shape[axis]
            half = int(keep * n / 2)
            mask = np.zeros(n, dtype=bool)
            mask[n // 2 - half : n // 2 + half] = True
            kspace = kspace * (mask[:, None] if axis == 0 else mask[None, :])
    signal = np.fft.ifft2(np.fft.ifftshift(kspace))
    noise_sigma = rng.uniform(0.01, 0.05) * max(float(np.percentile(image, 99)), 1e-3)
    noisy = signal + noise_sigma * (rng.normal(size=signal.shape) + 1j * rng.normal(size=signal.shape))
    return (np.abs(noisy) * 1000.0).astype(np.float32)


# --- one synthetic slice ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticLaxSlice:
    """A long-axis slice of the synthetic chest: label maps, landmarks (target, rule and geometry), and, once
    rendered, its image."""

    labels: np.ndarray  # uint8 (H, W), codes above
    labels_fine: np.ndarray  # uint8 (2H, 2W): the same plane sampled twice as finely, what images render from
    pixel_spacing_mm: tuple[float, float]
    landmarks_rc: np.ndarray  # (3, 2) MV-1, MV-2, APEX: the training target (see synthesize_lax_scene)
    rule_landmarks_rc: np.ndarray  # (3, 2) by the data-set rule (landmarks.derive_lax_landmarks) on labels 1-3
    geometric_landmarks_rc: np.ndarray  # (3, 2) from the anatomy; MV points in the rule's order
    landmark_source: str  # "rule" or "geometry": which of the two is the target
    lax_view: str  # 4ch | 2ch | 3ch
    phase: float
    lv_length_mm: float  # true apex to mitral-midpoint distance in 3-D
    image: np.ndarray | None = None  # float32 (H, W) once rendered
    contrast: str = ""
    view: str = "lax"  # the model family (config.VIEWS), what training and evaluation group by

    def rendered(self, rng: np.random.Generator, contrast: str, bias_and_ringing: bool = True) -> SyntheticLaxSlice:
        """This slice with an image of ``contrast`` (see :func:`render_image`)."""
        image = render_image(self.labels_fine, rng, contrast, bias_and_ringing)
        return replace(self, image=image, contrast=contrast)


def real_data_mask(labels: np.ndarray) -> np.ndarray:
    """The label map as the real data sets label it: LV blood 1, myocardium 2, RV blood 3, everything else 0."""
    return np.where(np.isin(labels, REAL_DATA_LABELS), labels, BACKGROUND).astype(np.uint8)


def random_scan_geometry(rng: np.random.Generator) -> tuple[float, tuple[int, int]]:
    """Pixel spacing (1.2-2.0 mm) and an even matrix (rows, cols) for a 300-380 mm field of view: the longer side
    300-380 mm, the shorter 75-100 % of it, and which of rows and cols is the longer drawn at random."""
    spacing = rng.uniform(1.2, 2.0)
    fov_mm = rng.uniform(300.0, 380.0)
    cols = int(round(fov_mm / spacing / 2)) * 2
    rows = int(round(cols * rng.uniform(0.75, 1.0) / 2)) * 2
    return spacing, (rows, cols) if rng.random() < 0.5 else (cols, rows)


def _in_rule_order(points_rc: np.ndarray) -> np.ndarray:
    """(MV-a, MV-b, APEX) with the mitral points in the order of :func:`landmarks.derive_lax_landmarks` (unmirrored):
    with the apex pointing down on screen, MV-1 is the left-hand point. Square pixels: no spacing needed."""
    mitral_midpoint = points_rc[:2].mean(axis=0)
    apex_dir = points_rc[2] - mitral_midpoint
    offset = points_rc[0] - mitral_midpoint
    # screen cross product (x = col, y = up), as the rule computes it: negative = left of an apex pointing down
    left_hand_first = -apex_dir[1] * offset[0] + apex_dir[0] * offset[1] < 0
    return points_rc if left_hand_first else points_rc[[1, 0, 2]]


def synthesize_lax_scene(
    rng: np.random.Generator,
    view: str | None = None,
    phase: float | None = None,
    anatomy: HeartAnatomy | None = None,
    family: str = "broad",
) -> SyntheticLaxSlice:
    """The label maps and landmarks of one random long-axis slice (not rendered). Unset arguments are random;
    a random anatomy is drawn from ``family`` (ANATOMY_RANGES).

    The target is the rule's landmarks (what the real validation labels give) wherever the rule agrees with
    the geometry within ``RULE_AGREEMENT_MM``. In 3CH the rule would take the aortic opening for part of the
    valve, and rarely a plane grazes the LA or aorta elsewhere; there the target is the anatomy's own mitral
    points and the apex the rule takes about their midpoint (the outermost myocardium pixel, not the continuous
    surface's apex, which lies in the epicardial fat in most 3CH scenes).
    """
    view = view or LAX_VIEWS[int(rng.integers(len(LAX_VIEWS)))]
    phase = float(rng.uniform(0.0, 1.0)) if phase is None else phase
    anatomy = (anatomy or random_anatomy(rng, family)).at_phase(phase)
    spacing, shape = random_scan_geometry(rng)
    plane = plan_view(anatomy, view, rng, spacing, shape)
    labels_fine = anatomy.label_points(plane.upsampled(2).points_mm()).reshape(shape[0] * 2, shape[1] * 2)
    labels = anatomy.label_points(plane.points_mm()).reshape(shape)
    geometric = geometric_landmarks_rc(anatomy, plane)
    # the rule sees the map as a real data set labels it: leaflets and papillary muscles in the blood pool
    plain = replace(anatomy, valve_detail=False).label_points(plane.points_mm()).reshape(shape) \
        if anatomy.valve_detail else labels
    real_mask = real_data_mask(plain)
    rule = derive_lax_landmarks(real_mask, pixel_spacing_mm=(spacing, spacing))
    source = "geometry"
    if np.all(np.isfinite(rule)):
        # order the geometric mitral points as the rule does (the rule's order is image-based)
        straight = np.linalg.norm(rule[:2] - geometric[:2], axis=1).sum()
        swapped = np.linalg.norm(rule[:2] - geometric[1::-1], axis=1).sum()
        if swapped < straight:
            geometric = geometric[[1, 0, 2]]
        agreement_mm = np.linalg.norm(rule - geometric, axis=1).max() * spacing
        if view != "3ch" and agreement_mm <= RULE_AGREEMENT_MM:
            source = "rule"
    else:  # no rule points to match: order the geometric ones by the rule's own convention
        geometric = _in_rule_order(geometric)
    target = rule
    if source == "geometry":
        # the anatomy's apex is on the continuous epicardium, often in the fat beyond the outermost myocardium
        # pixel the rule (and so every real label) takes: take the rule's apex about the anatomy's mitral points
        apex = lax_apex_about(geometric[:2].mean(axis=0), real_mask, pixel_spacing_mm=(spacing, spacing))
        target = np.vstack([geometric[:2], apex if np.all(np.isfinite(apex)) else geometric[2]])
    mitral_mid = np.mean(anatomy.annulus_ring_mm(), axis=0)
    return SyntheticLaxSlice(
        labels=labels,
        labels_fine=labels_fine,
        pixel_spacing_mm=(spacing, spacing),
        landmarks_rc=target,
        rule_landmarks_rc=rule,
        geometric_landmarks_rc=geometric,
        landmark_source=source,
        lax_view=view,
        phase=anatomy.phase,
        lv_length_mm=float(np.linalg.norm(anatomy.apex_mm() - mitral_mid)),
    )


def synthesize_lax_slice(
    rng: np.random.Generator,
    view: str | None = None,
    phase: float | None = None,
    contrast: str | None = None,
    bias_and_ringing: bool = True,
    contrast_weights: tuple[float, float, float] = (0.5, 0.2, 0.3),
    family: str = "broad",
) -> SyntheticLaxSlice:
    """One random rendered long-axis slice; an unset ``contrast`` is drawn with ``contrast_weights``."""
    contrast = contrast or str(rng.choice(CONTRASTS, p=contrast_weights))
    return synthesize_lax_scene(rng, view, phase, family=family).rendered(rng, contrast, bias_and_ringing)


# --- cached data sets ---------------------------------------------------------------------------------------------

# Training variants compared in docs/lax.md: which contrasts are drawn and whether bias/ringing are simulated.
VARIANTS: dict[str, dict] = {
    "bssfp": {"contrast_weights": (1.0, 0.0, 0.0), "bias_and_ringing": True},
    "mixed": {"contrast_weights": (0.5, 0.2, 0.3), "bias_and_ringing": True},
}


@dataclass(frozen=True)
class CachedLaxSlice:
    """A cached synthetic slice: what training needs (cmr_landmark.training.LabelledSlice) plus its origin."""

    image: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    landmarks_rc: np.ndarray
    lax_view: str
    phase: float
    view: str = "lax"
    sequence: str = "cine"


def _render_variants(
    seed: int, index: int, variants: Sequence[str], family: str
) -> tuple[SyntheticLaxSlice, list[tuple]]:
    """Scene ``index`` of the set ``seed`` and its (image, contrast) per variant: same anatomy, other looks."""
    scene = synthesize_lax_scene(np.random.default_rng([seed, index]), family=family)
    images = []
    for variant in variants:
        options = VARIANTS[variant]
        rng = np.random.default_rng([seed, index, 1 + sorted(VARIANTS).index(variant)])
        contrast = str(rng.choice(CONTRASTS, p=options["contrast_weights"]))
        images.append((render_image(scene.labels_fine, rng, contrast, options["bias_and_ringing"]), contrast))
    return replace(scene, labels_fine=scene.labels_fine[:0, :0]), images


def synthetic_lax_cache_path(n_slices: int, seed: int, variant: str, family: str = "broad") -> Path:
    return cache_dir() / f"synth_lax_targets{TARGETS_VERSION}_{family}_{variant}_{n_slices}_seed{seed}.npz"


def cache_synthetic_lax(
    n_slices: int, seed: int = 0, variants: Sequence[str] = ("mixed",), family: str = "broad"
) -> list[Path]:
    """Synthesize ``n_slices`` scenes (scene i from seed [seed, i]) and store one npz per variant.

    Every variant renders the same scenes, so variants differ only in how images look. Images are stored flat
    (float16) with their shapes, so variable matrices cost no padding. Existing files are reused.
    """
    if n_slices < 1:
        raise ValueError(f"a synthetic set needs at least one slice, got n_slices={n_slices}")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; expected some of {sorted(VARIANTS)}")
    if family not in ANATOMY_RANGES:
        raise ValueError(f"unknown anatomy family {family!r}; expected one of {sorted(ANATOMY_RANGES)}")
    paths = [synthetic_lax_cache_path(n_slices, seed, variant, family) for variant in variants]
    if all(path.exists() for path in paths):
        return paths
    rendered = [_render_variants(seed, index, variants, family) for index in range(n_slices)]
    scenes = [scene for scene, _ in rendered]
    for variant_index, path in enumerate(paths):
        images = [variant_images[variant_index][0] for _, variant_images in rendered]
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_beside(path) as partial, partial.open("wb") as file:  # a file: np.savez names no .npz on it
            np.savez(
                file,
                images=np.concatenate([image.ravel() for image in images]).astype(np.float16),
                shapes=np.array([image.shape for image in images]),
                spacings_mm=np.array([s.pixel_spacing_mm for s in scenes]),
                landmarks_rc=np.stack([s.landmarks_rc for s in scenes]),
                lax_views=np.array([s.lax_view for s in scenes]),
                phases=np.array([s.phase for s in scenes]),
                sources=np.array([s.landmark_source for s in scenes]),
                contrasts=np.array([variant_images[variant_index][1] for _, variant_images in rendered]),
            )
    return paths


def load_synthetic_lax(path: Path) -> list[CachedLaxSlice]:
    """The slices of a :func:`cache_synthetic_lax` file."""
    with np.load(path) as data:
        sizes = np.prod(data["shapes"], axis=1)
        flat = np.split(data["images"], np.cumsum(sizes)[:-1])
        return [
            CachedLaxSlice(
                image=image.astype(np.float32).reshape(shape),
                pixel_spacing_mm=(float(spacing[0]), float(spacing[1])),
                landmarks_rc=landmarks,
                lax_view=str(view),
                phase=float(phase),
            )
            for image, shape, spacing, landmarks, view, phase in zip(
                flat,
                data["shapes"],
                data["spacings_mm"],
                data["landmarks_rc"],
                data["lax_views"],
                data["phases"],
                strict=True,
            )
        ]


# --- command line: cache the training sets, draw the figure --------------------------------------------------------


def save_figure(path: Path, real_image: np.ndarray | None = None, seed: int = 0, family: str = "slender") -> None:
    """A grid of synthetic slices (all views and contrasts, target landmarks marked) beside a real 4CH image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    figure, axes = plt.subplots(3, 5, figsize=(15, 9.3))
    panels = list(axes.flat)
    if real_image is not None:
        panels[0].imshow(real_image, cmap="gray")
        panels[0].set_title("real: M&Ms-2 001 4CH ED", fontsize=9)
        panels = panels[1:]
    for i, axis in enumerate(panels):
        view = LAX_VIEWS[i % 3]
        contrast = CONTRASTS[(i // 3) % 3]
        s = synthesize_lax_slice(rng, view=view, contrast=contrast, family=family)
        axis.imshow(s.image, cmap="gray", vmax=np.percentile(s.image, 99.5))
        axis.scatter(s.landmarks_rc[:, 1], s.landmarks_rc[:, 0], c=["C1", "C0", "C3"], s=14)
        axis.set_title(f"{s.lax_view} {s.contrast} phase {s.phase:.2f}, {s.pixel_spacing_mm[0]:.2f} mm", fontsize=9)
    for axis in axes.flat:
        axis.axis("off")
    figure.suptitle("synthetic long-axis training images; MV-1 orange, MV-2 blue, APEX red", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=50)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Cache synthetic long-axis training sets and/or draw example slices."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cmr_landmark.synth.lax", description=main.__doc__)
    parser.add_argument("--slices", type=int, default=0, help="cache this many synthetic slices per variant")
    parser.add_argument("--variants", default="bssfp,mixed", help=f"comma-separated, of {sorted(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anatomy", default="slender", choices=sorted(ANATOMY_RANGES))
    parser.add_argument("--figure", type=Path, default=None, help="draw example slices into this PNG")
    args = parser.parse_args(argv)
    if args.slices:
        variants = [v for v in args.variants.split(",") if v]
        for path in cache_synthetic_lax(args.slices, args.seed, variants, args.anatomy):
            print(path)
    if args.figure:
        from ..datasets import load_slices

        real = [s for s in load_slices("mnms2") if s.view == "lax" and s.labelled and s.phase == 0]
        save_figure(args.figure, real[0].image if real else None, args.seed, args.anatomy)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
