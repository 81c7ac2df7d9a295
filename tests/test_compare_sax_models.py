"""scripts/compare_sax_models.py's bookkeeping: cached results are tied to the images they were measured on, and
the clinical contrasts are pooled per landmark (the four images of a slice share its anatomy)."""

from __future__ import annotations

import dataclasses
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from myops_stack import load_myops_stack
from scipy import ndimage
from script_modules import load_script

from cmr_landmark.synth.clinical_contrasts import CLINICAL_CONTRASTS
from cmr_landmark.synth.contrast import LV_MYOCARDIUM_LABEL, RV_BLOOD_LABEL, rv_wall_mask


def compare_script():
    return load_script("compare_sax_models")


def test_set_fingerprint_changes_with_any_image_or_landmark() -> None:
    script = compare_script()
    stack = load_myops_stack()
    reference = script.set_fingerprint(stack)
    assert script.set_fingerprint(load_myops_stack()) == reference
    brighter = [dataclasses.replace(stack[0], image=stack[0].image * 1.001), *stack[1:]]
    moved = [*stack[:2], dataclasses.replace(stack[2], landmarks_rc=stack[2].landmarks_rc + 0.5)]
    assert script.set_fingerprint(brighter) != reference
    assert script.set_fingerprint(moved) != reference
    assert script.set_fingerprint(stack[:2]) != reference


def test_clinical_contrasts_are_pooled_per_landmark() -> None:
    script = compare_script()
    rng = np.random.default_rng(0)
    labelled = np.ones((50, 3), dtype=bool)
    labelled[::7, 0] = False  # landmarks absent in every contrast of those slices

    def result(offset_mm: float) -> dict:
        # a landmark's error is mostly its anatomy's (shared by its four images), a little the contrast's
        anatomy = rng.gamma(2.0, 1.5, size=(50, 3))
        per_set = {}
        for kind in CLINICAL_CONTRASTS:
            distances = anatomy + 0.2 * rng.standard_normal((50, 3)) + offset_mm
            per_set[kind] = {"distances_mm": np.where(labelled, distances, np.nan).tolist()}
        return per_set

    a, b = result(1.0), result(0.0)
    pooled_a = np.asarray(script.pooled_distances(a, list(CLINICAL_CONTRASTS))["distances_mm"])
    np.testing.assert_allclose(pooled_a, np.mean([a[k]["distances_mm"] for k in CLINICAL_CONTRASTS], axis=0))
    assert np.isnan(pooled_a[::7, 0]).all() and np.isfinite(pooled_a[labelled]).all()
    mean, half = script.paired_difference_mm({"distances_mm": pooled_a.tolist()},
                                             script.pooled_distances(b, list(CLINICAL_CONTRASTS)))
    assert abs(mean - 1.0) < 3 * half
    # over landmarks, not over the 4x as many images, which would pretend the shared anatomy were four samples
    naive_half = script.paired_difference_mm(
        {"distances_mm": np.concatenate([a[k]["distances_mm"] for k in CLINICAL_CONTRASTS]).tolist()},
        {"distances_mm": np.concatenate([b[k]["distances_mm"] for k in CLINICAL_CONTRASTS]).tolist()})[1]
    assert half > 1.5 * naive_half
    patients = [f"p{index // 5}" for index in range(50)]  # ten patients of five slices
    markdown = script.comparison_markdown({"a": a, "b": b}, list(CLINICAL_CONTRASTS),
                                          dict.fromkeys(CLINICAL_CONTRASTS, patients))
    assert "**clinical contrasts pooled** (10 patients)" in markdown
    patient_half = script.paired_difference_mm({"distances_mm": pooled_a.tolist()},
                                               script.pooled_distances(b, list(CLINICAL_CONTRASTS)), patients)[1]
    assert f"| a |  | {mean:+.2f} +- {half:.2f} / {patient_half:.2f} |" in markdown


