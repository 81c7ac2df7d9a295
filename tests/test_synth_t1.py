"""Synthetic MOLLI T1 maps and random tissue contrast, on a real MyoPS slice with scar and oedema (fixture)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from myops_stack import load_myops_stack
from scipy import ndimage
from script_modules import load_script

import cmr_landmark.synth.contrast as contrast_module
from cmr_landmark.datasets import Slice
from cmr_landmark.landmarks import derive_sax_landmarks
from cmr_landmark.synth.contrast import (
    BACKGROUND_LABEL,
    LV_BLOOD_LABEL,
    LV_MYOCARDIUM_LABEL,
    MIN_MYOCARDIUM_BLOOD_CONTRAST,
    RV_BLOOD_LABEL,
    add_infarct,
    add_myocardial_lesions,
    add_uneven_blood,
    draw_infarct,
    draw_rv_wall,
    random_contrast_slices,
    random_curve,
    random_tissue_contrast,
    rv_wall_mask,
    uneven_blood_signal,
    with_random_contrast,
)
from cmr_landmark.synth.t1 import (
    BLOOD_NATIVE_T1_MS,
    BLOOD_POST_CONTRAST_T1_MS,
    FIELD_STRENGTHS_T,
    MAX_T1_MS,
    MYOCARDIUM_NATIVE_T1_MS,
    OEDEMA,
    OEDEMA_NATIVE_RISE_MS,
    POST_CONTRAST_PROBABILITY,
    SCAR,
    SCAR_NATIVE_RISE_MS,
    add_fit_noise,
    draw_t1_scenario,
    render_t1_map,
    synthetic_t1_slice,
    synthetic_t1_slices,
    with_fitted_map_look,
)

# Post-contrast myocardium in the literature: 426 +- 38 ms at 1.5 T (aus dem Siepen 2018), 350-550 ms across
# doses (0.1-0.2 mmol/kg) and delays (consensus 2017), up to ~650 ms at the low dose; 3 T maps run ~100 ms longer.
POST_CONTRAST_MYOCARDIUM_MS = {1.5: (330.0, 650.0), 3.0: (360.0, 750.0)}


@pytest.fixture(scope="module")
def scar_slice() -> Slice:
    """The stack's slice with the most scar and oedema."""
    return load_myops_stack()[2]


def _core(region: np.ndarray) -> np.ndarray:
    """The region less its border pixels (away from blur across tissue edges)."""
    return ndimage.binary_erosion(region, iterations=2)


def test_fixture_has_every_tissue_and_both_lesions(scar_slice: Slice) -> None:
    for label in (LV_BLOOD_LABEL, LV_MYOCARDIUM_LABEL, RV_BLOOD_LABEL):
        assert (scar_slice.mask == label).sum() > 100
    for code in (OEDEMA, SCAR):
        assert _core((scar_slice.pathology == code) & (scar_slice.mask == LV_MYOCARDIUM_LABEL)).sum() > 10
    assert scar_slice.has_all_landmarks


@pytest.mark.parametrize("field_strength_t", FIELD_STRENGTHS_T)
def test_native_values_in_published_ranges(field_strength_t: float) -> None:
    for seed in range(50):
        scenario = draw_t1_scenario(np.random.default_rng(seed), field_strength_t, post_contrast=False)
        low, high = MYOCARDIUM_NATIVE_T1_MS[field_strength_t]
        assert low <= scenario.myocardium_t1_ms <= high
        low, high = BLOOD_NATIVE_T1_MS[field_strength_t]
        assert low <= scenario.lv_blood_t1_ms <= high
        assert 0.97 * low <= scenario.rv_blood_t1_ms <= 1.03 * high
        rise = scenario.oedema_t1_ms - scenario.myocardium_t1_ms
        assert OEDEMA_NATIVE_RISE_MS[0] <= rise <= OEDEMA_NATIVE_RISE_MS[1]
        rise = scenario.scar_t1_ms - scenario.myocardium_t1_ms
        assert SCAR_NATIVE_RISE_MS[0] <= rise <= SCAR_NATIVE_RISE_MS[1]


@pytest.mark.parametrize("field_strength_t", FIELD_STRENGTHS_T)
def test_post_contrast_values_in_published_ranges(field_strength_t: float) -> None:
    for seed in range(50):
        scenario = draw_t1_scenario(np.random.default_rng(seed), field_strength_t, post_contrast=True)
        low, high = BLOOD_POST_CONTRAST_T1_MS[field_strength_t]
        assert low <= scenario.lv_blood_t1_ms <= high
        low, high = POST_CONTRAST_MYOCARDIUM_MS[field_strength_t]
        assert low <= scenario.myocardium_t1_ms <= high
        assert scenario.myocardium_t1_ms > scenario.lv_blood_t1_ms  # blood takes up more gadolinium
        # scar: strongly shortened, to about the blood's T1 (why it is bright on LGE)
        assert scenario.scar_t1_ms < scenario.oedema_t1_ms < scenario.myocardium_t1_ms
        assert scenario.scar_t1_ms < 1.3 * scenario.lv_blood_t1_ms


def test_the_post_contrast_share_changes_only_which_maps_are_post_contrast() -> None:
    seeds = range(200)

    def scenarios(**share):
        return [draw_t1_scenario(np.random.default_rng(seed), **share) for seed in seeds]

    default, explicit = scenarios(), scenarios(post_contrast_probability=POST_CONTRAST_PROBABILITY)
    assert default == explicit  # the default share is the one every earlier map was drawn with
    assert 0.25 < np.mean([s.post_contrast for s in default]) < 0.45
    native, post = scenarios(post_contrast_probability=0.0), scenarios(post_contrast_probability=1.0)
    assert not any(s.post_contrast for s in native) and all(s.post_contrast for s in post)
    # one draw decides, whatever the share, after the field strength: that comes out the same
    for a, b in zip(native, post, strict=True):
        assert a.field_strength_t == b.field_strength_t and b.myocardium_t1_ms < a.myocardium_t1_ms


