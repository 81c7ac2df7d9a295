"""Synthetic MOLLI T1 maps (ms) from labelled short-axis images, for training a T1 landmark model.

No labelled T1 maps are public, so maps are synthesised from real SAX label maps: each labelled tissue gets a
T1 drawn from published MOLLI ranges, the rest of the image is the source image passed through a random curve
into plausible T1, and then the map gets the look of a pixel-wise fit: blur from residual motion, noise that
grows with T1, clipping to the scanner's 12-bit ms scale.

Published values used (MOLLI; ranges are about +-2 SD around the cited means, widened to cover vendors):

- Native myocardium: 950 +- 21 ms at 1.5 T and 1052 +- 23 ms at 3 T (Philips, Dabir et al., JCMR 2014;16:69);
  996 +- 31 ms at 1.5 T and 1184 +- 38 ms at 3 T (Siemens MOLLI 5(3)3, Granitz et al., Wien Klin Wochenschr
  2019;131:143); 1017 +- 24 ms at 1.5 T (aus dem Siepen et al., Open Heart 2018;5:e000717).
  Used: 1.5 T 920-1060 ms, 3 T 1020-1260 ms.
- Native blood: longer than myocardium by ~600 ms at 1.5 T, depends on haematocrit; ~1550-1650 ms at 1.5 T and
  ~1800-2000 ms at 3 T (typical MOLLI values, SCMR/EACVI consensus, Messroghli et al., JCMR 2017;19:75).
  Used: 1.5 T 1500-1700 ms, 3 T 1750-2000 ms.
- Post-contrast (10-20 min after gadolinium): blood 250-400 ms at 1.5 T (longer at 3 T); myocardium follows
  from the partition coefficient lambda = dR1_myocardium / dR1_blood, 0.44 +- 0.06 in health (Dabir 2014; ECV
  0.25 +- 0.04), giving myocardium 334-654 ms at 1.5 T (95% of draws 372-593; aus dem Siepen 2018 measured
  426 +- 38 ms at 1.5 T after 0.2 mmol/kg) and 370-756 ms at 3 T (95% of draws 417-677).
- Oedema: native T1 raised by 100-200 ms (acute injury, consensus 2017), lambda raised by 0.15-0.35 over the
  slice's healthy myocardium (more extracellular water), so post-contrast it is always shorter than healthy.
- Scar (infarct): native T1 raised by 150-350 ms; ECV ~0.5-0.8, modelled as lambda raised by 0.5-0.8 over
  the healthy myocardium's (0.8-1.4): post-contrast T1 falls to about the blood's, why scar is bright on LGE.
- Fat 250-400 ms (short whatever the field), fluid 2500-4000 ms; lung and air give no fit: noise or zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..datasets import Slice
from .contrast import (
    LV_BLOOD_LABEL,
    OEDEMA,
    RV_BLOOD_LABEL,
    SCAR,
    add_uneven_blood,
    draw_infarct,
    has_lesions,
    normalised_source,
)
from .tissue_map import (
    FIELD_STRENGTHS_T,
    add_fit_noise,
    add_fitted_map_look,
    check_field_strength,
    fill_air,
    motion_blur,
    tissue_value_map,
)

MYOCARDIUM_NATIVE_T1_MS: dict[float, tuple[float, float]] = {1.5: (920.0, 1060.0), 3.0: (1020.0, 1260.0)}
BLOOD_NATIVE_T1_MS: dict[float, tuple[float, float]] = {1.5: (1500.0, 1700.0), 3.0: (1750.0, 2000.0)}
BLOOD_POST_CONTRAST_T1_MS: dict[float, tuple[float, float]] = {1.5: (250.0, 400.0), 3.0: (280.0, 450.0)}
# The share of post-contrast maps where the scenario is left to chance: native maps are most of what the AHA model
# is reported on; post-contrast maps are the other half of an ECV pair.
POST_CONTRAST_PROBABILITY = 0.35
INFARCT_STREAM = 1  # the last word of a drawn infarct's seed in synthetic_t1_slices, apart from the map's own
PARTITION_COEFFICIENT_NORMAL = (0.32, 0.56)  # lambda 0.44 +- 2 SD (Dabir 2014)
OEDEMA_NATIVE_RISE_MS = (100.0, 200.0)
OEDEMA_PARTITION_RISE = (0.15, 0.35)
SCAR_NATIVE_RISE_MS = (150.0, 350.0)
SCAR_PARTITION_RISE = (0.5, 0.8)
FAT_T1_MS = (250.0, 400.0)
FLUID_T1_MS = (2500.0, 4000.0)
# Tissue outside the labels, read off at tissue_map.OTHER_TISSUE_QUANTILES: fat, liver, skeletal muscle, spleen
# and kidney, fluid. Post-contrast everything shortens but fat (and fluid least).
OTHER_TISSUE_NATIVE_T1_MS = (FAT_T1_MS, (500.0, 850.0), (900.0, 1400.0), (1100.0, 1900.0), FLUID_T1_MS)
OTHER_TISSUE_POST_CONTRAST_T1_MS = ((200.0, 350.0), (250.0, 450.0), (400.0, 800.0), (400.0, 700.0), (800.0, 2500.0))
# Siemens and Gadgetron T1 maps store ms in 12 bits.
MAX_T1_MS = 4095.0


@dataclass(frozen=True)
class T1Scenario:
    """The T1 values (ms) of one synthetic map's labelled tissues and the look of its fit."""

    field_strength_t: float
    post_contrast: bool
    lv_blood_t1_ms: float
    rv_blood_t1_ms: float
    myocardium_t1_ms: float
    oedema_t1_ms: float
    scar_t1_ms: float
    noise_fraction_at_1000_ms: float  # fit noise SD / T1 at T1 = 1000 ms; SD grows as T1**2
    blur_px: float  # resolution loss of MOLLI against the source image, Gaussian sigma
    motion_px: float  # residual in-plane motion between the inversion images, blur length
    motion_angle_rad: float