def test_verdict_against_the_sequence_models_gives_both_intervals() -> None:
    script = compare_script()
    rng = np.random.default_rng(2)
    patients = {"cine": [f"c{i // 4}" for i in range(40)], "lge": [f"l{i // 10}" for i in range(40)]}
    control = {name: {"distances_mm": rng.gamma(2.0, 1.5, size=(40, 3)).tolist()} for name in patients}
    # each patient's slices share one offset: ten cine patients of four slices, four LGE patients of ten
    offsets = {"cine": np.repeat(rng.normal(0.3, 1.0, 10), 4), "lge": np.repeat(rng.normal(0.3, 1.0, 4), 10)}
    candidate = {name: {"distances_mm": (np.asarray(row["distances_mm"]) + offsets[name][:, None]).tolist()}
                 for name, row in control.items()}
    results = {"sax_any": candidate, "sax_cine": control, "sax_lge": control}
    text = script.verdict("sax_any", results, patients)
    for other, set_name in (("sax_cine", "cine"), ("sax_lge", "lge")):
        mean, half = script.paired_difference_mm(candidate[set_name], control[set_name])
        patient_half = script.paired_difference_mm(candidate[set_name], control[set_name], patients[set_name])[1]
        assert patient_half > half  # each patient's offset is shared by its slices
        assert f"{mean:+.2f} +- {half:.2f} mm (+- {patient_half:.2f} over patients) against {other} on {set_name}" \
            in text
    # a cached result keeps sets this run did not load (--sets cine): they are left out, not a KeyError
    only_cine = script.verdict("sax_any", results, {"cine": patients["cine"]})
    assert "against sax_cine on cine" in only_cine and "on lge" not in only_cine
    # one patient gives no interval over patients
    markdown = script.comparison_markdown(results, ["lge"], {"lge": ["one"] * 40})
    assert "**lge** (1 patients)" in markdown and " / n/a |" in markdown


def test_an_unknown_set_name_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys) -> None:
    script = compare_script()
    out = tmp_path / "out"
    monkeypatch.setattr("sys.argv", ["compare_sax_models.py", "--model", "sax_cine", "--out", str(out),
                                     "--sets", "cine,t2map"])
    with pytest.raises(SystemExit) as exit_:
        script.main()
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "unknown t2map" in error and "t2_map" in error  # names the typo and the right spelling
    assert not out.exists()


def test_card_quotes_the_epoch_validation_chose_from_the_run_metrics() -> None:
    script = compare_script()
    run_info = {"epochs": 0, "epochs_fine": 24,
                "metrics": {"fine": {"epoch": 19, "val_mean_mm": 3.5184}}}  # epochs count from 0 in the metrics
    assert script.chosen_epoch(run_info) == "; validation chose fine epoch 20 of 24 (3.52 mm on the validation images)"
    assert script.chosen_epoch({**run_info, "metrics": {"fine": {"epoch": -1, "val_mean_mm": 9.0}}}) == ""
    assert script.chosen_epoch({"epochs": 3}) == ""  # a run from before the metrics were kept