@pytest.mark.parametrize("post_contrast", [False, True])
def test_rendered_map_carries_tissue_values(scar_slice: Slice, post_contrast: bool) -> None:
    rng = np.random.default_rng(7)
    scenario = draw_t1_scenario(rng, 1.5, post_contrast)
    t1_ms = render_t1_map(scar_slice.image, scar_slice.mask, scenario, rng, pathology=scar_slice.pathology)
    assert t1_ms.dtype == np.float32 and t1_ms.shape == scar_slice.image.shape
    myocardium = scar_slice.mask == LV_MYOCARDIUM_LABEL
    healthy = _core(myocardium & (scar_slice.pathology == 0))
    scar = _core(myocardium & (scar_slice.pathology == SCAR))
    oedema = _core(myocardium & (scar_slice.pathology == OEDEMA))
    for region, expected in ((healthy, scenario.myocardium_t1_ms), (scar, scenario.scar_t1_ms),
                             (oedema, scenario.oedema_t1_ms)):
        assert np.median(t1_ms[region]) == pytest.approx(expected, rel=0.08)
    if post_contrast:
        assert np.median(t1_ms[scar]) < np.median(t1_ms[healthy]) - 100
    else:
        assert np.median(t1_ms[scar]) > np.median(t1_ms[healthy]) + 100
        assert np.median(t1_ms[oedema]) > np.median(t1_ms[healthy]) + 50
    # the blood pool is at least as long as the blood T1 says in its bright (non-trabecular) part
    blood = _core(scar_slice.mask == LV_BLOOD_LABEL)
    assert np.percentile(t1_ms[blood], 75) == pytest.approx(scenario.lv_blood_t1_ms, rel=0.1)


def test_pathology_absent_means_plain_myocardium(scar_slice: Slice) -> None:
    rng = np.random.default_rng(3)
    scenario = draw_t1_scenario(rng, 3.0, post_contrast=False)
    t1_ms = render_t1_map(scar_slice.image, scar_slice.mask, scenario, rng, pathology=None)
    scar = _core((scar_slice.mask == LV_MYOCARDIUM_LABEL) & (scar_slice.pathology == SCAR))
    assert np.median(t1_ms[scar]) == pytest.approx(scenario.myocardium_t1_ms, rel=0.05)


def test_noise_grows_with_t1() -> None:
    rng = np.random.default_rng(0)
    sd = [add_fit_noise(np.full((128, 128), t1), 0.02, rng).std() for t1 in (400.0, 1000.0, 2000.0, 3000.0)]
    assert sd[0] < sd[1] < sd[2] < sd[3]
    assert sd[2] / sd[1] == pytest.approx(4.0, rel=0.15)  # SD grows as T1 squared


def test_noise_grows_with_t1_in_rendered_map(scar_slice: Slice) -> None:
    # native: blood (~1600-1900 ms) is noisier than myocardium (~1000 ms); measured as the spread of the
    # residual after removing the smooth tissue texture.
    rng = np.random.default_rng(11)
    scenario = draw_t1_scenario(rng, 3.0, post_contrast=False)
    t1_ms = render_t1_map(scar_slice.image, scar_slice.mask, scenario, rng)
    residual = t1_ms - ndimage.median_filter(t1_ms, size=5)
    myocardium = _core((scar_slice.mask == LV_MYOCARDIUM_LABEL) & (scar_slice.pathology == 0))
    rv_blood = _core(scar_slice.mask == RV_BLOOD_LABEL)
    assert residual[rv_blood].std() > 1.5 * residual[myocardium].std()


def test_deterministic_with_seed(scar_slice: Slice) -> None:
    first = synthetic_t1_slice(scar_slice, np.random.default_rng(42))
    again = synthetic_t1_slice(scar_slice, np.random.default_rng(42))
    other = synthetic_t1_slice(scar_slice, np.random.default_rng(43))
    np.testing.assert_array_equal(first.image, again.image)
    assert not np.array_equal(first.image, other.image)
    batch = synthetic_t1_slices([scar_slice, scar_slice], seed=5)
    np.testing.assert_array_equal(batch[0].image, synthetic_t1_slices([scar_slice], seed=5)[0].image)
    assert not np.array_equal(batch[0].image, batch[1].image)


def test_slice_is_a_t1_map_with_source_geometry(scar_slice: Slice) -> None:
    t1 = synthetic_t1_slice(scar_slice, np.random.default_rng(1), as_uint16=True)
    assert t1.sequence == "t1" and t1.image.dtype == np.uint16
    assert 0 <= t1.image.min() and t1.image.max() <= MAX_T1_MS
    np.testing.assert_array_equal(t1.landmarks_rc, scar_slice.landmarks_rc)
    assert t1.pixel_spacing_mm == scar_slice.pixel_spacing_mm
    assert scar_slice.sequence == "cine" and scar_slice.image.dtype == np.float32  # the source is untouched


def test_bad_input_is_refused(scar_slice: Slice) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="field strength"):
        draw_t1_scenario(rng, field_strength_t=7.0)
    scenario = draw_t1_scenario(rng)
    with pytest.raises(ValueError, match="one shape"):
        render_t1_map(scar_slice.image, scar_slice.mask[:-1], scenario, rng)
    with pytest.raises(ValueError, match="pathology"):
        render_t1_map(scar_slice.image, scar_slice.mask, scenario, rng, pathology=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="monotone"):
        random_curve(rng, 0.0, 1.0, monotone="sideways")
    unlabelled = Slice(scar_slice.image, scar_slice.pixel_spacing_mm, scar_slice.landmarks_rc, "sax", "cine",
                       "myops", "x", 0, 0, labelled=False)
    with pytest.raises(ValueError, match="no label mask"):
        synthetic_t1_slice(unlabelled, rng)
    with pytest.raises(ValueError, match="no label mask"):
        with_random_contrast(unlabelled, rng)


@pytest.mark.parametrize("monotone", ["increasing", "decreasing", "none"])
def test_random_curve_shapes(monotone: str) -> None:
    x, y = random_curve(np.random.default_rng(4), 250.0, 4000.0, n_knots=6, monotone=monotone, log_scale=True)
    assert x[0] == 0.0 and x[-1] == 1.0 and np.all(np.diff(x) >= 0)
    assert np.all((250.0 <= y) & (y <= 4000.0))
    if monotone == "increasing":
        assert np.all(np.diff(y) >= 0)
    elif monotone == "decreasing":
        assert np.all(np.diff(y) <= 0)


