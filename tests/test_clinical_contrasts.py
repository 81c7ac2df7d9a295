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
from cmr_landmark.synth.contrast import LV_BLOOD_LABEL, LV_MYOCARDIUM_LABEL, OEDEMA, RV_BLOOD_LABEL, SCAR, rv_wall_mask
from cmr_landmark.synth.t1 import synthetic_t1_slice

# Myocardium in the literature (module docstring): T2 45-58 ms at 1.5 T and ~40-52 ms at 3 T; T2* 52 +- 16 ms
# at 1.5 T when free of iron, down to ~4 ms with severe overload, about 0.6 times at 3 T; ECV 25.3 +- 3.5 %
# whatever the field.
MYOCARDIUM_RANGE = {
    ("t2_map", 1.5): (45.0, 58.0), ("t2_map", 3.0): (40.0, 52.0),
    ("t2star_map", 1.5): (4.0, 84.0), ("t2star_map", 3.0): (2.4, 50.0),
    ("ecv_map", 1.5): (18.0, 32.0), ("ecv_map", 3.0): (18.0, 32.0),
}


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
        assert np.median(image[oedema]) > np.median(image[healthy])
        return
    assert np.median(image[healthy]) == pytest.approx(values.myocardium, rel=0.1)
    assert np.median(image[oedema]) > np.median(image[healthy])
    # the bright (non-trabecular) part of the LV blood pool is at the blood's value
    blood = _core(scar_slice.mask == LV_BLOOD_LABEL)
    assert np.percentile(image[blood], 75) == pytest.approx(values.lv_blood, rel=0.15)


@pytest.mark.parametrize("kind", ["t2_map", "t2star_map", "ecv_map"])
def test_drawn_values_follow_the_literature_at_each_field_strength(kind: str) -> None:
    rng = np.random.default_rng(0)
    draws = {field: [draw_tissue_values(kind, rng, field) for _ in range(300)] for field in (1.5, 3.0)}
    for field, values in draws.items():
        low, high = MYOCARDIUM_RANGE[kind, field]
        assert all(low <= v.myocardium <= high for v in values)
        assert all(v.oedema > v.myocardium for v in values)
    if kind == "ecv_map":  # a volume fraction: blood is 100 (1 - haematocrit), far above the myocardium
        assert all(52.0 <= v.lv_blood <= 65.0 and 40.0 <= v.scar for v in draws[1.5] + draws[3.0])
    else:  # relaxation times shorten at 3 T; blood's are long
        mean = {field: np.mean([v.myocardium for v in values]) for field, values in draws.items()}
        assert mean[3.0] < 0.95 * mean[1.5]
        assert np.median([v.lv_blood / v.myocardium for v in draws[1.5]]) > 2.0


def test_black_blood_myocardium_and_oedema_against_skeletal_muscle() -> None:
    # Friedrich 2009: healthy myocardium 1.2-1.9 times skeletal muscle, oedema at least twice
    rng = np.random.default_rng(1)
    for _ in range(200):
        values = draw_tissue_values("t2w_black_blood", rng)
        muscle = np.mean(values.other_tissue_ranges[1])
        assert 1.2 <= values.myocardium / muscle <= 1.9
        assert values.oedema / muscle >= 2.0
        assert values.lv_blood < 0.35 * values.myocardium


def test_ecv_scar_is_where_the_labels_put_it(scar_slice: Slice) -> None:
    rng = np.random.default_rng(2)
    values = draw_tissue_values("ecv_map", rng)
    image = render_clinical_contrast(scar_slice.image, scar_slice.mask, "ecv_map", rng,
                                     pathology=scar_slice.pathology, values=values)
    scar = _core((scar_slice.mask == LV_MYOCARDIUM_LABEL) & (scar_slice.pathology == SCAR))
    assert np.median(image[scar]) == pytest.approx(values.scar, rel=0.1)