def test_card_rerun_command_carries_every_recipe_option(tmp_path, monkeypatch) -> None:
    # the card's rerun line must rebuild the recipe: an option left out of it trains another model
    script = compare_script()
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(tmp_path))
    run_info = {"kind": "any", "sources": {"cine": ["acdc"]}, "train_slices": 10, "val_slices": 4, "copies": 0,
                "fresh_fraction": 0.667, "map_look_fraction": 0.3, "uneven_blood_fraction": 0.5,
                "myocardial_lesion_fraction": 0.3, "rv_wall_fraction": 0.5, "epochs": 0,
                "epochs_fine": 16, "lr": 0.00025, "init_from": "models/sax_any.pt", "max_steps_per_epoch": None,
                "max_val_slices": 150, "threads": 2, "wall_s": 960.0, "threshold": 0.9, "threshold_images": 1651,
                "distance_loss_weight": 0.3}
    card = script.write_card("sax_any", "any", run_info, "", "", {}, {}).read_text()
    rerun = card.split("Rerun: `", 1)[1].split("`", 1)[0]
    for option in ("--fresh-fraction 0.667", "--map-look-fraction 0.3", "--uneven-blood-fraction 0.5",
                   "--myocardial-lesion-fraction 0.3", "--rv-wall-fraction 0.5",
                   "--epochs-fine 16", "--distance-loss-weight 0.3", "--init-from models/sax_any.pt"):
        assert option in rerun, option
    assert "50% of the random contrasts with patches of signal in the blood pools" in card
    assert "on 1651 training images (every labelled SAX training slice, as a random-contrast copy)" in card
    assert "30% of the random contrasts with lesion-like patches in the myocardium" in card
    assert "50% of the fresh random contrasts with the RV free wall at the myocardium's value" in card
    plain = script.write_card("sax_any", "any", {**run_info, "uneven_blood_fraction": 0.0,
                                                 "myocardial_lesion_fraction": 0.0, "rv_wall_fraction": 0.0},
                              "", "", {}, {}).read_text()
    assert "uneven" not in plain and "patches" not in plain and "lesion" not in plain and "RV free wall" not in plain
    assert "consistency" not in plain and "second view" not in plain
    paired = script.write_card("sax_any", "any", {**run_info, "fresh_fraction": 1.0, "consistency_weight": 4.0,
                                                  "consistency_toward_real": True}, "", "", {}, {}).read_text()
    paired_rerun = paired.split("Rerun: `", 1)[1].split("`", 1)[0]
    for option in ("--fresh-fraction 1.0", "--consistency-weight 4.0", "--consistency-toward-real"):
        assert option in paired_rerun, option
    # the pairs keep every real image: the card must not say they were all given random contrasts
    assert "each fine item the real image and a second view, 100% of the second views a fresh random" in paired
    assert "100% of them given" not in paired
    assert "the second view's maps pulled toward the real image's" in paired
    assert "batches of 24 pairs" in paired and "batches of 24 pairs" not in plain
    symmetric = script.write_card("sax_any", "any", {**run_info, "consistency_weight": 25.0}, "", "", {},
                                  {}).read_text()
    assert "the two views' maps pulled toward each other" in symmetric
    # a weight soup (scripts/weight_soup.py) is remade by averaging its runs, not by training the first again
    soup = script.write_card("sax_any", "any", {**run_info, "soup_of": ["runs/a", "runs/b"]}, "", "", {},
                             {}).read_text()
    assert "Rerun: `python scripts/weight_soup.py runs/a runs/b --out RUN`" in soup
    assert "the key-by-key average of the weights of the runs runs/a, runs/b" in soup
    assert "16 min summed over its 2 runs" in soup  # weight_soup.py sums the runs' times
    assert "weight soup" not in plain
    assert "--consistency-toward-real" not in symmetric
    # a T1 model trained on pairs saw every real image too, not maps alone
    t1_paired = script.write_card("sax_t1", "t1", {**run_info, "kind": "t1", "map_look_fraction": 0.0,
                                                   "fresh_fraction": 1.0, "consistency_weight": 4.0,
                                                   "consistency_toward_real": True}, "", "", {}, {}).read_text()
    assert ("the real labelled SAX cine and LGE slices of the training splits, each fine item the real image and one "
            "of synthetic MOLLI T1 maps") in t1_paired
    t1_card = script.write_card("sax_t1", "t1", {**run_info, "kind": "t1", "map_look_fraction": 0.0}, "", "",
                                {}, {}).read_text()
    assert "50% of the maps with patches of signal in the blood pools" in t1_card
    assert "--uneven-blood-fraction 0.5" in t1_card
    assert "of the fresh maps post-contrast" not in t1_card  # no share given: the scenario's own
    post_card = script.write_card("sax_t1", "t1", {**run_info, "kind": "t1", "map_look_fraction": 0.0,
                                                   "post_contrast_fraction": 0.5}, "", "", {}, {}).read_text()
    assert "50% of the fresh maps post-contrast (the validation maps 35%" in post_card
    assert "--post-contrast-fraction 0.5" in post_card
    warped = script.write_card("sax_any", "any", {**run_info, "deformation_fraction": 0.5}, "", "", {},
                               {}).read_text()
    assert "50% of the training items, real or fresh, warped by a smooth random field" in warped
    assert "--deformation-fraction 0.5" in warped and "warped" not in plain