def test_random_contrast_keeps_landmarks_and_separates_tissues(scar_slice: Slice) -> None:
    images = []
    for seed in range(8):
        augmented = with_random_contrast(scar_slice, np.random.default_rng(seed))
        # geometry untouched: the labels, and the landmarks derived from them, are the slice's own
        np.testing.assert_array_equal(augmented.landmarks_rc, scar_slice.landmarks_rc)
        np.testing.assert_allclose(derive_sax_landmarks(augmented.mask, pixel_spacing_mm=augmented.pixel_spacing_mm),
                                   scar_slice.landmarks_rc)
        assert augmented.image.shape == scar_slice.image.shape and augmented.image.dtype == np.float32
        assert np.all(np.isfinite(augmented.image))
        # the myocardium stays visible against both blood pools, whatever the draw
        median = {label: np.median(augmented.image[_core(scar_slice.mask == label)])
                  for label in (LV_BLOOD_LABEL, LV_MYOCARDIUM_LABEL, RV_BLOOD_LABEL)}
        spread = np.percentile(augmented.image, 99) - np.percentile(augmented.image, 1)
        for blood in (LV_BLOOD_LABEL, RV_BLOOD_LABEL):
            assert abs(median[LV_MYOCARDIUM_LABEL] - median[blood]) > 0.3 * MIN_MYOCARDIUM_BLOOD_CONTRAST * spread
        images.append(augmented.image)
    # contrasts really vary: the myocardium is brighter than the LV blood in some draws, darker in others
    order = [np.median(image[_core(scar_slice.mask == LV_MYOCARDIUM_LABEL)])
             > np.median(image[_core(scar_slice.mask == LV_BLOOD_LABEL)]) for image in images]
    assert any(order) and not all(order)


def test_uneven_blood_signal_draws_patches_toward_and_past_the_myocardium(scar_slice: Slice) -> None:
    mask = scar_slice.mask
    for blood_mean, myocardium_mean in ((0.1, 0.5), (0.8, 0.3)):  # dark blood (black blood) and bright (cine)
        contrast = myocardium_mean - blood_mean
        patches = [uneven_blood_signal(mask.shape, blood_mean, myocardium_mean, np.random.default_rng(seed))
                   for seed in range(6)]
        for signal in patches:
            assert signal.shape == mask.shape
            assert np.all(signal * np.sign(contrast) >= 0.0)  # only ever toward the myocardium's level
            assert 0.3 < np.mean(signal == 0.0) < 0.7  # patches over about half the pool, the rest untouched
            assert np.abs(signal).max() < 5.0 * abs(contrast)
        # some patches reach the myocardium's level (the septum's border hidden there), not all
        reached = np.mean([np.mean(np.abs(signal) >= abs(contrast)) for signal in patches])
        assert 0.01 < reached < 0.3


def share_of_blood_toward_myocardium(image: np.ndarray, mask: np.ndarray) -> float:
    """The share of the LV pool's core pixels at least halfway from the pool's own level toward the myocardium's
    (signed: a pixel as far off the other way does not count)."""
    blood, myocardium = _core(mask == LV_BLOOD_LABEL), _core(mask == LV_MYOCARDIUM_LABEL)
    blood_level, myocardium_level = np.median(image[blood]), np.median(image[myocardium])
    toward = (image[blood] - blood_level) * np.sign(myocardium_level - blood_level)
    return float(np.mean(toward >= 0.5 * abs(myocardium_level - blood_level)))


def test_random_contrast_with_uneven_blood_brings_blood_toward_the_myocardium(scar_slice: Slice) -> None:
    def share(fraction: float, seed: int) -> float:
        image = random_tissue_contrast(scar_slice.image, scar_slice.mask, np.random.default_rng(seed), fraction)
        return share_of_blood_toward_myocardium(image, scar_slice.mask)

    plain = [share(0.0, seed) for seed in range(12)]
    uneven = [share(1.0, seed) for seed in range(12)]
    assert np.mean(uneven) > np.mean(plain) + 0.05


def test_no_patches_and_no_draws_at_fraction_zero(scar_slice: Slice) -> None:
    # at 0 the random stream is untouched, so the images of recipes from before the patches are drawn again as
    # they were; at 1 the pools change and nothing else does
    value = np.zeros(scar_slice.mask.shape)
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    add_uneven_blood(value, scar_slice.mask, 0.5, {LV_BLOOD_LABEL: 0.1, RV_BLOOD_LABEL: 0.1}, rng, 0.0)
    assert rng.bit_generator.state == state and not value.any()
    add_uneven_blood(value, scar_slice.mask, 0.5, {LV_BLOOD_LABEL: 0.1, RV_BLOOD_LABEL: 0.1}, rng, 1.0)
    blood = np.isin(scar_slice.mask, (LV_BLOOD_LABEL, RV_BLOOD_LABEL))
    assert value[blood].max() > 0.0 and not value[~blood].any() and value.min() >= 0.0


def test_rv_wall_is_the_unlabelled_band_beside_the_rv_pool_measured_in_mm(scar_slice: Slice) -> None:
    mask, spacing_mm = scar_slice.mask, scar_slice.pixel_spacing_mm
    wall = rv_wall_mask(mask, spacing_mm, 3.0)
    distance_mm = ndimage.distance_transform_edt(mask != RV_BLOOD_LABEL, sampling=spacing_mm)
    assert wall.any() and np.all(mask[wall] == BACKGROUND_LABEL) and distance_mm[wall].max() <= 3.0
    # every unlabelled pixel that close is in it, and it meets the LV myocardium: the insertion's junction
    assert np.array_equal(wall, (distance_mm <= 3.0) & (mask == BACKGROUND_LABEL))
    assert (ndimage.binary_dilation(wall) & (mask == LV_MYOCARDIUM_LABEL)).any()
    # thickness in mm: the same 3 mm over pixels twice as large is fewer pixels, and a thicker wall holds a thinner
    coarse = rv_wall_mask(mask, (2 * spacing_mm[0], 2 * spacing_mm[1]), 3.0)
    assert coarse.sum() < wall.sum() and not (coarse & ~wall).any()
    assert not (wall & ~rv_wall_mask(mask, spacing_mm, 5.0)).any()
    assert not rv_wall_mask(np.where(mask == RV_BLOOD_LABEL, 0, mask), spacing_mm, 3.0).any()
    # (row, col) spacing: rows 1 mm apart, columns 3 mm apart, so a 3 mm wall is 3 rows but 1 column deep
    pool = np.zeros((11, 11), dtype=np.uint8)
    pool[5, 5] = RV_BLOOD_LABEL
    rows, cols = np.nonzero(rv_wall_mask(pool, (1.0, 3.0), 3.0))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 8, 4, 6)


