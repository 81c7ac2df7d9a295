"""The pieces every synthetic tissue-value image shares (T1 maps, other parameter maps, weighted images).

A labelled SAX slice becomes an image of tissue values: LV and RV blood, myocardium (with oedema and scar where
the MyoPS labels mark them) at the values of the chosen contrast, and everything outside the labels read off a
ladder of body-tissue values through a random curve of the source image, so chest wall, liver and fat keep their
shapes but not their brightness order. Lung and air carry no signal and are either masked to 0 or filled with a
fit's random output. The look of the acquisition (fit noise, blur, motion, coil shading) is added by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .contrast import (
    BACKGROUND_LABEL,
    LV_BLOOD_LABEL,
    LV_MYOCARDIUM_LABEL,
    RV_BLOOD_LABEL,
    draw_rv_wall,
    normalised_source,
    random_curve,
    smooth_random_field,
)

# Tissue outside the labels: the source image goes through a random curve to a "tissue quantile" 0..1 read off a
# ladder of five value ranges at these quantiles, so most of the body lands at soft-tissue values and only a
# little at the top of the ladder (fluid), as in real maps.
OTHER_TISSUE_QUANTILES = (0.0, 0.25, 0.5, 0.7, 1.0)

FIELD_STRENGTHS_T: tuple[float, ...] = (1.5, 3.0)


def check_field_strength(field_strength_t: float) -> None:
    if field_strength_t not in FIELD_STRENGTHS_T:
        raise ValueError(f"field strength must be one of {FIELD_STRENGTHS_T} T, got {field_strength_t}")


def add_fit_noise(value: np.ndarray, noise_fraction_at_reference: float, rng: np.random.Generator,
                  reference: float = 1000.0) -> np.ndarray:
    """Noise of a pixel-wise fit: SD = fraction * value * (value / reference).

    A fit's sampling ends at a few multiples of the parameter it measures (MOLLI's inversion times, a T2
    preparation's echo times), so a long value is fitted from the early part of its curve only and its error grows
    faster than the value itself; slightly correlated because maps are interpolated.
    """
    noise = ndimage.gaussian_filter(rng.standard_normal(value.shape), sigma=0.5)
    noise /= noise.std() or 1.0
    value = np.clip(value, 0.0, None)
    return value + noise_fraction_at_reference * value * (value / reference) * noise


def motion_blur(image: np.ndarray, length_px: float, angle_rad: float) -> np.ndarray:
    """Residual in-plane motion between the images a map is fitted from: a blur ``length_px`` long."""
    if length_px < 0.25:
        return image
    direction = np.array([np.sin(angle_rad), np.cos(angle_rad)])
    steps = np.linspace(-length_px / 2, length_px / 2, 5)
    return np.mean([ndimage.shift(image, step * direction, order=1, mode="nearest") for step in steps], axis=0)


def blood_with_trabeculae(
    source: np.ndarray, inside: np.ndarray, myocardium: np.ndarray, blood_value: float, myocardium_value: float
) -> np.ndarray:
    """Values of the labelled blood pool ``inside``: the blood's, moving to the myocardium's where the source is
    as dark as the myocardium (cine, LGE: blood bright), since papillary muscles and trabeculae lie inside the
    labelled pool and a real image shows them as muscle."""
    blood_level = np.median(source[inside])
    muscle_level = np.median(source[myocardium]) if myocardium.any() else blood_level
    if blood_level - muscle_level < 0.05:
        return np.full(int(inside.sum()), blood_value)
    muscle_fraction = np.clip((blood_level - source[inside]) / (blood_level - muscle_level), 0.0, 1.0)
    return blood_value + muscle_fraction * (myocardium_value - blood_value)


def add_fitted_map_look(value: np.ndarray, rng: np.random.Generator, blur_px: tuple[float, float],
                        noise_fraction: tuple[float, float], reference: float) -> np.ndarray:
    """The look of a pixel-wise fit over several images, drawn at random: blur (Gaussian sigma in ``blur_px``),
    residual motion (0-3 px), and :func:`add_fit_noise` with a fraction in ``noise_fraction`` at ``reference``."""
    value = ndimage.gaussian_filter(value, sigma=rng.uniform(*blur_px))
    value = motion_blur(value, rng.uniform(0.0, 3.0), rng.uniform(0.0, np.pi))
    return add_fit_noise(value, rng.uniform(*noise_fraction), rng, reference=reference)


def fill_air(value: np.ndarray, source: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
             fill_level_range: tuple[float, float]) -> None:
    """Lung and air (dark in the ``source`` scaled 0..1 by ``contrast.normalised_source``, outside ``mask``) have
    no signal to fit: scanners either mask them to 0 or show the fit's random output, uniform from 0 up to a level
    drawn from ``fill_level_range``. Sets ``value`` in place."""
    air = (ndimage.gaussian_filter(source, 1.0) < rng.uniform(0.03, 0.1)) & (np.asarray(mask) == BACKGROUND_LABEL)
    if rng.random() < 0.3:
        value[air] = 0.0
    else:
        value[air] = rng.uniform(0.0, rng.uniform(*fill_level_range), int(air.sum()))


def tissue_value_map(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    other_tissue_ranges: Sequence[tuple[float, float]],
    air_fill_level_range: tuple[float, float],
    myocardium_value: float,
    lv_blood_value: float,
    rv_blood_value: float,
    lesion_values: dict[int, float] | None = None,
    pathology: np.ndarray | None = None,
    rv_wall_fraction: float = 0.0,
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> np.ndarray:
    """Tissue values (H, W, float64) of one synthetic image, before the acquisition's look is added.

    ``other_tissue_ranges``: one (low, high) per :data:`OTHER_TISSUE_QUANTILES`; ``air_fill_level_range``: air, when
    not masked to 0, gets uniform random values from 0 up to a level drawn from this range;
    ``lesion_values``: value per pathology code (:data:`synth.contrast.OEDEMA`, :data:`synth.contrast.SCAR`)
    inside the myocardium;
    ``rv_wall_fraction``: the share of images whose RV free wall (:func:`synth.contrast.draw_rv_wall`, needs
    ``pixel_spacing_mm``) gets the myocardium's value.
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 2 or image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be 2-D arrays of one shape")
    if pathology is not None and np.shape(pathology) != mask.shape:
        raise ValueError(f"pathology map {np.shape(pathology)} does not match the mask {mask.shape}")
    if len(other_tissue_ranges) != len(OTHER_TISSUE_QUANTILES):
        raise ValueError(f"need {len(OTHER_TISSUE_QUANTILES)} other-tissue ranges, got {len(other_tissue_ranges)}")
    source = normalised_source(image)

    ladder = np.sort([rng.uniform(low, high) for low, high in other_tissue_ranges])
    x, y = random_curve(rng, 0.0, 1.0)
    value = np.interp(np.interp(source, x, y), OTHER_TISSUE_QUANTILES, ladder)

    fill_air(value, source, mask, rng, air_fill_level_range)

    myocardium = mask == LV_MYOCARDIUM_LABEL
    texture = 1.0 + 0.02 * smooth_random_field(mask.shape, rng, scale_px=3.0)
    value[myocardium] = myocardium_value * texture[myocardium]
    rv_wall = draw_rv_wall(mask, pixel_spacing_mm, rng, rv_wall_fraction)
    if rv_wall is not None:
        value[rv_wall] = myocardium_value * texture[rv_wall]
    if pathology is not None:
        pathology = np.asarray(pathology)
        for code, lesion_value in (lesion_values or {}).items():
            lesion = myocardium & (pathology == code)
            value[lesion] = lesion_value * texture[lesion]
    for label, blood_value in ((LV_BLOOD_LABEL, lv_blood_value), (RV_BLOOD_LABEL, rv_blood_value)):
        inside = mask == label
        if inside.any():
            value[inside] = blood_with_trabeculae(source, inside, myocardium, blood_value, myocardium_value)
    return value