def _post_contrast_t1_ms(native_t1_ms: float, partition: float, blood_native_ms: float, blood_post_ms: float) -> float:
    # R1 rises by lambda times the blood's rise (fast water exchange model behind ECV mapping).
    delta_r1_blood = 1.0 / blood_post_ms - 1.0 / blood_native_ms
    return 1.0 / (1.0 / native_t1_ms + partition * delta_r1_blood)


def draw_t1_scenario(
    rng: np.random.Generator, field_strength_t: float | None = None, post_contrast: bool | None = None,
    post_contrast_probability: float = POST_CONTRAST_PROBABILITY,
) -> T1Scenario:
    """Random tissue T1 values within the published ranges above (1.5 or 3 T, native or post-contrast, the latter
    with ``post_contrast_probability`` where ``post_contrast`` is None)."""
    if field_strength_t is None:
        field_strength_t = float(rng.choice(FIELD_STRENGTHS_T))
    check_field_strength(field_strength_t)
    if post_contrast is None:  # one draw whatever the probability: at the default every earlier map is as it was
        post_contrast = bool(rng.random() < post_contrast_probability)
    myocardium_native = rng.uniform(*MYOCARDIUM_NATIVE_T1_MS[field_strength_t])
    blood_native = rng.uniform(*BLOOD_NATIVE_T1_MS[field_strength_t])
    oedema_native = myocardium_native + rng.uniform(*OEDEMA_NATIVE_RISE_MS)
    scar_native = myocardium_native + rng.uniform(*SCAR_NATIVE_RISE_MS)
    if post_contrast:
        blood = rng.uniform(*BLOOD_POST_CONTRAST_T1_MS[field_strength_t])
        partition = rng.uniform(*PARTITION_COEFFICIENT_NORMAL)
        myocardium = _post_contrast_t1_ms(myocardium_native, partition, blood_native, blood)
        oedema_partition = partition + rng.uniform(*OEDEMA_PARTITION_RISE)
        oedema = _post_contrast_t1_ms(oedema_native, oedema_partition, blood_native, blood)
        scar = _post_contrast_t1_ms(scar_native, partition + rng.uniform(*SCAR_PARTITION_RISE), blood_native, blood)
    else:
        blood, myocardium, oedema, scar = blood_native, myocardium_native, oedema_native, scar_native
    return T1Scenario(
        field_strength_t=field_strength_t,
        post_contrast=post_contrast,
        lv_blood_t1_ms=float(blood),
        rv_blood_t1_ms=float(blood * rng.uniform(0.97, 1.03)),  # same blood; inflow and fit bias differ a little
        myocardium_t1_ms=float(myocardium),
        oedema_t1_ms=float(oedema),
        scar_t1_ms=float(scar),
        noise_fraction_at_1000_ms=float(rng.uniform(0.01, 0.035)),
        blur_px=float(rng.uniform(0.3, 1.0)),
        motion_px=float(rng.uniform(0.0, 3.0)),
        motion_angle_rad=float(rng.uniform(0.0, np.pi)),
    )