def test_rv_wall_no_draws_at_fraction_zero_and_needs_a_spacing(scar_slice: Slice, monkeypatch) -> None:
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    assert draw_rv_wall(scar_slice.mask, None, rng, 0.0) is None and rng.bit_generator.state == state
    with pytest.raises(ValueError, match="pixel spacing"):
        draw_rv_wall(scar_slice.mask, None, rng, 1.0)
    # at 0 every synthetic image is the one drawn before the wall existed: the same as with no wall step at all
    at_zero = [with_random_contrast(scar_slice, np.random.default_rng(3), 0.5, 0.5, rv_wall_fraction=0.0).image,
               synthetic_t1_slice(scar_slice, np.random.default_rng(3), rv_wall_fraction=0.0).image]
    import cmr_landmark.synth.contrast as contrast
    import cmr_landmark.synth.tissue_map as tissue_map

    def no_wall_step(*args, **kwargs):
        return None

    monkeypatch.setattr(contrast, "draw_rv_wall", no_wall_step)
    monkeypatch.setattr(tissue_map, "draw_rv_wall", no_wall_step)
    np.testing.assert_array_equal(at_zero[0], with_random_contrast(scar_slice, np.random.default_rng(3), 0.5, 0.5,
                                                                   rv_wall_fraction=1.0).image)
    np.testing.assert_array_equal(at_zero[1], synthetic_t1_slice(scar_slice, np.random.default_rng(3),
                                                                 rv_wall_fraction=1.0).image)


def test_random_contrast_rv_wall_takes_the_myocardium_intensity(scar_slice: Slice) -> None:
    # with the wall, the pixels beside the RV pool read like the LV myocardium; without it, like the body around
    wall_core = rv_wall_mask(scar_slice.mask, scar_slice.pixel_spacing_mm, 2.0)  # inside every drawn wall (2-5 mm)
    myocardium = _core(scar_slice.mask == LV_MYOCARDIUM_LABEL)

    def wall_to_myocardium(fraction: float, seed: int) -> float:
        image = with_random_contrast(scar_slice, np.random.default_rng(seed), rv_wall_fraction=fraction).image
        return abs(np.median(image[wall_core]) - np.median(image[myocardium])) / (np.ptp(image) or 1.0)

    with_wall = [wall_to_myocardium(1.0, seed) for seed in range(12)]
    without = [wall_to_myocardium(0.0, seed) for seed in range(12)]
    assert np.mean(with_wall) < 0.5 * np.mean(without) and np.median(with_wall) < 0.1


def test_myocardial_lesions_change_the_wall_only_toward_or_away_from_the_blood(scar_slice: Slice) -> None:
    mask = scar_slice.mask
    myocardium = mask == LV_MYOCARDIUM_LABEL
    directions = set()
    for seed in range(12):
        value = np.full(mask.shape, 0.5)
        rng = np.random.default_rng(seed)
        add_myocardial_lesions(value, mask, 0.5, 0.9, rng, 1.0)  # the blood brighter than the wall
        change = value - 0.5
        assert not change[~myocardium].any() and change[myocardium].any()
        assert np.all(change >= 0.0) or np.all(change <= 0.0)  # one lesion kind per image
        directions.add("toward" if change.max() > 0.0 else "away")
        assert np.abs(change).max() < 5.0 * 0.4
    assert directions == {"toward", "away"}  # both scar-like (to the blood's level) and the other way
    rng = np.random.default_rng(1)
    state, value = rng.bit_generator.state, np.zeros(mask.shape)
    add_myocardial_lesions(value, mask, 0.5, 0.9, rng, 0.0)
    assert rng.bit_generator.state == state and not value.any()


def test_random_contrast_refuses_mismatched_mask(scar_slice: Slice) -> None:
    with pytest.raises(ValueError, match="one shape"):
        random_tissue_contrast(scar_slice.image, scar_slice.mask[:, :-2], np.random.default_rng(0))


def test_random_contrast_slices_copies(scar_slice: Slice) -> None:
    copies = random_contrast_slices([scar_slice], seed=3, copies=3)
    assert len(copies) == 3
    assert not np.array_equal(copies[0].image, copies[1].image)


def train_sax_synthetic_script(monkeypatch, train_slices: list, val_slices: list):
    """scripts/train_sax_synthetic.py as a module, reading the given slices as its real training / validation sets."""
    script = load_script("train_sax_synthetic")
    monkeypatch.setattr(script, "real_sax_slices", lambda split: train_slices if split == "train" else val_slices)
    return script


def test_any_model_validates_on_unseen_contrast_copies(monkeypatch) -> None:
    # scripts/train_sax_synthetic.py: the contrast-agnostic model's epoch is chosen on its real validation slices plus
    # random-contrast copies of them, drawn with another seed than the training copies (docs/t1.md)
    stack = load_myops_stack()
    script = train_sax_synthetic_script(monkeypatch, stack[:2], stack[2:])

    train, val = script.training_sets("any", copies=1, max_val_slices=None, val_contrast_copies=2)
    assert len(train) == 4 and len(val) == 3
    assert val[0] is stack[2]
    for copy in val[1:]:
        np.testing.assert_array_equal(copy.landmarks_rc, stack[2].landmarks_rc)
        assert not np.allclose(copy.image, stack[2].image)
    assert not np.allclose(val[1].image, val[2].image)
    # drawn with the validation seed, not the training copies' one
    for seed_name, same in (("val", True), ("train", False)):
        expected = random_contrast_slices([stack[2]], script.SYNTHESIS_SEED[seed_name], 2)
        assert np.allclose(expected[0].image, val[1].image) is same
    _, plain = script.training_sets("any", copies=1, max_val_slices=None)
    assert plain == [stack[2]]


