"""Synthetic images of clinical contrasts no shipped model was trained on: T2, T2* and ECV maps, and T2-weighted
black-blood (STIR) images. For evaluation only.

Issue #5 asks for short-axis landmarks "on a contrast it has never seen", naming the maps sites run besides MOLLI
T1 (T2, T2*, ECV). The random per-tissue contrast the contrast-agnostic model trains on is one stand-in; these
are others, built like the synthetic T1 maps (:mod:`cmr_landmark.synth.t1`) from the real label maps of the
validation patients, but with each contrast's own published tissue values, so a detection rate on them says how
a model does on a contrast it has not seen rather than on the distribution it was trained on. Never train on
them, or they stop measuring that.

Published values (ranges about +-2 SD around the cited means, widened to cover vendors and sites):

- **T2 map** (T2-prepared bSSFP): native myocardium ~52 ms at 1.5 T and ~46 ms at 3 T (Granitz et al., Wien
  Klin Wochenschr 2019;131:143; site ranges 45-58 ms, SCMR/EACVI consensus, Messroghli et al., JCMR 2017;19:75).
  Oedema raises it by 10-25 ms (acute injury above ~60 ms at 1.5 T). Blood T2 depends on oxygenation: arterial
  ~250 ms at 1.5 T, venous shorter, both shorter at 3 T (Zhao et al., Magn Reson Med 2007;58:592), and a T2
  preparation of 50-60 ms fits such values poorly: blood is bright and noisy.
- **T2\\* map** (multi-echo gradient echo): normal myocardium above 20 ms at 1.5 T, 33 ms on average with
  black-blood echoes (Westwood et al., J Magn Reson Imaging 2003;18:33); iron overload below 20, severe below
  10 ms (Anderson et al., Eur Heart J 2001;22:2171); about 0.6 times at 3 T. Liver 15-35 ms when free of iron.
  Fits above the last echo's time are unreliable, so maps clip at ~200 ms.
- **ECV map** (%, from native and post-contrast T1 and the haematocrit): normal myocardium 25.3 +- 3.5 %
  (Haaf et al., JCMR 2016;18:89), oedema and diffuse fibrosis 30-40 %, infarct scar 40-75 %; blood is
  100 (1 - haematocrit), 52-65 %.
- **T2-weighted black blood** (STIR turbo spin echo, the MyoPS T2 sequence): a weighted image, not a map. Blood
  is nulled by the double inversion (slow flow beside the trabeculae keeps some signal), fat by the short-tau
  inversion; oedema at least twice the skeletal muscle's signal against 1.2-1.9 times for healthy myocardium
  (Friedrich et al., JACC 2009;53:1475); strong surface-coil shading.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..datasets import Slice
from .contrast import LV_BLOOD_LABEL, RV_BLOOD_LABEL, smooth_random_field
from .tissue_map import OEDEMA, SCAR, add_fit_noise, motion_blur, tissue_value_map

FIELD_STRENGTHS_T: tuple[float, ...] = (1.5, 3.0)


@dataclass(frozen=True)
class TissueValues:
    """The values of one synthetic image's tissues, in the contrast's unit."""

    myocardium: float
    lv_blood: float
    rv_blood: float
    oedema: float
    scar: float
    other_tissue_ranges: tuple[tuple[float, float], ...]  # at tissue_map.OTHER_TISSUE_QUANTILES
    air_fill_level: tuple[float, float]


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
        air_fill_level=(100.0, 1000.0))


def _t2star_map_values(rng: np.random.Generator, field_strength_t: float) -> TissueValues:
    scale = 0.6 if field_strength_t == 3.0 else 1.0  # T2* shortens with the field
    myocardium = scale * rng.uniform(10.0, 50.0)  # iron overload to normal
    lv_blood = scale * rng.uniform(60.0, 200.0)
    return TissueValues(
        myocardium=myocardium, lv_blood=lv_blood, rv_blood=lv_blood * rng.uniform(0.6, 1.0),
        oedema=myocardium * rng.uniform(1.05, 1.3), scar=myocardium * rng.uniform(0.8, 1.1),
        # lung border and iron-laden tissue, liver, skeletal muscle, fat, fluid
        other_tissue_ranges=tuple((scale * low, scale * high) for low, high in
                                  ((8.0, 25.0), (15.0, 35.0), (20.0, 40.0), (30.0, 80.0), (100.0, 200.0))),
        air_fill_level=(50.0, 200.0))


def _ecv_map_values(rng: np.random.Generator, field_strength_t: float) -> TissueValues:
    del field_strength_t  # ECV is a volume fraction: the same at any field
    myocardium = rng.uniform(20.0, 31.0)
    lv_blood = 100.0 * (1.0 - rng.uniform(0.35, 0.48))
    return TissueValues(
        myocardium=myocardium, lv_blood=lv_blood, rv_blood=lv_blood + rng.uniform(-1.5, 1.5),
        oedema=myocardium + rng.uniform(5.0, 15.0), scar=rng.uniform(40.0, 75.0),
        # fat (short T1 before and after contrast: little change), skeletal muscle, liver, spleen, fluid and vessels
        other_tissue_ranges=((0.0, 15.0), (8.0, 20.0), (22.0, 35.0), (30.0, 45.0), (50.0, 100.0)),
        air_fill_level=(30.0, 100.0))


def _black_blood_values(rng: np.random.Generator, field_strength_t: float) -> TissueValues:
    del field_strength_t  # a weighted image in arbitrary units
    myocardium = rng.uniform(0.25, 0.4)
    lv_blood = rng.uniform(0.0, 0.08)
    return TissueValues(
        myocardium=myocardium, lv_blood=lv_blood, rv_blood=lv_blood * rng.uniform(0.7, 1.5),
        oedema=myocardium * rng.uniform(1.5, 2.2), scar=myocardium * rng.uniform(0.9, 1.3),
        # fat (suppressed), skeletal muscle, liver, spleen and kidney, fluid
        other_tissue_ranges=((0.02, 0.1), (0.12, 0.28), (0.1, 0.3), (0.3, 0.6), (0.7, 1.0)),
        air_fill_level=(0.02, 0.06))


def _fitted_map_look(reference: float, blur_px: tuple[float, float]
                     ) -> Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]:
    """The look of a pixel-wise fit: blur, residual motion, noise growing with the value (SD at ``reference``
    is 2-6 % of it)."""

    def add_look(value: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        del mask  # a fit's look is the same everywhere
        value = ndimage.gaussian_filter(value, sigma=rng.uniform(*blur_px))
        value = motion_blur(value, rng.uniform(0.0, 3.0), rng.uniform(0.0, np.pi))
        return add_fit_noise(value, rng.uniform(0.02, 0.06), rng, reference=reference)

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


CLINICAL_CONTRASTS: dict[str, ClinicalContrast] = {
    "t2_map": ClinicalContrast("ms", _t2_map_values, _fitted_map_look(60.0, (0.3, 1.0)), 1000.0),
    "t2star_map": ClinicalContrast("ms", _t2star_map_values, _fitted_map_look(30.0, (0.3, 1.0)), 200.0),
    "ecv_map": ClinicalContrast("%", _ecv_map_values, _fitted_map_look(30.0, (0.5, 1.5)), 100.0),
    "t2w_black_blood": ClinicalContrast("a.u.", _black_blood_values, _black_blood_look, 1.5),
}


def draw_tissue_values(kind: str, rng: np.random.Generator, field_strength_t: float | None = None) -> TissueValues:
    """Random tissue values of contrast ``kind`` (a key of :data:`CLINICAL_CONTRASTS`) at 1.5 or 3 T."""
    if kind not in CLINICAL_CONTRASTS:
        raise ValueError(f"unknown contrast {kind!r}; one of {sorted(CLINICAL_CONTRASTS)}")
    if field_strength_t is None:
        field_strength_t = float(rng.choice(FIELD_STRENGTHS_T))
    if field_strength_t not in FIELD_STRENGTHS_T:
        raise ValueError(f"field strength must be one of {FIELD_STRENGTHS_T} T, got {field_strength_t}")
    return CLINICAL_CONTRASTS[kind].draw_values(rng, field_strength_t)


def render_clinical_contrast(
    image: np.ndarray, mask: np.ndarray, kind: str, rng: np.random.Generator, pathology: np.ndarray | None = None,
    values: TissueValues | None = None,
) -> np.ndarray:
    """An image (H, W, float32, in the contrast's unit) of ``kind`` (a key of :data:`CLINICAL_CONTRASTS`) with the
    geometry of ``image`` and its tissue ``mask``; ``pathology`` marks oedema and scar (MyoPS); ``values``: the
    tissue values to use (default: drawn by :func:`draw_tissue_values`)."""
    values = draw_tissue_values(kind, rng) if values is None else values
    contrast = CLINICAL_CONTRASTS[kind]
    value = tissue_value_map(
        image, mask, rng, values.other_tissue_ranges, values.air_fill_level, myocardium_value=values.myocardium,
        lv_blood_value=values.lv_blood, rv_blood_value=values.rv_blood,
        lesion_values={OEDEMA: values.oedema, SCAR: values.scar}, pathology=pathology)
    value = contrast.add_look(value, np.asarray(mask), rng)
    return np.clip(value, 0.0, contrast.max_value).astype(np.float32)


def clinical_contrast_slices(slices: Sequence[Slice], kind: str, seed: int) -> list[Slice]:
    """One image of ``kind`` of every slice that has a mask (geometry and landmarks kept; ``sequence`` = kind),
    reproducible from ``seed``."""
    return [
        dataclasses.replace(s, image=render_clinical_contrast(s.image, s.mask, kind, np.random.default_rng(
            [seed, index]), pathology=s.pathology), sequence=kind)
        for index, s in enumerate(slices)
        if s.mask is not None
    ]