def render_t1_map(
    image: np.ndarray,
    mask: np.ndarray,
    scenario: T1Scenario,
    rng: np.random.Generator,
    pathology: np.ndarray | None = None,
    max_t1_ms: float = MAX_T1_MS,
    uneven_blood_fraction: float = 0.0,
    rv_wall_fraction: float = 0.0,
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> np.ndarray:
    """A synthetic MOLLI T1 map (H, W) float32 in ms from a source image, its tissue ``mask`` and ``scenario``.

    ``pathology`` (H, W): :data:`OEDEMA` / :data:`SCAR` inside the myocardium (MyoPS), else none.
    ``uneven_blood_fraction``: the share of maps whose blood pools get patches of T1 toward the myocardium's
    (:func:`synth.contrast.add_uneven_blood`: inflowing blood that a MOLLI inversion did not reach, a fit failing
    in slow flow). ``rv_wall_fraction``: the share whose RV free wall has the myocardium's T1
    (:func:`synth.tissue_map.tissue_value_map`, needs ``pixel_spacing_mm``).
    """
    lesion_values = {OEDEMA: scenario.oedema_t1_ms, SCAR: scenario.scar_t1_ms}
    t1_ms = tissue_value_map(
        image, mask, rng,
        OTHER_TISSUE_POST_CONTRAST_T1_MS if scenario.post_contrast else OTHER_TISSUE_NATIVE_T1_MS,
        air_fill_level_range=(500.0, max_t1_ms), myocardium_value=scenario.myocardium_t1_ms,
        lv_blood_value=scenario.lv_blood_t1_ms, rv_blood_value=scenario.rv_blood_t1_ms,
        lesion_values=lesion_values, pathology=pathology, rv_wall_fraction=rv_wall_fraction,
        pixel_spacing_mm=pixel_spacing_mm)
    add_uneven_blood(t1_ms, mask, scenario.myocardium_t1_ms,
                     {LV_BLOOD_LABEL: scenario.lv_blood_t1_ms, RV_BLOOD_LABEL: scenario.rv_blood_t1_ms}, rng,
                     uneven_blood_fraction)
    t1_ms = ndimage.gaussian_filter(t1_ms, sigma=scenario.blur_px)
    t1_ms = motion_blur(t1_ms, scenario.motion_px, scenario.motion_angle_rad)
    t1_ms = add_fit_noise(t1_ms, scenario.noise_fraction_at_1000_ms, rng)
    return np.clip(t1_ms, 0.0, max_t1_ms).astype(np.float32)


def with_fitted_map_look(image: np.ndarray, source: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                         ) -> np.ndarray:
    """``image`` (H, W, about 0..1; a random-contrast copy, say) given the look of a pixel-wise fitted parameter
    map of any kind (T1, T2, T2*, ECV), not its tissue values: the blur and residual motion of a fit over several
    images, noise that grows with the fitted value, and air (dark in the real ``source`` image, outside ``mask``)
    masked to 0 or filled with the fit's random output, as :func:`render_t1_map` does for T1 maps."""
    value_ms = 2000.0 * np.clip(np.asarray(image, dtype=np.float64), 0.0, None)  # the T1 fit's noise model in ms
    value_ms = add_fitted_map_look(value_ms, rng, blur_px=(0.3, 1.0), noise_fraction=(0.01, 0.035), reference=1000.0)
    fill_air(value_ms, normalised_source(source), mask, rng, (500.0, 4000.0))
    return (np.clip(value_ms, 0.0, None) / 2000.0).astype(np.float32)


def as_scanner_uint16(t1_ms: np.ndarray) -> np.ndarray:
    """A T1 map as scanners write it: whole ms in unsigned 16-bit."""
    return np.rint(np.clip(t1_ms, 0.0, np.iinfo(np.uint16).max)).astype(np.uint16)


def synthetic_t1_slice(
    slice_: Slice,
    rng: np.random.Generator,
    field_strength_t: float | None = None,
    post_contrast: bool | None = None,
    as_uint16: bool = False,
    uneven_blood_fraction: float = 0.0,
    rv_wall_fraction: float = 0.0,
    post_contrast_probability: float = POST_CONTRAST_PROBABILITY,
    infarct_fraction: float = 0.0,
    infarct_rng: np.random.Generator | None = None,
) -> Slice:
    """A copy of a labelled SAX :class:`cmr_landmark.datasets.Slice` whose image is a synthetic T1 map (ms).

    Geometry, landmarks and ``pathology`` (the source's lesion labels) are those of the source slice; ``sequence``
    becomes "t1". ``uneven_blood_fraction``, ``rv_wall_fraction``: see :func:`render_t1_map`;
    ``post_contrast_probability``: see :func:`draw_t1_scenario`. The map always shows the slice's labelled scar and
    oedema; ``infarct_fraction`` of the slices without any get an infarct drawn in
    (:func:`synth.contrast.draw_infarct`), from ``infarct_rng`` when given (the same map plus an infarct, as the
    evaluation sets want it), else from ``rng`` after the scenario (the training draws).
    """
    if slice_.mask is None:
        raise ValueError(f"slice {slice_.patient}/{slice_.slice_index} has no label mask to synthesise a T1 map from")
    scenario = draw_t1_scenario(rng, field_strength_t, post_contrast, post_contrast_probability)
    pathology = slice_.pathology
    infarct_rng = rng if infarct_rng is None else infarct_rng
    # no draw at fraction 0, nor for a slice with lesion labels: every earlier recipe's maps as they were
    if infarct_fraction and not has_lesions(pathology) and infarct_rng.random() < infarct_fraction:
        pathology = draw_infarct(slice_.mask, infarct_rng)
    t1_ms = render_t1_map(slice_.image, slice_.mask, scenario, rng, pathology=pathology,
                          uneven_blood_fraction=uneven_blood_fraction, rv_wall_fraction=rv_wall_fraction,
                          pixel_spacing_mm=slice_.pixel_spacing_mm)
    image = as_scanner_uint16(t1_ms) if as_uint16 else t1_ms
    return dataclasses.replace(slice_, image=image, sequence="t1")


def synthetic_t1_slices(slices: Sequence[Slice], seed: int, copies: int = 1, uneven_blood_fraction: float = 0.0,
                        rv_wall_fraction: float = 0.0, post_contrast: bool | None = None,
                        infarct_fraction: float = 0.0) -> list[Slice]:
    """``copies`` synthetic T1 maps of every slice that has a mask, reproducible from ``seed``; ``post_contrast``
    None: native or post-contrast at random (:func:`draw_t1_scenario`), else every map that one. Infarcts
    (``infarct_fraction``) are drawn from a stream of their own: each map is the one drawn without them, plus the
    infarct."""
    return [
        synthetic_t1_slice(s, np.random.default_rng([seed, index, copy]), post_contrast=post_contrast,
                           uneven_blood_fraction=uneven_blood_fraction, rv_wall_fraction=rv_wall_fraction,
                           infarct_fraction=infarct_fraction,
                           infarct_rng=np.random.default_rng([seed, index, copy, INFARCT_STREAM]))
        for index, s in enumerate(slices)
        if s.mask is not None
        for copy in range(copies)
    ]