def test_t1_model_trains_on_fixed_maps_or_on_real_slices_redrawn_every_epoch(monkeypatch, capsys) -> None:
    stack = load_myops_stack()
    script = train_sax_synthetic_script(monkeypatch, stack[:2], stack[2:])
    fixed, val = script.training_sets("t1", copies=2, max_val_slices=None)
    assert len(fixed) == 4 and all(s.sequence == "t1" for s in fixed + val)
    fresh, _ = script.training_sets("t1", copies=0, max_val_slices=None)
    assert fresh == stack[:2]  # the real slices: FreshImages(synthetic_t1_slice, 1.0) makes each a map every epoch
    assert script.fresh_synthesis("t1", 0.0).func is synthetic_t1_slice
    # a T1 model without consistency pairs never trains on the real cine/LGE images, nor on maps drawn from maps
    for flags in (["--copies", "0"], ["--copies", "0", "--fresh-fraction", "0.5"],
                  ["--copies", "2", "--fresh-fraction", "1"]):
        monkeypatch.setattr("sys.argv", ["train_sax_synthetic.py", "t1", "--out", "unused", *flags])
        with pytest.raises(SystemExit) as stop:
            script.main()
        assert stop.value.code == 2 and "t1 trains on synthetic maps" in capsys.readouterr().err, flags


def test_consistency_pairs_are_refused_where_the_pair_would_not_be_a_real_slice_and_a_fresh_view(
        monkeypatch, capsys) -> None:
    script = train_sax_synthetic_script(monkeypatch, [], [])
    fine_only = ["--epochs", "0", "--epochs-fine", "2", "--copies", "0", "--fresh-fraction", "1"]
    for flags, message in ((["--consistency-weight", "-1", *fine_only], "finite number >= 0"),
                           (["--consistency-weight", "nan", *fine_only], "finite number >= 0"),
                           (["--consistency-toward-real", *fine_only], "give both"),
                           (["--consistency-weight", "4", "--copies", "1"], "--copies 0 and --epochs 0"),
                           (["--consistency-weight", "4", "--copies", "0", "--fresh-fraction", "1"],
                            "--copies 0 and --epochs 0"),  # --epochs defaults to 10: the coarse stage would train
                           (["--consistency-weight", "4", *fine_only, "--distil-from", "cine=x.pt"],
                            "without --distil-from")):
        monkeypatch.setattr("sys.argv", ["train_sax_synthetic.py", "any", "--out", "unused", *flags])
        with pytest.raises(SystemExit) as stop:
            script.main()
        assert stop.value.code == 2 and message in capsys.readouterr().err, flags


def test_fitted_map_look_keeps_the_tissues_and_adds_value_dependent_noise(scar_slice: Slice) -> None:
    contrast = with_random_contrast(scar_slice, np.random.default_rng(4))
    mask = scar_slice.mask
    looks = [with_fitted_map_look(contrast.image, scar_slice.image, mask, np.random.default_rng(seed))
             for seed in range(6)]
    for look in looks:
        assert look.shape == contrast.image.shape and look.dtype == np.float32 and look.min() >= 0.0
        for label in (LV_BLOOD_LABEL, LV_MYOCARDIUM_LABEL, RV_BLOOD_LABEL):  # tissue means stay (blur, noise only)
            core = _core(mask == label)
            assert abs(np.median(look[core]) - np.median(contrast.image[core])) < 0.1
    # The fit's noise grows with the value: on a flat image, the bright half is noisier than the dim half.
    flat = np.full((64, 64), 0.2, dtype=np.float32)
    flat[:, 32:] = 0.8
    tissue = np.ones_like(flat, dtype=np.int16)  # no air: every pixel labelled
    noisy = with_fitted_map_look(flat, flat, tissue, np.random.default_rng(1))
    assert noisy[8:-8, 40:-8].std() > 4 * noisy[8:-8, 8:24].std()
    # Air (dark in the source, outside the labels) is masked to 0 or filled with the fit's random output.
    air = (ndimage.gaussian_filter(scar_slice.image / scar_slice.image.max(), 1.0) < 0.03) & (mask == 0)
    assert air.sum() > 100
    assert any(np.all(look[air] == 0.0) for look in looks) or any(look[air].std() > 0.1 for look in looks)


def test_any_model_training_copies_can_look_like_fitted_maps(monkeypatch) -> None:
    stack = load_myops_stack()
    script = train_sax_synthetic_script(monkeypatch, stack, stack[:1])
    plain, _ = script.training_sets("any", copies=2, max_val_slices=None)
    looked, val = script.training_sets("any", copies=2, max_val_slices=None, map_look_fraction=1.0)
    n = len(stack)
    assert len(looked) == len(plain) == 3 * n and val == stack[:1]
    for real, same in zip(looked[:n], stack, strict=True):  # the real slices are untouched
        assert real is same
    for with_look, without in zip(looked[n:], plain[n:], strict=True):
        np.testing.assert_array_equal(with_look.landmarks_rc, without.landmarks_rc)
        assert not np.allclose(with_look.image, without.image)