def test_ship_replaces_a_model_of_the_same_name_only_with_overwrite(tmp_path, monkeypatch, capsys) -> None:
    # --ship wrote into the models folder whatever was there: a shipped sax_any or sax_t1 went unasked
    script = compare_script()
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "models" / "manifest.json", models)
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(models))

    def loading_the_sets(names):  # past the checks; stop before minutes of evaluation and any export
        raise RuntimeError("loading the evaluation sets")

    monkeypatch.setattr(script, "evaluation_sets", loading_the_sets)
    out = tmp_path / "out"

    def ship(name: str, *extra: str) -> None:
        monkeypatch.setattr("sys.argv", ["compare_sax_models.py", "--model", f"{name}={tmp_path / 'run'}",
                                         "--out", str(out), "--ship", f"{name}=any", *extra])
        script.main()

    with pytest.raises(SystemExit) as exit_:
        ship("sax_any")
    assert exit_.value.code == 2
    assert f"{models} already has a model 'sax_any'" in capsys.readouterr().err
    assert not out.exists()  # refused before anything ran
    for name, extra in (("sax_any", ["--overwrite"]), ("sax_mine", [])):
        with pytest.raises(RuntimeError, match="loading the evaluation sets"):
            ship(name, *extra)


def test_card_rerun_command_parses_back_to_the_run_with_the_training_script() -> None:
    # the rerun line is read by scripts/train_sax_synthetic.py's own parser: every recipe value of the run must come
    # back, and every recipe option the script has must be in the card's table
    script, train = compare_script(), load_script("train_sax_synthetic")
    parser = train.argument_parser()
    recipe_keys = {key for _, key, _ in script.RECIPE_OPTIONS}
    assert recipe_keys == {action.dest for action in parser._actions} - {"help", "kind", "out"}
    for _, key, default in script.RECIPE_OPTIONS:
        assert default is None or parser.get_default(key) == default, key
    run_info = {"kind": "any", "init_from": "runs/earlier", "lr": 0.00025, "epochs": 0, "epochs_fine": 12,
                "copies": 0, "fresh_fraction": 1.0, "max_steps_per_epoch": 40, "max_val_slices": 150,
                "val_contrast_copies": 1, "lge_repeats": 2, "map_look_fraction": 0.3, "uneven_blood_fraction": 0.5,
                "myocardial_lesion_fraction": 0.2, "rv_wall_fraction": 0.5, "post_contrast_fraction": 0.35,
                "t1_map_fraction": 0.2, "infarct_fraction": 0.3, "deformation_fraction": 0.5,
                "distil_from": ["cine=models/sax_cine.pt", "lge=models/sax_lge.pt"],
                "distil_weight": 0.25, "distance_loss_weight": 0.3, "consistency_weight": 4.0,
                "consistency_toward_real": True, "threads": 2, "seed": 1}
    words = shlex.split(script.rerun_command(run_info))
    assert words[:2] == ["python", "scripts/train_sax_synthetic.py"]
    args = parser.parse_args(words[2:])
    assert args.kind == "any" and args.out == Path("RUN")
    for key in recipe_keys:
        parsed = getattr(args, key)
        assert (str(parsed) if key == "init_from" else parsed) == run_info[key], key
    # a run from scratch with the script's defaults: no empty --init-from, no option at its default
    scratch = {**run_info, "init_from": "", "distil_from": [], "distil_weight": None, "max_steps_per_epoch": None,
               "lge_repeats": 1, "consistency_weight": 0.0, "consistency_toward_real": False, "seed": 0}
    line = script.rerun_command(scratch)
    assert "--init-from" not in line and "--lge-repeats" not in line and "--seed" not in line
    assert "--distil" not in line and "--consistency" not in line and "--max-steps" not in line
    scratch_args = parser.parse_args(shlex.split(line)[2:])
    assert scratch_args.init_from is None
    for key in recipe_keys - {"init_from", "distil_weight"}:  # no teachers: the weight is the script's default
        assert getattr(scratch_args, key) == scratch[key], key
    # a path with a space comes back as one argument
    spaced = parser.parse_args(shlex.split(script.rerun_command({**run_info, "init_from": "runs/my run"}))[2:])
    assert str(spaced.init_from) == "runs/my run"