def test_fit_noise_grows_with_the_value_as_the_map_look_draws_it() -> None:
    # the T2 map's look: noise SD at 250 ms (blood) against 50 ms (myocardium) is (250 / 50) ** 2 = 25 times
    look = CLINICAL_CONTRASTS["t2_map"].add_look
    flat = np.ones((96, 96), dtype=bool)
    sd = [np.std(look(np.full((96, 96), value), flat, np.random.default_rng(3))) for value in (50.0, 250.0)]
    assert sd[1] / sd[0] == pytest.approx(25.0, rel=0.05)
    assert 0.02 * 50 * 50 / 60 * 0.5 < sd[0] < 0.06 * 50 * 50 / 60  # 2-6 % at 60 ms, less the blur's smoothing


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
    # each kind draws from a stream of its own (seed, kind, slice), so the kinds of a slice share no noise
    for kind_index, kind in enumerate(CLINICAL_CONTRASTS):
        made = clinical_contrast_slices(stack[:1], kind, seed=6)[0].image
        np.testing.assert_array_equal(made, render_clinical_contrast(
            stack[0].image, stack[0].mask, kind, np.random.default_rng([6, kind_index, 0]),
            pathology=stack[0].pathology))


def test_bad_input_is_refused(scar_slice: Slice) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown contrast"):
        draw_tissue_values("perfusion", rng)
    with pytest.raises(ValueError, match="unknown contrast"):
        render_clinical_contrast(scar_slice.image, scar_slice.mask, "perfusion", rng,
                                 values=draw_tissue_values("t2_map", rng))
    with pytest.raises(ValueError, match="unknown contrast"):
        clinical_contrast_slices([scar_slice], "perfusion", seed=0)
    with pytest.raises(ValueError, match="field strength"):
        draw_tissue_values("t2_map", rng, field_strength_t=7.0)
    with pytest.raises(ValueError, match="one shape"):
        render_clinical_contrast(scar_slice.image, scar_slice.mask[:-1], "ecv_map", rng)
    with pytest.raises(ValueError, match="pathology"):
        render_clinical_contrast(scar_slice.image, scar_slice.mask, "ecv_map", rng, pathology=np.zeros((3, 3)))


@pytest.mark.parametrize("kind", [*sorted(CLINICAL_CONTRASTS), "t1_map"])
def test_rv_wall_has_the_myocardium_value_in_every_kind_of_map(scar_slice: Slice, kind: str) -> None:
    # the free wall beside the RV pool (unlabelled) is myocardium in every real map; rv_wall_fraction 1 gives it the
    # myocardium's value
    def render(seed: int, **wall) -> np.ndarray:
        if kind == "t1_map":
            return synthetic_t1_slice(scar_slice, np.random.default_rng(seed), **wall).image
        return render_clinical_contrast(scar_slice.image, scar_slice.mask, kind, np.random.default_rng(seed),
                                        pathology=scar_slice.pathology, **wall)

    wall = rv_wall_mask(scar_slice.mask, scar_slice.pixel_spacing_mm, 2.0)  # inside every drawn wall (2-5 mm)
    myocardium = _core((scar_slice.mask == LV_MYOCARDIUM_LABEL) & (scar_slice.pathology == 0))
    blood = _core(scar_slice.mask == RV_BLOOD_LABEL)

    def wall_to_myocardium(image: np.ndarray) -> float:  # in units of the blood-myocardium contrast
        return abs(np.median(image[wall]) - np.median(image[myocardium])) / abs(
            np.median(image[blood]) - np.median(image[myocardium]))

    with_wall, without = [], []
    for seed in range(6):
        plain = render(seed)
        walled = render(seed, rv_wall_fraction=1.0, **({} if kind == "t1_map" else
                                                       {"pixel_spacing_mm": scar_slice.pixel_spacing_mm}))
        with_wall.append(wall_to_myocardium(walled))
        without.append(wall_to_myocardium(plain))
    assert max(with_wall) < 0.5 and np.mean(with_wall) < np.mean(without)