def test_any_model_fresh_contrasts_can_look_like_fitted_maps(monkeypatch, scar_slice: Slice) -> None:
    # --copies 0 --fresh-fraction F --map-look-fraction M: the new random contrast of each epoch gets the map look
    # in a share M; with M = 0 it is the plain random contrast from the very same random stream (the shipped recipe)
    script = train_sax_synthetic_script(monkeypatch, [scar_slice], [scar_slice])
    plain = script.fresh_synthesis("any", 0.0)(scar_slice, np.random.default_rng(8))
    np.testing.assert_array_equal(plain.image, with_random_contrast(scar_slice, np.random.default_rng(8)).image)
    looked = script.fresh_synthesis("any", 1.0)(scar_slice, np.random.default_rng(8))
    np.testing.assert_array_equal(looked.landmarks_rc, scar_slice.landmarks_rc)
    assert not np.allclose(looked.image, plain.image)
    rng = np.random.default_rng(8)  # the same draws by hand: contrast, the share's coin, then the look
    contrast = with_random_contrast(scar_slice, rng)
    rng.random()  # the share's coin, always heads at 1.0
    np.testing.assert_array_equal(looked.image, with_fitted_map_look(contrast.image, scar_slice.image,
                                                                     scar_slice.mask, rng))
    # an intermediate share: about that share of the fresh images get the look (the rest are the plain contrast)
    share = script.fresh_synthesis("any", 0.3)
    looked = [not np.array_equal(share(scar_slice, np.random.default_rng(seed)).image,
                                 with_random_contrast(scar_slice, np.random.default_rng(seed)).image)
              for seed in range(60)]
    assert 0.12 < np.mean(looked) < 0.5


def refused_training(monkeypatch, capsys, script, arguments: list) -> str:
    """What scripts/train_sax_synthetic.py says when it refuses ``arguments`` (exit status 2) before training."""
    monkeypatch.setattr("sys.argv", ["train_sax_synthetic.py", *arguments])
    with pytest.raises(SystemExit) as exit_:
        script.main()
    assert exit_.value.code == 2
    return capsys.readouterr().err


def capture_trainer_arguments(monkeypatch, script) -> dict:
    """The keyword arguments the script's next run gives train_cascade, which trains nothing here."""
    captured: dict = {}

    def fake_train_cascade(train, val, view, out, epochs, epochs_fine, **kwargs):
        captured.update(kwargs)
        return None, {}

    monkeypatch.setattr(script, "train_cascade", fake_train_cascade)
    return captured


def trained_run(monkeypatch, script, out, arguments: list) -> dict:
    """The run.json of scripts/train_sax_synthetic.py run with ``arguments`` into ``out`` (its trainer replaced by
    :func:`capture_trainer_arguments`)."""
    monkeypatch.setattr("sys.argv", ["train_sax_synthetic.py", *arguments, "--out", str(out)])
    assert script.main() == 0
    return json.loads((out / "run.json").read_text())


def test_training_script_passes_seed_and_fresh_map_look_to_the_trainer(monkeypatch, tmp_path) -> None:
    # a replicate run (--seed) and the fresh images' map look reach train_cascade and are recorded in run.json
    stack = load_myops_stack()
    script = train_sax_synthetic_script(monkeypatch, stack[:2], stack[2:])
    captured = capture_trainer_arguments(monkeypatch, script)
    run = trained_run(monkeypatch, script, tmp_path, [
        "any", "--copies", "0", "--fresh-fraction", "0.5", "--map-look-fraction", "0.3", "--seed", "3",
        "--uneven-blood-fraction", "0.4", "--myocardial-lesion-fraction", "0.2", "--rv-wall-fraction", "0.6"])
    assert captured["seed"] == 3
    fresh = captured["fresh_images"]
    assert fresh.fraction == 0.5
    assert fresh.synthesise.keywords == {"map_look_fraction": 0.3, "uneven_blood_fraction": 0.4,
                                         "myocardial_lesion_fraction": 0.2, "rv_wall_fraction": 0.6,
                                         "infarct_fraction": 0.0}
    assert run["seed"] == 3 and run["map_look_fraction"] == 0.3 and run["fresh_fraction"] == 0.5
    assert run["uneven_blood_fraction"] == 0.4 and run["myocardial_lesion_fraction"] == 0.2
    assert run["rv_wall_fraction"] == 0.6
    assert captured["deformation_fraction"] == 0.0 and run["deformation_fraction"] == 0.0


def test_training_script_passes_the_share_of_deformed_items(monkeypatch, tmp_path, capsys) -> None:
    stack = load_myops_stack()
    script = train_sax_synthetic_script(monkeypatch, stack[:2], stack[2:])
    captured = capture_trainer_arguments(monkeypatch, script)
    run = trained_run(monkeypatch, script, tmp_path, ["any", "--copies", "0", "--fresh-fraction", "1",
                                                      "--deformation-fraction", "0.5"])
    assert captured["deformation_fraction"] == 0.5 and run["deformation_fraction"] == 0.5
    assert "are shares, 0..1" in refused_training(
        monkeypatch, capsys, script, ["any", "--out", str(tmp_path), "--deformation-fraction", "2"])


def test_t1_training_takes_the_share_of_post_contrast_maps(monkeypatch, tmp_path, capsys) -> None:
    script = train_sax_synthetic_script(monkeypatch, load_myops_stack()[:2], load_myops_stack()[2:])
    captured = capture_trainer_arguments(monkeypatch, script)
    run = trained_run(monkeypatch, script, tmp_path,
                      ["t1", "--copies", "0", "--fresh-fraction", "1", "--post-contrast-fraction", "0.5"])
    assert captured["fresh_images"].synthesise.keywords["post_contrast_probability"] == 0.5
    assert run["post_contrast_fraction"] == 0.5
    # a share that would change nothing is refused: the contrast-agnostic model draws no T1 maps
    assert "give kind t1 (or any with --t1-map-fraction)" in refused_training(
        monkeypatch, capsys, script, ["any", "--out", str(tmp_path), "--copies", "0", "--fresh-fraction", "1",
                                      "--post-contrast-fraction", "0.5"])


def test_the_contrast_agnostic_model_can_take_a_share_of_t1_maps(monkeypatch, tmp_path, capsys) -> None:
    stack = load_myops_stack()
    script = train_sax_synthetic_script(monkeypatch, stack[:2], stack[2:])
    captured = capture_trainer_arguments(monkeypatch, script)
    run = trained_run(monkeypatch, script, tmp_path, ["any", "--copies", "0", "--fresh-fraction", "1",
                                                      "--t1-map-fraction", "0.4", "--post-contrast-fraction", "0.5"])
    synthesise = captured["fresh_images"].synthesise
    images = [synthesise(stack[1], np.random.default_rng(seed)) for seed in range(40)]
    t1_maps = [image for image in images if image.sequence == "t1"]
    assert 8 <= len(t1_maps) <= 24  # about 0.4 of 40
    assert all(image.image.max() > 100 for image in t1_maps)  # in ms, where a random contrast is about 0..1
    assert all(image.image.max() < 10 for image in images if image.sequence != "t1")
    assert run["t1_map_fraction"] == 0.4 and run["post_contrast_fraction"] == 0.5
    # without a share, no draw for the choice: the recipe's random contrasts are as they were
    assert script.fresh_synthesis("any", 0.3).func is script.random_contrast_with_map_look
    assert "give kind any and --fresh-fraction" in refused_training(
        monkeypatch, capsys, script, ["t1", "--out", str(tmp_path), "--copies", "0", "--fresh-fraction", "1",
                                      "--t1-map-fraction", "0.4"])


