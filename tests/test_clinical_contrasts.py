"""Evaluation-only clinical contrasts (T2, T2*, ECV maps, T2-weighted black blood) on the real MyoPS fixture slice
with scar and oedema: each carries its contrast's published tissue values where the labels put them."""

from __future__ import annotations

import numpy as np
import pytest
from myops_stack import load_myops_stack
from scipy import ndimage

from cmr_landmark.datasets import Slice
from cmr_landmark.synth.clinical_contrasts import (
    CLINICAL_CONTRASTS,
    clinical_contrast_slices,
    draw_tissue_values,
    render_clinical_contrast,
)
from cmr_landmark.synth.contrast import LV_BLOOD_LABEL, LV_MYOCARDIUM_LABEL, RV_BLOOD_LABEL
from cmr_landmark.synth.tissue_map import OEDEMA, SCAR

# Healthy myocardium in the literature (module docstring), over 1.5 and 3 T: T2 45-58 ms at 1.5 T and ~40-52 ms
# at 3 T; T2* above 20 ms at 1.5 T when free of iron (down to ~6 ms with severe overload, 0.6x at 3 T);
# ECV 25.3 +- 3.5 %.
MYOCARDIUM_RANGE = {"t2_map": (40.0, 58.0), "t2star_map": (6.0, 50.0), "ecv_map": (18.0, 32.0)}


@pytest.fixture(scope="module")
def scar_slice() -> Slice:
    return load_myops_stack()[2]


def _core(region: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(region, iterations=2)


@pytest.mark.parametrize("kind", sorted(CLINICAL_CONTRASTS))
@pytest.mark.parametrize("field_strength_t", [1.5, 3.0])
def test_rendered_image_carries_the_drawn_tissue_values(scar_slice: Slice, kind: str, field_strength_t: float
                                                        ) -> None:
    rng = np.random.default_rng(5)
    values = draw_tissue_values(kind, rng, field_strength_t)
    image = render_clinical_contrast(scar_slice.image, scar_slice.mask, kind, rng, pathology=scar_slice.pathology,
                                     values=values)
    assert image.dtype == np.float32 and image.shape == scar_slice.image.shape
    assert 0.0 <= image.min() and image.max() <= CLINICAL_CONTRASTS[kind].max_value
    myocardium = scar_slice.mask == LV_MYOCARDIUM_LABEL
    healthy = _core(myocardium & (scar_slice.pathology == 0))
    oedema = _core(myocardium & (scar_slice.pathology == OEDEMA))
    if kind == "t2w_black_blood":  # shading, slow flow and Rician noise: only the order of the tissues holds
        blood = _core(scar_slice.mask == LV_BLOOD_LABEL) | _core(scar_slice.mask == RV_BLOOD_LABEL)
        assert np.median(image[blood]) < 0.6 * np.median(image[healthy])
        assert np.median(image[oedema]) > 1.2 * np.median(image[healthy])
        return
    low, high = MYOCARDIUM_RANGE[kind]
    assert low <= values.myocardium <= high
    assert np.median(image[healthy]) == pytest.approx(values.myocardium, rel=0.1)
    assert np.median(image[oedema]) > np.median(image[healthy])
    # the bright (non-trabecular) part of the LV blood pool is at the blood's value, well above the myocardium
    blood = _core(scar_slice.mask == LV_BLOOD_LABEL)
    assert np.percentile(image[blood], 75) == pytest.approx(values.lv_blood, rel=0.15)
    assert values.lv_blood > 1.5 * values.myocardium


def test_ecv_scar_is_in_the_infarct_range(scar_slice: Slice) -> None:
    rng = np.random.default_rng(2)
    values = draw_tissue_values("ecv_map", rng)
    image = render_clinical_contrast(scar_slice.image, scar_slice.mask, "ecv_map", rng,
                                     pathology=scar_slice.pathology, values=values)
    scar = _core((scar_slice.mask == LV_MYOCARDIUM_LABEL) & (scar_slice.pathology == SCAR))
    assert 40.0 <= values.scar <= 75.0
    assert np.median(image[scar]) == pytest.approx(values.scar, rel=0.1)


def test_fit_noise_grows_with_the_value_in_a_t2_map(scar_slice: Slice) -> None:
    # blood (~120-280 ms) is far noisier than myocardium (~50 ms): residual after the smooth tissue values
    rng = np.random.default_rng(11)
    image = render_clinical_contrast(scar_slice.image, scar_slice.mask, "t2_map", rng)
    residual = image - ndimage.median_filter(image, size=5)
    myocardium = _core((scar_slice.mask == LV_MYOCARDIUM_LABEL) & (scar_slice.pathology == 0))
    blood = _core(scar_slice.mask == LV_BLOOD_LABEL)
    assert residual[blood].std() > 3 * residual[myocardium].std()


def test_slices_keep_geometry_and_are_reproducible(scar_slice: Slice) -> None:
    stack = load_myops_stack()
    first = clinical_contrast_slices(stack, "t2_map", seed=6)
    again = clinical_contrast_slices(stack, "t2_map", seed=6)
    other = clinical_contrast_slices(stack, "t2_map", seed=7)
    assert len(first) == len(stack)
    for made, source in zip(first, stack, strict=True):
        assert made.sequence == "t2_map" and source.sequence == "cine"
        np.testing.assert_array_equal(made.landmarks_rc, source.landmarks_rc)
        np.testing.assert_array_equal(made.mask, source.mask)
        assert made.pixel_spacing_mm == source.pixel_spacing_mm
    np.testing.assert_array_equal(first[0].image, again[0].image)
    assert not np.array_equal(first[0].image, other[0].image)
    assert not np.array_equal(first[0].image, first[1].image)


def test_bad_input_is_refused(scar_slice: Slice) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown contrast"):
        draw_tissue_values("perfusion", rng)
    with pytest.raises(ValueError, match="field strength"):
        draw_tissue_values("t2_map", rng, field_strength_t=7.0)
    with pytest.raises(ValueError, match="one shape"):
        render_clinical_contrast(scar_slice.image, scar_slice.mask[:-1], "ecv_map", rng)
    with pytest.raises(ValueError, match="pathology"):
        render_clinical_contrast(scar_slice.image, scar_slice.mask, "ecv_map", rng, pathology=np.zeros((3, 3)))
