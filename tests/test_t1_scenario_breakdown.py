"""scripts/t1_scenario_breakdown.py: synthetic T1 maps one scenario at a time, on the shipped MyoPS fixture."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from myops_stack import load_myops_stack
from scipy import ndimage
from script_modules import load_script

from cmr_landmark.synth.contrast import LV_MYOCARDIUM_LABEL, RV_BLOOD_LABEL, has_lesions


@pytest.fixture(scope="module")
def script():
    return load_script("t1_scenario_breakdown")


def test_each_scenario_is_the_one_asked_for_and_reproducible(script) -> None:
    stack = load_myops_stack()
    for name, (field_strength_t, post_contrast) in script.SCENARIOS.items():
        maps = script.scenario_maps(stack, field_strength_t, post_contrast, rv_wall=False)
        again = script.scenario_maps(stack, field_strength_t, post_contrast, rv_wall=False)
        assert all(np.array_equal(a.image, b.image) for a, b in zip(maps, again, strict=True)), name
        for t1_map in maps:
            blood = np.median(t1_map.image[t1_map.mask == RV_BLOOD_LABEL])
            myocardium = np.median(t1_map.image[t1_map.mask == LV_MYOCARDIUM_LABEL])
            # native: blood longer than myocardium; post-contrast: shorter, and the myocardium below 800 ms
            assert (blood < myocardium < 800) if post_contrast else (blood > myocardium > 800), name
    # post-contrast maps sit low in the normalised range, native ones do not
    post, native = (script.normalised_tissue_medians(script.scenario_maps(stack, 1.5, contrast, rv_wall=False))
                    for contrast in (True, False))
    assert post[1] < post[0] < native[0] < native[1]


def test_the_oracle_clip_stops_at_a_multiple_of_the_myocardium(script) -> None:
    maps = script.scenario_maps(load_myops_stack(), 1.5, True, rv_wall=False)
    for t1_map, clipped in zip(maps, script.clipped_at_myocardium(maps, 2.0), strict=True):
        reference = np.median(t1_map.image[t1_map.mask == LV_MYOCARDIUM_LABEL])
        assert clipped.image.max() <= 2.0 * reference + 1e-3 < t1_map.image.max()
        below = t1_map.image < 2.0 * reference
        np.testing.assert_array_equal(clipped.image[below], t1_map.image[below])
        np.testing.assert_array_equal(clipped.landmarks_rc, t1_map.landmarks_rc)


def test_lesions_as_labelled_left_out_or_drawn(script) -> None:
    stack = load_myops_stack()  # every slice carries MyoPS scar and oedema labels
    assert all(has_lesions(s.pathology) for s in stack)
    labelled, none = (script.scenario_maps(stack, 1.5, True, rv_wall=False, lesions=lesions)
                      for lesions in ("labelled", "none"))
    unlabelled = [dataclasses.replace(s, pathology=None) for s in stack]
    drawn = script.scenario_maps(unlabelled, 1.5, True, rv_wall=False, lesions="drawn")
    for with_lesions, without, infarcted in zip(labelled, none, drawn, strict=True):
        myocardium = with_lesions.mask == LV_MYOCARDIUM_LABEL
        # post-contrast scar is as short as the blood: the myocardium's mean T1 drops with the lesions drawn in
        assert with_lesions.image[myocardium].mean() < without.image[myocardium].mean()
        # the same map as without lesions away from the myocardium, an infarct drawn inside it
        far = ndimage.distance_transform_edt(~myocardium) > 10
        np.testing.assert_array_equal(infarcted.image[far], without.image[far])
        assert infarcted.image[myocardium].mean() < without.image[myocardium].mean()
    with pytest.raises(ValueError, match="lesions must be one of"):
        script.scenario_maps(stack, 1.5, True, rv_wall=False, lesions="some")


@pytest.mark.parametrize("arguments, message", [
    (["sax_t1", "--scenarios", "post_15"], "unknown post_15"),
    (["sax_t1", "--scenarios", ","], "unknown (none given)"),
    (["sax_t1", "--clip-at-myocardium", "0"], "must be a positive factor, got 0"),
    (["sax_t1", "--slices", "myops_lesions", "--lesions", "drawn"], "the myops_lesions slices all have some"),
])
def test_bad_options_are_refused_before_anything_loads(script, monkeypatch, capsys, arguments, message) -> None:
    monkeypatch.setattr("sys.argv", ["t1_scenario_breakdown.py", *arguments])
    monkeypatch.setattr(script, "evaluation_sets", lambda *args: pytest.fail("loaded the data"))
    with pytest.raises(SystemExit) as exit_:
        script.main()
    assert exit_.value.code == 2 and message in capsys.readouterr().err