def test_training_can_draw_infarcts_in_its_fresh_images(monkeypatch, tmp_path, capsys) -> None:
    stack = load_myops_stack()
    script = train_sax_synthetic_script(monkeypatch, stack[:2], stack[2:])
    captured = capture_trainer_arguments(monkeypatch, script)
    for kind in ("t1", "any"):
        run = trained_run(monkeypatch, script, tmp_path,
                          [kind, "--copies", "0", "--fresh-fraction", "1", "--infarct-fraction", "0.5"])
        assert captured["fresh_images"].synthesise.keywords["infarct_fraction"] == 0.5, kind
        assert run["infarct_fraction"] == 0.5
    # drawn in the fresh images only: without them the share would silently do nothing
    assert "--infarct-fraction draws in the fresh images" in refused_training(
        monkeypatch, capsys, script, ["any", "--out", str(tmp_path), "--infarct-fraction", "0.5"])


def test_rv_wall_needs_fresh_images(monkeypatch, tmp_path, capsys) -> None:
    # the wall is drawn in the fresh images only: asked for without them it would silently do nothing
    script = train_sax_synthetic_script(monkeypatch, [], [])
    assert "--rv-wall-fraction draws in the fresh images" in refused_training(
        monkeypatch, capsys, script, ["any", "--out", str(tmp_path), "--rv-wall-fraction", "0.5"])


def count_patched_pools(monkeypatch) -> list:
    """A list that grows by one for every blood pool given patches (synth.contrast.uneven_blood_signal) from now."""
    import cmr_landmark.synth.contrast as contrast

    pools: list = []
    draw = contrast.uneven_blood_signal

    def counted(*args, **kwargs):
        pools.append(args)
        return draw(*args, **kwargs)

    monkeypatch.setattr(contrast, "uneven_blood_signal", counted)
    return pools


def test_any_model_uneven_blood_reaches_training_and_validation_copies(monkeypatch, capsys) -> None:
    stack = load_myops_stack()
    script = train_sax_synthetic_script(monkeypatch, stack[:2], stack[2:])
    pools = count_patched_pools(monkeypatch)
    plain_train, plain_val = script.training_sets("any", copies=1, max_val_slices=None, val_contrast_copies=1)
    assert pools == []
    train, val = script.training_sets("any", copies=1, max_val_slices=None, val_contrast_copies=1,
                                      uneven_blood_fraction=1.0)
    assert len(pools) == 2 * 3  # both pools of the two training copies and of the one validation copy
    assert train[:2] == plain_train[:2] and val[:1] == plain_val[:1]  # the real slices untouched
    for copy, plain in zip(train[2:] + val[1:], plain_train[2:] + plain_val[1:], strict=True):
        np.testing.assert_array_equal(copy.landmarks_rc, plain.landmarks_rc)
    lesions = count_patched_pools(monkeypatch)  # the lesions are drawn with the same patches
    script.training_sets("any", copies=1, max_val_slices=None, val_contrast_copies=1, myocardial_lesion_fraction=1.0)
    assert len(lesions) == 3  # one myocardium in each of the three copies
    monkeypatch.setattr("sys.argv", ["train_sax_synthetic.py", "any", "--uneven-blood-fraction", "2", "--out", "x"])
    with pytest.raises(SystemExit) as stop:
        script.main()
    assert stop.value.code == 2 and "--uneven-blood-fraction" in capsys.readouterr().err


def test_t1_maps_with_uneven_blood_for_training_and_validation(monkeypatch, scar_slice: Slice) -> None:
    stack = load_myops_stack()
    script = train_sax_synthetic_script(monkeypatch, stack[:2], stack[2:])
    pools = count_patched_pools(monkeypatch)
    _, plain_val = script.training_sets("t1", copies=0, max_val_slices=None)
    assert pools == []
    _, val = script.training_sets("t1", copies=0, max_val_slices=None, uneven_blood_fraction=1.0)
    assert len(pools) == 2  # both pools of the one validation map
    np.testing.assert_array_equal(val[0].landmarks_rc, plain_val[0].landmarks_rc)
    fresh = script.fresh_synthesis("t1", 0.0, 1.0)
    assert fresh.func is synthetic_t1_slice and fresh(scar_slice, np.random.default_rng(2)).sequence == "t1"
    assert len(pools) == 4
    # the patches move the blood's T1 toward the myocardium's
    patchy = [share_of_blood_toward_myocardium(synthetic_t1_slice(scar_slice, np.random.default_rng(seed),
                                                                  uneven_blood_fraction=1.0).image, scar_slice.mask)
              for seed in range(10)]
    plain = [share_of_blood_toward_myocardium(synthetic_t1_slice(scar_slice, np.random.default_rng(seed)).image,
                                              scar_slice.mask) for seed in range(10)]
    assert np.mean(patchy) > np.mean(plain) + 0.05


def test_plot_script_refuses_two_figures_at_once(monkeypatch, capsys) -> None:
    script = load_script("plot_synthetic_t1")
    monkeypatch.setattr("sys.argv", ["plot_synthetic_t1.py", "--rv-wall", "--clinical-contrasts"])
    with pytest.raises(SystemExit) as exit_:
        script.main()
    assert exit_.value.code == 2 and "two different figures" in capsys.readouterr().err


def lesion_free(slice_: Slice) -> Slice:
    return dataclasses.replace(slice_, pathology=None)


