"""Synthetic images of clinical contrasts no shipped model was trained on: T2, T2* and ECV maps, and T2-weighted
black-blood images. For evaluation only.

Issue #5 asks for short-axis landmarks "on a contrast it has never seen", naming the maps sites run besides MOLLI
T1 (T2, T2*, ECV). The random per-tissue contrast the contrast-agnostic model trains on is one stand-in; these
are others, built like the synthetic T1 maps (:mod:`cmr_landmark.synth.t1`) from the real label maps of the
validation patients, but with each contrast's own published tissue values, so a detection rate on them says how
a model does on a contrast it has not seen rather than on the distribution it was trained on. Never train on
them, or they stop measuring that. (They share the machinery of :mod:`cmr_landmark.synth.tissue_map` with the
synthetic T1 maps, so they are less new to a model trained on those than to one that was not.)

Published values (ranges about +-2 SD around the cited means, widened to cover vendors and sites):

- **T2 map** (T2-prepared bSSFP): native myocardium about 52 ms at 1.5 T and 46 ms at 3 T (pooled means of a
  meta-analysis, Hanson et al., Radiology 2020;297:344; site ranges 45-58 ms, SCMR/EACVI consensus, Messroghli et
  al., JCMR 2017;19:75). Oedema raises it by 10-25 ms (acute injury above ~60 ms at 1.5 T). Blood T2 depends on
  oxygenation: about 250 ms for arterial blood at 1.5 T, less for venous (Wright et al., J Magn Reson Imaging
  1991;1:275), both shorter at 3 T (Zhao et al., Magn Reson Med 2007;58:592); a T2 preparation of 50-60 ms fits
  such values poorly: blood is bright and noisy.
- **T2\\* map** (multi-echo gradient echo): normal myocardium 52 +- 16 ms at 1.5 T, iron overload below 20 ms,
  severe below 10 ms, down to ~4 ms (Anderson et al., Eur Heart J 2001;22:2171); about 0.6 times at 3 T. Liver
  15-35 ms when free of iron. Fits far beyond the last echo time (~18 ms) are unreliable, so maps clip at 200 ms.
- **ECV map** (%, from native and post-contrast T1 and the haematocrit): normal myocardium 25.3 +- 3.5 %
  (Haaf et al., JCMR 2016;18:89), oedema and diffuse fibrosis 30-40 %, infarct scar 40-75 %; blood is
  100 (1 - haematocrit), 52-65 %.
- **T2-weighted black blood** (turbo spin echo with double inversion and fat suppression, the kind of T2 image
  MyoPS has): a weighted image, not a map. Blood is nulled (slow flow beside the trabeculae keeps some signal),
  fat suppressed; healthy myocardium 1.2-1.9 times the skeletal muscle's signal, oedema at least twice
  (Friedrich et al., JACC 2009;53:1475); strong surface-coil shading.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..datasets import Slice
from .contrast import LV_BLOOD_LABEL, OEDEMA, RV_BLOOD_LABEL, SCAR, smooth_random_field
from .tissue_map import (
    FIELD_STRENGTHS_T,
    add_fitted_map_look,
    check_field_strength,
    tissue_value_map,
)


@dataclass(frozen=True)
class TissueValues:
    """The values of one synthetic image's tissues, in the contrast's unit."""

    myocardium: float
    lv_blood: float
    rv_blood: float
    oedema: float
    scar: float
    other_tissue_ranges: tuple[tuple[float, float], ...]  # at tissue_map.OTHER_TISSUE_QUANTILES
    air_fill_level_range: tuple[float, float]


@dataclass(frozen=True)
class ClinicalContrast:
    """One contrast: its unit, how its tissue values are drawn and how its acquisition looks."""

    unit: str
    draw_values: Callable[[np.random.Generator, float], TissueValues]  # (rng, field strength T)
    add_look: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]  # (value, mask, rng)
    max_value: float


def _t2_map_values(rng: np.random.Generator, field_strength_t: float) -> TissueValues:
    at_3t = field_strength_t == 3.0
    myocardium = rng.uniform(*((40.0, 52.0) if at_3t else (46.0, 58.0)))
    lv_blood = rng.uniform(*((120.0, 200.0) if at_3t else (180.0, 280.0)))
    return TissueValues(
        myocardium=myocardium, lv_blood=lv_blood,
        rv_blood=lv_blood * rng.uniform(0.55, 0.9),  # venous blood: less oxygen, shorter T2
        oedema=myocardium + rng.uniform(10.0, 25.0), scar=myocardium + rng.uniform(0.0, 10.0),
        # skeletal muscle, liver, fat (bSSFP), spleen and kidney, fluid
        other_tissue_ranges=((30.0, 45.0), (35.0, 55.0), (50.0, 90.0), (60.0, 100.0), (300.0, 1000.0)),
        air_fill_level_range=(100.0, 1000.0))


def _t2star_map_values(rng: np.random.Generator, field_strength_t: float) -> TissueValues:
    scale = 0.6 if field_strength_t == 3.0 else 1.0  # T2* shortens with the field
    myocardium = scale * rng.uniform(4.0, 60.0)  # severe iron overload to normal
    lv_blood = scale * rng.uniform(60.0, 200.0)
    return TissueValues(
        myocardium=myocardium, lv_blood=lv_blood, rv_blood=lv_blood * rng.uniform(0.6, 1.0),
        oedema=myocardium * rng.uniform(1.05, 1.3), scar=myocardium * rng.uniform(0.8, 1.1),
        # lung border and iron-laden tissue, liver, skeletal muscle, fat, fluid
        other_tissue_ranges=tuple((scale * low, scale * high) for low, high in
                                  ((8.0, 25.0), (15.0, 35.0), (20.0, 40.0), (30.0, 80.0), (100.0, 200.0))),
        air_fill_level_range=(50.0, 200.0))


def _ecv_map_values(rng: np.random.Generator, field_strength_t: float) -> TissueValues:
    del field_strength_t  # ECV is a volume fraction: the same at any field
    myocardium = rng.uniform(18.0, 32.0)
    lv_blood = 100.0 * (1.0 - rng.uniform(0.35, 0.48))
    return TissueValues(
        myocardium=myocardium, lv_blood=lv_blood, rv_blood=lv_blood + rng.uniform(-1.5, 1.5),
        oedema=myocardium + rng.uniform(5.0, 15.0), scar=rng.uniform(40.0, 75.0),
        # fat (short T1 before and after contrast: little change), skeletal muscle, liver, spleen, fluid and vessels
        other_tissue_ranges=((0.0, 15.0), (8.0, 20.0), (22.0, 35.0), (30.0, 45.0), (50.0, 100.0)),
        air_fill_level_range=(30.0, 100.0))


def _black_blood_values(rng: np.random.Generator, field_strength_t: float) -> TissueValues:
    del field_strength_t  # a weighted image in arbitrary units
    myocardium = rng.uniform(0.25, 0.4)
    lv_blood = rng.uniform(0.0, 0.08)
    muscle = myocardium / rng.uniform(1.2, 1.9)  # healthy myocardium against skeletal muscle (Friedrich 2009)
    return TissueValues(
        myocardium=myocardium, lv_blood=lv_blood, rv_blood=lv_blood * rng.uniform(0.7, 1.5),
        oedema=muscle * rng.uniform(2.0, 3.0), scar=myocardium * rng.uniform(0.9, 1.3),
        # fat (suppressed), skeletal muscle, liver, spleen and kidney, fluid
        other_tissue_ranges=((0.02, 0.1), (0.95 * muscle, 1.05 * muscle), (0.1, 0.3), (0.3, 0.6), (0.7, 1.0)),
        air_fill_level_range=(0.02, 0.06))


def _fitted_map_look(reference: float, blur_px: tuple[float, float]
                     ) -> Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]:
    """The look of a pixel-wise fit (:func:`tissue_map.add_fitted_map_look`), its noise SD 2-6 % at
    ``reference``."""

    def add_look(value: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        del mask  # a fit's look is the same everywhere
        return add_fitted_map_look(value, rng, blur_px=blur_px, noise_fraction=(0.02, 0.06), reference=reference)

    return add_look


def _black_blood_look(value: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slow-flow signal left in the blood pools, turbo-spin-echo blur, surface-coil shading, Rician noise."""
    blood = (mask == LV_BLOOD_LABEL) | (mask == RV_BLOOD_LABEL)
    if rng.random() < 0.5:
        slow_flow = np.clip(smooth_random_field(mask.shape, rng, scale_px=4.0), 0.0, None)
        value = value + rng.uniform(0.05, 0.2) * slow_flow * blood
    value = ndimage.gaussian_filter(value, sigma=rng.uniform(0.5, 1.2))
    value = value * np.exp(rng.uniform(0.2, 0.5) * smooth_random_field(mask.shape, rng, scale_px=mask.shape[0] / 3))
    sigma = rng.uniform(0.01, 0.04)
    return np.hypot(value + sigma * rng.standard_normal(value.shape), sigma * rng.standard_normal(value.shape))


