"""Synthetic short-axis slices with known landmarks: an LV blood pool and myocardial ring, an RV crescent.

In the standard display (RV on the viewer's left, anterior up) A-RVI is the upper end of the RV arc, P-RVI the
lower end, C-LV the LV centre. Slices beyond the heart carry no landmarks (NaN rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass
class PhantomSlice:
    image: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    landmarks_rc: np.ndarray
    view: str = "sax"
    sequence: str = "cine"
    dataset: str = "phantom"
    patient: str = "p0"
    slice_index: int = 0
    phase: int = 0
    labelled: bool = True
    mask: np.ndarray | None = field(default=None, repr=False)
    pathology: np.ndarray | None = field(default=None, repr=False)
    source_image: np.ndarray | None = field(default=None, repr=False)


def phantom_slice(rng: np.random.Generator, size_px: int = 112, spacing_mm: float = 2.0, heart: bool = True,
                  patient: str = "p0", index: int = 0) -> PhantomSlice:
    rows, cols = np.mgrid[0:size_px, 0:size_px].astype(np.float64)
    image = np.full((size_px, size_px), 0.15)
    body = (rows - size_px / 2) ** 2 / (0.45 * size_px) ** 2 + (cols - size_px / 2) ** 2 / (0.48 * size_px) ** 2 < 1
    image[body] = 0.35
    landmarks = np.full((3, 2), np.nan)
    mask = np.zeros((size_px, size_px), dtype=np.uint8)  # standard codes: 1 LV blood, 2 myocardium, 3 RV blood
    if heart:
        centre = size_px / 2 + rng.uniform(-12, 12, 2) / spacing_mm
        blood_mm, wall_mm, rv_outer_mm = rng.uniform(16, 24), rng.uniform(7, 11), rng.uniform(48, 58)
        dy, dx = (rows - centre[0]) * spacing_mm, (cols - centre[1]) * spacing_mm
        radius = np.hypot(dy, dx)
        screen_angle = np.degrees(np.arctan2(-dy, dx))  # counter-clockwise from the viewer's right, up positive
        upper_deg, lower_deg = rng.uniform(100, 125), rng.uniform(220, 250)  # the RV arc on the left
        in_arc = (np.mod(screen_angle, 360) > upper_deg) & (np.mod(screen_angle, 360) < lower_deg)
        epicardium_mm = blood_mm + wall_mm
        image[(radius >= epicardium_mm) & (radius < rv_outer_mm) & in_arc] = 0.9
        image[(radius >= blood_mm) & (radius < epicardium_mm)] = 0.3
        image[radius < blood_mm] = 1.0
        mask[(radius >= epicardium_mm) & (radius < rv_outer_mm) & in_arc] = 3
        mask[(radius >= blood_mm) & (radius < epicardium_mm)] = 2
        mask[radius < blood_mm] = 1
        for k, angle in enumerate((upper_deg, lower_deg)):
            landmarks[k] = centre + np.array([-np.sin(np.radians(angle)), np.cos(np.radians(angle))]) * (
                epicardium_mm / spacing_mm)
        landmarks[2] = centre
    image = ndimage.gaussian_filter(image, 0.7) + rng.normal(0, 0.03, image.shape)
    return PhantomSlice(np.abs(image).astype(np.float32) * 1000, (spacing_mm, spacing_mm), landmarks,
                        patient=patient, slice_index=index, mask=mask)


def phantom_slices(n: int, seed: int = 0, empty_fraction: float = 0.2) -> list[PhantomSlice]:
    rng = np.random.default_rng(seed)
    return [phantom_slice(rng, heart=rng.random() >= empty_fraction, patient=f"p{i // 4}", index=i % 4)
            for i in range(n)]