def test_a_drawn_infarct_is_a_territory_of_the_myocardium_from_the_endocardium(scar_slice: Slice) -> None:
    mask = scar_slice.mask
    myocardium, lv_blood = mask == LV_MYOCARDIUM_LABEL, mask == LV_BLOOD_LABEL
    centre = np.array(ndimage.center_of_mass(lv_blood))
    beside_blood = myocardium & ndimage.binary_dilation(lv_blood)
    scar_shares, oedema_seen = [], 0
    for seed in range(30):
        pathology = draw_infarct(mask, np.random.default_rng(seed))
        scar, oedema = pathology == SCAR, pathology == OEDEMA
        assert scar.any() and not (pathology.astype(bool) & ~myocardium).any()  # inside the LV myocardium only
        assert (scar & beside_blood).any()  # it grows from the endocardium
        # one territory: the scar spans at most 140 degrees (plus a pixel's worth) around the LV centre
        offsets = np.argwhere(scar) - centre
        angles = np.arctan2(offsets[:, 0], offsets[:, 1])
        around_mean = np.degrees(np.angle(np.exp(1j * (angles - np.angle(np.exp(1j * angles).mean())))))
        assert around_mean.max() - around_mean.min() < 150
        scar_shares.append(scar.sum() / myocardium.sum())
        oedema_seen += bool(oedema.any())
    assert 0.03 < np.median(scar_shares) < 0.35 and max(scar_shares) < 0.5
    assert 5 <= oedema_seen <= 25  # acute in about half
    # reproducible, and nothing to draw in where there is no LV blood pool
    assert np.array_equal(draw_infarct(mask, np.random.default_rng(1)), draw_infarct(mask, np.random.default_rng(1)))
    assert not draw_infarct(np.where(lv_blood, BACKGROUND_LABEL, mask), np.random.default_rng(0)).any()


def test_a_subendocardial_infarct_spares_the_epicardium(scar_slice: Slice, monkeypatch) -> None:
    monkeypatch.setattr(contrast_module, "INFARCT_TRANSMURALITY", (0.3, 0.3))  # a third of the wall
    mask = scar_slice.mask
    myocardium = mask == LV_MYOCARDIUM_LABEL
    epicardium = myocardium & ndimage.binary_dilation(~(myocardium | (mask == LV_BLOOD_LABEL)))
    endocardium = myocardium & ndimage.binary_dilation(mask == LV_BLOOD_LABEL)
    for seed in range(10):
        scar = draw_infarct(mask, np.random.default_rng(seed)) == SCAR
        assert (scar & endocardium).sum() > 5 * (scar & epicardium).sum()


def test_t1_maps_draw_infarcts_only_where_the_labels_have_no_lesions(scar_slice: Slice) -> None:
    plain = lesion_free(scar_slice)
    # at fraction 0 no draw between the scenario and the render: the maps of earlier recipes stay as they were
    rng = np.random.default_rng(4)
    scenario = draw_t1_scenario(rng)
    expected = render_t1_map(plain.image, plain.mask, scenario, rng, pixel_spacing_mm=plain.pixel_spacing_mm)
    np.testing.assert_array_equal(synthetic_t1_slice(plain, np.random.default_rng(4)).image, expected)
    # from a stream of its own, the same map plus the infarct (native: scar longer than the myocardium)
    without = synthetic_t1_slice(plain, np.random.default_rng(4), post_contrast=False)
    infarcted = synthetic_t1_slice(plain, np.random.default_rng(4), post_contrast=False, infarct_fraction=1.0,
                                   infarct_rng=np.random.default_rng(9))
    replay = np.random.default_rng(9)
    replay.random()  # the coin
    drawn = draw_infarct(plain.mask, replay)
    far = ndimage.distance_transform_edt(drawn == 0) > 10  # beyond the blur and the motion
    np.testing.assert_array_equal(infarcted.image[far], without.image[far])
    scar = _core(drawn == SCAR)
    assert np.median(infarcted.image[scar]) > np.median(without.image[scar]) + 100
    assert infarcted.pathology is None  # the copy keeps the source's labels
    # a MyoPS slice shows its own lesions and draws nothing: the same map at fraction 1 and 0
    np.testing.assert_array_equal(synthetic_t1_slice(scar_slice, np.random.default_rng(4), infarct_fraction=1.0).image,
                                  synthetic_t1_slice(scar_slice, np.random.default_rng(4)).image)


def test_add_infarct_moves_scar_toward_the_blood_and_oedema_either_way(scar_slice: Slice) -> None:
    mask, pathology = scar_slice.mask, scar_slice.pathology
    myocardium = mask == LV_MYOCARDIUM_LABEL
    scar, oedema = myocardium & (pathology == SCAR), myocardium & (pathology == OEDEMA)
    levels = np.where(myocardium, 0.3, np.where(mask == LV_BLOOD_LABEL, 0.8, 0.0))
    oedema_shifts = []
    for seed in range(20):  # the slice's own labels: scar 0.3-1.2 of the 0.5 to the blood, oedema 0.1-0.6 either way
        value = levels.copy()
        add_infarct(value, mask, pathology, 0.3, 0.8, np.random.default_rng(seed), fraction=1.0)
        shift = value - levels
        assert np.ptp(shift[scar]) < 1e-9 and 0.15 - 1e-9 <= shift[scar][0] <= 0.6 + 1e-9
        assert np.ptp(shift[oedema]) < 1e-9 and 0.05 - 1e-9 <= abs(shift[oedema][0]) <= 0.3 + 1e-9
        assert not shift[~(scar | oedema)].any()
        oedema_shifts.append(shift[oedema][0])
    assert min(oedema_shifts) < 0 < max(oedema_shifts)
    # a slice without lesion labels gets a drawn infarct, inside the myocardium only
    value = levels.copy()
    add_infarct(value, mask, None, 0.3, 0.8, np.random.default_rng(0), fraction=1.0)
    assert (value != levels).any() and not ((value != levels) & ~myocardium).any()
    # no draw at fraction 0: earlier recipes' images as they were
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    add_infarct(levels.copy(), mask, None, 0.3, 0.8, rng, fraction=0.0)
    assert rng.bit_generator.state == state