def test_tables_show_both_angles_as_measured() -> None:
    """A shipped model's row carries the RV insertion angle and the anterior insertion's direction (the AHA
    orientation), each with its share within 10 degrees and its count of slices, and the table prints them."""
    from cmr_landmark.detector import Detector
    from cmr_landmark.evaluation import evaluate_slices
    from cmr_landmark.model_store import find_model

    script = compare_script()
    evaluation = evaluate_slices(Detector(find_model("sax", "cine", name="sax_cine"), use_bf16=False),
                                 load_myops_stack())
    row = script.result_row(evaluation)
    angle, direction = (row[name] for name in ("rv_insertion_angle", "anterior_rvi_direction"))
    assert direction["slices"] >= angle["slices"] > 0  # the direction needs two of the angle's three points
    assert 0 <= direction["within_tolerance_pct"] <= 100 and direction["abs_difference_mean"] >= 0

    landmark = {"mean_mm": 2.0, "detection_rate_pct": 90.0}
    made = {"mean_all_mm": 3.0, "A-RVI": landmark, "P-RVI": landmark, "C-LV": landmark,
            "rv_insertion_angle": {"slices": 20, "difference_mean": -1.25, "difference_sd": 11.0,
                                   "within_tolerance_pct": 75.0},
            "anterior_rvi_direction": {"slices": 24, "abs_difference_mean": 5.25, "within_tolerance_pct": 87.5},
            "slices": 30}
    table = script.tables_markdown({"m": {"cine": made}}, ["cine"])
    assert "angle error deg (within 10, of slices) | A-RVI direction error deg (within 10, of slices) |" in table
    assert "| m | 3.00 | 2.00 (90%) | 2.00 (90%) | 2.00 (90%) | -1.2 +- 11.0 (75% of 20) | 5.2 (88% of 24) |" in table


def test_rv_wall_sets_are_the_same_maps_with_the_wall_at_the_myocardium_value(monkeypatch) -> None:
    # the *_rv_wall sets redraw the synthetic maps of the same validation slices with every image's free wall as
    # myocardium; the plain sets stay exactly what they were (cached results stay valid)
    script = compare_script()
    stack = load_myops_stack()
    monkeypatch.setattr(script, "load_labelled_slices", lambda names, split, view, sequence: stack)
    names = ["t1_synthetic", "t1_synthetic_post_contrast", "ecv_map", "t1_synthetic_rv_wall", "ecv_map_rv_wall"]
    sets = script.evaluation_sets(names)
    assert list(sets) == names and all(len(slices) == 2 * len(stack) for slices in sets.values())
    # every post-contrast map has its blood darker than its myocardium (the blood's T1 shortened most)
    for t1_map, source in zip(sets["t1_synthetic_post_contrast"], stack + stack, strict=True):
        myocardium = (source.mask == LV_MYOCARDIUM_LABEL) & (source.pathology == 0)
        assert np.median(t1_map.image[source.mask == RV_BLOOD_LABEL]) < np.median(t1_map.image[myocardium]) < 800
    assert script.set_fingerprint(sets["ecv_map"]) == script.set_fingerprint(
        script.clinical_contrast_slices(stack + stack, "ecv_map", script.EVALUATION_SEED_CLINICAL))
    mask = stack[2].mask
    wall = rv_wall_mask(mask, stack[2].pixel_spacing_mm, 2.0)
    myocardium = (mask == LV_MYOCARDIUM_LABEL) & (stack[2].pathology == 0)
    for plain, walled in (("t1_synthetic", "t1_synthetic_rv_wall"), ("ecv_map", "ecv_map_rv_wall")):
        image = sets[walled][2].image
        np.testing.assert_array_equal(sets[walled][2].landmarks_rc, sets[plain][2].landmarks_rc)
        blood_contrast = abs(np.median(image[mask == RV_BLOOD_LABEL]) - np.median(image[myocardium]))
        assert abs(np.median(image[wall]) - np.median(image[myocardium])) < 0.5 * blood_contrast