# The last field is where values are clipped: T2 and T2* fits saturate far beyond their longest echo time (a
# T2 preparation's ~60 ms, a T2* train's ~18 ms), ECV is a percentage, and a weighted image's brightest tissue
# (fluid, 0.7-1.0) under the coil's shading stays below 3.
CLINICAL_CONTRASTS: dict[str, ClinicalContrast] = {
    "t2_map": ClinicalContrast("ms", _t2_map_values, _fitted_map_look(60.0, (0.3, 1.0)), 1000.0),
    "t2star_map": ClinicalContrast("ms", _t2star_map_values, _fitted_map_look(30.0, (0.3, 1.0)), 200.0),
    "ecv_map": ClinicalContrast("%", _ecv_map_values, _fitted_map_look(30.0, (0.5, 1.5)), 100.0),
    "t2w_black_blood": ClinicalContrast("a.u.", _black_blood_values, _black_blood_look, 3.0),
}


def _check_kind(kind: str) -> None:
    if kind not in CLINICAL_CONTRASTS:
        raise ValueError(f"unknown contrast {kind!r}; one of {sorted(CLINICAL_CONTRASTS)}")


def draw_tissue_values(kind: str, rng: np.random.Generator, field_strength_t: float | None = None) -> TissueValues:
    """Random tissue values of contrast ``kind`` (a key of :data:`CLINICAL_CONTRASTS`) at 1.5 or 3 T."""
    _check_kind(kind)
    if field_strength_t is None:
        field_strength_t = float(rng.choice(FIELD_STRENGTHS_T))
    check_field_strength(field_strength_t)
    return CLINICAL_CONTRASTS[kind].draw_values(rng, field_strength_t)


def render_clinical_contrast(
    image: np.ndarray, mask: np.ndarray, kind: str, rng: np.random.Generator, pathology: np.ndarray | None = None,
    values: TissueValues | None = None, rv_wall_fraction: float = 0.0,
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> np.ndarray:
    """An image (H, W, float32, in the contrast's unit) of ``kind`` (a key of :data:`CLINICAL_CONTRASTS`) with the
    geometry of ``image`` and its tissue ``mask``; ``pathology`` marks oedema and scar (MyoPS); ``values``: the
    tissue values to use (default: drawn by :func:`draw_tissue_values`); ``rv_wall_fraction``: the share of images
    whose RV free wall has the myocardium's value (needs ``pixel_spacing_mm``)."""
    _check_kind(kind)
    values = draw_tissue_values(kind, rng) if values is None else values
    contrast = CLINICAL_CONTRASTS[kind]
    value = tissue_value_map(
        image, mask, rng, values.other_tissue_ranges, values.air_fill_level_range, myocardium_value=values.myocardium,
        lv_blood_value=values.lv_blood, rv_blood_value=values.rv_blood,
        lesion_values={OEDEMA: values.oedema, SCAR: values.scar}, pathology=pathology,
        rv_wall_fraction=rv_wall_fraction, pixel_spacing_mm=pixel_spacing_mm)
    value = contrast.add_look(value, np.asarray(mask), rng)
    return np.clip(value, 0.0, contrast.max_value).astype(np.float32)


def clinical_contrast_slices(slices: Sequence[Slice], kind: str, seed: int, rv_wall_fraction: float = 0.0
                             ) -> list[Slice]:
    """One image of ``kind`` of every slice that has a mask (geometry and landmarks kept; ``sequence`` = kind),
    reproducible from ``seed``; each kind draws from a stream of its own, so the kinds of one slice do not share
    a field strength, body curve or noise. ``rv_wall_fraction``: see :func:`render_clinical_contrast`."""
    _check_kind(kind)
    kind_index = list(CLINICAL_CONTRASTS).index(kind)
    return [
        dataclasses.replace(s, image=render_clinical_contrast(s.image, s.mask, kind, np.random.default_rng(
            [seed, kind_index, index]), pathology=s.pathology, rv_wall_fraction=rv_wall_fraction,
            pixel_spacing_mm=s.pixel_spacing_mm), sequence=kind)
        for index, s in enumerate(slices)
        if s.mask is not None
    ]