def test_rv_wall_clinical_sets_are_pooled_beside_the_plain_ones() -> None:
    script = compare_script()
    rng = np.random.default_rng(1)
    result = {name: {"distances_mm": rng.gamma(2.0, 1.5, size=(10, 3)).tolist()}
              for name in (*CLINICAL_CONTRASTS, *script.CLINICAL_RV_WALL_SETS)}
    sets = [*CLINICAL_CONTRASTS, *script.CLINICAL_RV_WALL_SETS]
    markdown = script.comparison_markdown({"a": result, "b": result}, sets, dict.fromkeys(sets, list("abcdeabcde")))
    assert "**clinical contrasts pooled**" in markdown and "**clinical contrasts pooled_rv_wall**" in markdown


def test_synthetic_map_detection_is_pooled_at_each_models_own_threshold() -> None:
    script = compare_script()
    members = script.SYNTHETIC_MAP_GROUPS["T1 + clinical"]
    # two slices per set: A-RVI labelled at 0.8 and 0.2, P-RVI labelled at 0.5 and 0.9, C-LV absent at 0.7 and 0.1
    row = {"probability": [[0.8, 0.5, 0.7], [0.2, 0.9, 0.1]], "labelled": [[True, True, False], [True, True, False]]}
    results = {"strict": {"probability_threshold": 0.75, **{m: row for m in members}},
               "lenient": {"probability_threshold": 0.4, **{m: row for m in members}}}
    markdown = script.synthetic_map_detection_markdown(results, list(members))
    assert "| strict | 0.75 | 50.0 | 0.0 | 50.0 | 50.0 |" in markdown
    assert "| lenient | 0.4 | 75.0 | 50.0 | 25.0 | 50.0 |" in markdown
    assert "rv_wall" not in markdown  # a group is tabulated only where all its sets were measured


def test_the_infarct_set_is_the_t1_set_plus_an_infarct_where_the_labels_have_none(monkeypatch) -> None:
    script = compare_script()
    stack = load_myops_stack()
    without_lesions = [dataclasses.replace(s, pathology=None) for s in stack]
    monkeypatch.setattr(script, "load_labelled_slices", lambda names, split, view, sequence: without_lesions)
    sets = script.evaluation_sets(["t1_synthetic", "t1_synthetic_infarct"])
    for plain, infarcted in zip(sets["t1_synthetic"], sets["t1_synthetic_infarct"], strict=True):
        np.testing.assert_array_equal(plain.landmarks_rc, infarcted.landmarks_rc)
        myocardium = plain.mask == LV_MYOCARDIUM_LABEL
        far = ndimage.distance_transform_edt(~myocardium) > 10  # beyond the blur and the motion
        np.testing.assert_array_equal(plain.image[far], infarcted.image[far])
        assert not np.array_equal(plain.image[myocardium], infarcted.image[myocardium])
