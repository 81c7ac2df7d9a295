"""Evaluation tables on sets with known errors, the report files, and the shipped models on real slices."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from sax_phantom import phantom_slices
from scipy import stats

from cmr_landmark.config import COARSE_GRID, FINE_GRID_BY_VIEW, LANDMARKS_BY_VIEW
from cmr_landmark.evaluation import (
    Evaluation,
    choose_threshold,
    evaluate_slices,
    image_table,
    landmark_table,
    main_evaluate,
    main_export,
    measure_table,
    pair_distance_as_set_mm,
    write_report,
)
from cmr_landmark.export import export_cascade, load_training_state
from cmr_landmark.measures import rv_insertion_angle_deg
from cmr_landmark.model_store import find_model
from cmr_landmark.network import LandmarkCascade, LandmarkEnsemble, UNet
from cmr_landmark.training import load_stage_weights


def _known_errors(seed: int = 0) -> tuple[Evaluation, np.ndarray, np.ndarray]:
    """40 slices; landmark k is unlabelled on some, missed on some (probability under 0.5), falsely found on some."""
    rng = np.random.default_rng(seed)
    n = 40
    truth = rng.uniform(40, 80, (n, 3, 2))
    labelled = rng.random((n, 3)) > 0.2
    truth[~labelled] = np.nan
    offsets_px = rng.normal(0, 2.0, (n, 3, 2))
    predicted = np.where(labelled[..., None], truth, 60.0) + offsets_px
    probability = rng.uniform(0.6, 1.0, (n, 3))
    missed = labelled & (rng.random((n, 3)) < 0.1)
    probability[missed] = 0.2
    probability[~labelled & (rng.random((n, 3)) < 0.5)] = 0.1  # most unlabelled are quiet, some not
    spacing = rng.uniform(1.0, 2.0, (n, 2))
    evaluation = Evaluation("sax", 0.5, predicted, probability, truth, spacing)
    return evaluation, offsets_px * spacing[:, None, :], missed


def test_landmark_table_reports_the_known_detections_false_positives_and_distances() -> None:
    evaluation, offsets_mm, missed = _known_errors()
    rows = landmark_table(evaluation)
    labelled = np.all(np.isfinite(evaluation.truth_rc), axis=2)
    for k, row in enumerate(rows):
        found = labelled[:, k] & ~missed[:, k]
        distances = np.hypot(offsets_mm[found, k, 0], offsets_mm[found, k, 1])
        false_positives = (~labelled[:, k] & (evaluation.probability[:, k] >= 0.5)).sum()
        assert row["landmark"] == LANDMARKS_BY_VIEW["sax"][k]
        assert row["labelled"] == labelled[:, k].sum() and row["detected"] == found.sum()
        assert row["detection_rate_pct"] == pytest.approx(100 * found.sum() / labelled[:, k].sum())
        assert row["false_positives"] == false_positives
        assert row["false_positive_rate_pct"] == pytest.approx(100 * false_positives / (~labelled[:, k]).sum())
        assert row["mean_mm"] == pytest.approx(distances.mean())
        assert row["sd_mm"] == pytest.approx(distances.std(ddof=1))
        assert row["max_mm"] == pytest.approx(distances.max())
    assert 0 < rows[0]["detection_rate_pct"] < 100 and rows[0]["false_positives"] > 0  # the set exercises both


def test_image_table_counts_empty_slices_reported_empty_and_complete_slices_found_whole() -> None:
    # 6 slices: 3 outside the heart (one with a spurious landmark), 3 with all landmarks (one with a miss)
    truth = np.full((6, 3, 2), 50.0)
    truth[:3] = np.nan
    probability = np.full((6, 3), 0.9)
    probability[:3] = 0.1
    probability[1, 2] = 0.7  # a C-LV reported outside the heart
    probability[5, 0] = 0.2  # an A-RVI missed on a heart slice
    evaluation = Evaluation("sax", 0.5, np.full((6, 3, 2), 50.0), probability, truth, np.ones((6, 2)))
    empty, complete = image_table(evaluation)
    assert (empty["count"], empty["correct"], empty["false_positive_images"]) == (3, 2, 1)
    assert empty["false_positive_pct"] == pytest.approx(100 / 3)
    assert (complete["count"], complete["correct"]) == (3, 2) and complete["correct_pct"] == pytest.approx(200 / 3)


def test_measure_table_compares_angles_with_a_paired_t_test() -> None:
    evaluation, _, _ = _known_errors(seed=1)
    row, _ = measure_table(evaluation)
    complete = np.all(evaluation.labelled & evaluation.detected, axis=1)
    indices = np.flatnonzero(complete)
    label = [rv_insertion_angle_deg(*evaluation.truth_rc[i], evaluation.spacing_mm[i]) for i in indices]
    predicted = [rv_insertion_angle_deg(*evaluation.predicted_rc[i], evaluation.spacing_mm[i]) for i in indices]
    differences = np.subtract(predicted, label)
    assert row["measure"] == "rv_insertion_angle" and row["slices"] == complete.sum() > 5
    assert row["difference_mean"] == pytest.approx(differences.mean())
    assert row["difference_sd"] == pytest.approx(differences.std(ddof=1))
    assert row["paired_t_test_p"] == pytest.approx(stats.ttest_rel(predicted, label).pvalue)


def test_a_systematic_angle_error_is_significant() -> None:
    rng = np.random.default_rng(2)
    n, radius_px = 20, 20.0
    anterior_deg, posterior_deg = rng.uniform(100, 125, n), rng.uniform(220, 250, n)

    def points(anterior: np.ndarray) -> np.ndarray:
        around = [np.stack([-np.sin(np.radians(a)), np.cos(np.radians(a))], axis=1) for a in (anterior, posterior_deg)]
        return np.stack([60 + radius_px * around[0], 60 + radius_px * around[1], np.full((n, 2), 60.0)], axis=1)

    # every predicted anterior point 4 +- 1 degrees further round: the paired test must see a 4 degree bias
    widened = anterior_deg - rng.normal(4.0, 1.0, n)
    evaluation = Evaluation("sax", 0.5, points(widened), np.ones((n, 3)), points(anterior_deg), np.ones((n, 2)))
    row, direction = measure_table(evaluation)
    assert row["paired_t_test_p"] < 1e-3
    assert row["difference_mean"] == pytest.approx(np.mean(anterior_deg - widened))
    # the anterior point alone moved: its direction seen from the centre turned clockwise by the same angles
    assert direction["measure"] == "anterior_rvi_direction" and direction["slices"] == n
    assert direction["difference_mean"] == pytest.approx(np.mean(widened - anterior_deg))
    assert direction["within_tolerance_pct"] == pytest.approx(100.0)


def test_direction_errors_wrap_and_count_against_the_tolerance() -> None:
    # A-RVI straight up from the centre (direction 0 from image up, where directions wrap); predicted 8 deg either
    # side of it, and 25 deg off: differences -8, +8, +25, never 352, and the mean direction near 8, not 128
    centre = np.array([60.0, 60.0])
    truth_direction_deg = 90.0  # as anterior() draws it: counter-clockwise from the image's right
    predicted_deg = np.array([82.0, 98.0, 115.0])

    def anterior(angle_deg: np.ndarray) -> np.ndarray:
        return centre + 20.0 * np.stack([-np.sin(np.radians(angle_deg)), np.cos(np.radians(angle_deg))], axis=-1)

    predicted = np.stack([anterior(predicted_deg), np.full((3, 2), np.nan), np.tile(centre, (3, 1))], axis=1)
    truth = np.stack([np.tile(anterior(np.array(truth_direction_deg)), (3, 1)), np.full((3, 2), np.nan),
                      np.tile(centre, (3, 1))], axis=1)
    probability = np.array([[0.9, 0.0, 0.9]] * 3)
    evaluation = Evaluation("sax", 0.5, predicted, probability, truth, np.ones((3, 2)))
    angle, direction = measure_table(evaluation)
    assert angle["slices"] == 0  # no P-RVI: no insertion angle
    assert direction["slices"] == 3
    assert direction["difference_mean"] == pytest.approx((-8 + 8 + 25) / 3)
    assert direction["abs_difference_mean"] == pytest.approx((8 + 8 + 25) / 3)
    assert direction["within_tolerance_pct"] == pytest.approx(200 / 3)
    assert direction["label_mean"] == pytest.approx(0.0, abs=1e-6) or direction["label_mean"] == pytest.approx(360.0)
    assert abs(direction["predicted_mean"] - 8.3) < 1.0


def test_threshold_is_chosen_between_absent_and_present_probabilities() -> None:
    evaluation, _, _ = _known_errors(seed=3)
    evaluation.probability = np.where(evaluation.labelled, 0.8, 0.2)
    assert 0.2 < choose_threshold(evaluation) <= 0.8


def test_evaluate_slices_runs_a_cascade_and_writes_the_report(tmp_path) -> None:
    slices = phantom_slices(10, seed=4)
    torch.manual_seed(4)
    cascade = LandmarkCascade(UNet(3, (8, 16)), UNet(3, (8, 16)))  # untrained: exercises the path, not accuracy
    evaluation = evaluate_slices(cascade, slices, probability_threshold=0.0)
    assert evaluation.predicted_rc.shape == (10, 3, 2) and np.all(np.isfinite(evaluation.predicted_rc))
    assert all(row["detection_rate_pct"] == 100.0 for row in evaluation.landmark_rows)  # threshold 0: all found
    write_report(evaluation, slices, tmp_path, "untrained on phantoms")
    with open(tmp_path / "slices.csv") as stream:
        assert len(list(csv.DictReader(stream))) == 10
    assert (tmp_path / "report.md").read_text().startswith("### untrained on phantoms")
    assert (tmp_path / "worst_cases.png").stat().st_size > 1000


def test_exported_model_carries_its_training_state(tmp_path) -> None:
    torch.manual_seed(0)
    cascade = LandmarkCascade(UNet(3, (8, 16)), UNet(3, (8, 16)))
    path = export_cascade(cascade, "m", "sax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.3, tmp_path,
                          embed_training_state=True)
    state = load_training_state(path)
    for name, value in cascade.fine.state_dict().items():
        np.testing.assert_allclose(state["fine"][name].numpy(), value.numpy(), rtol=1e-3, atol=1e-4)
    # --init-from accepts the shipped file: a U-Net of the same shape takes the weights
    UNet(3, (8, 16)).load_state_dict(load_stage_weights(path, "coarse"))


def test_an_ensemble_answers_with_the_mean_of_its_members_probabilities_also_when_frozen() -> None:
    torch.manual_seed(0)
    members = [LandmarkCascade(UNet(3, (8, 16)), UNet(3, (8, 16))).eval() for _ in range(3)]
    ensemble = LandmarkEnsemble(members).eval()
    frozen = torch.jit.freeze(torch.jit.script(ensemble),
                              preserved_attrs=["coarse_probabilities", "fine_probabilities"])
    x = torch.randn(2, 1, 32, 32)
    with torch.inference_mode():
        for stage in ("coarse_probabilities", "fine_probabilities"):
            expected = torch.stack([getattr(member, stage)(x) for member in members]).mean(dim=0)
            assert not torch.allclose(getattr(members[0], stage)(x), expected)  # the members differ
            torch.testing.assert_close(getattr(ensemble, stage)(x), expected)
            torch.testing.assert_close(getattr(frozen, stage)(x), expected)
            torch.testing.assert_close(expected.sum(dim=1), torch.ones(2, 32, 32))
    with pytest.raises(ValueError, match="at least one member"):
        LandmarkEnsemble([])


def test_evaluate_slices_rejects_mixed_views_and_empty_input() -> None:
    slices = phantom_slices(2)
    slices[1].view = "lax"
    cascade = LandmarkCascade(UNet(3, (8, 16)), UNet(3, (8, 16)))
    with pytest.raises(ValueError, match="one view"):
        evaluate_slices(cascade, slices)
    with pytest.raises(ValueError, match="no slices"):
        evaluate_slices(cascade, [])


@pytest.mark.parametrize(("sequence", "dataset", "limit_mm"), [("cine", "acdc", 5.0), ("lge", "mscmrseg_lge", 6.0)])
def test_shipped_model_finds_landmarks_on_a_real_validation_patient(shared_data, sequence, dataset, limit_mm) -> None:
    from cmr_landmark.datasets import iter_slices, read_splits
    from cmr_landmark.detector import Detector

    spec = find_model("sax", sequence)
    assert spec.sequence == sequence, f"models/manifest.json has no sax {sequence} model (only {spec.name})"
    patient = read_splits()[dataset]["val"][0]
    # the sets are read in patient order: stop right after the first validation patient
    reaching = itertools.dropwhile(lambda s: s.patient != patient, iter_slices(dataset, shared_data))
    slices = [s for s in itertools.takewhile(lambda s: s.patient == patient, reaching) if s.labelled]
    assert slices, f"validation patient {patient} of {dataset} not found"
    evaluation = evaluate_slices(Detector(spec), slices)
    complete = np.all(evaluation.labelled, axis=1)
    assert complete.sum() >= 3
    distances = evaluation.distances_mm[complete]
    assert np.median(distances) < limit_mm, f"median error {np.median(distances):.1f} mm on {patient}"
    assert evaluation.detected[complete].mean() > 0.8


def test_a_pair_compared_as_a_set_forgives_swapped_names_but_not_distance() -> None:
    labels = np.array([[10.0, 10.0], [30.0, 10.0]])
    spacing = (0.5, 2.0)  # mm per row, per column
    assert pair_distance_as_set_mm(labels[::-1], labels, spacing) == 0.0
    # one point 4 rows (2 mm) off, the other 1 column (2 mm) off, names swapped: 2 mm either way round
    moved = np.array([[30.0, 11.0], [14.0, 10.0]])
    assert pair_distance_as_set_mm(moved, labels, spacing) == pytest.approx(2.0)
    # named right, the straight matching counts: one point on its label, the other 3 columns (6 mm) off
    assert pair_distance_as_set_mm(np.array([[10.0, 10.0], [30.0, 13.0]]), labels, spacing) == pytest.approx(3.0)


def test_paired_difference_is_over_the_entries_both_measured():
    from cmr_landmark.evaluation import paired_difference

    candidate = np.array([[2.0, np.nan], [4.0, 5.0], [6.0, 1.0]])
    control = np.array([[1.0, 3.0], [2.0, np.nan], [3.0, 0.0]])
    mean, half_width = paired_difference(candidate, control)  # differences 1, 2, 3, 1 (two pairs have a NaN)
    assert mean == pytest.approx(7.0 / 4.0)
    assert half_width == pytest.approx(1.96 * np.std([1.0, 2.0, 3.0, 1.0], ddof=1) / np.sqrt(4))


def test_paired_difference_over_patients_counts_each_patients_slices_as_one_draw():
    from scipy import stats

    from cmr_landmark.evaluation import paired_difference

    rng = np.random.default_rng(3)
    # six patients of one entry each: the interval over patients is Student's t interval of the six differences
    candidate, control = rng.normal(1.0, 1.0, (6, 1)), np.zeros((6, 1))
    mean, half_width = paired_difference(candidate, control, [f"p{i}" for i in range(6)])
    assert mean == pytest.approx(candidate.mean())
    assert half_width == pytest.approx(stats.t.ppf(0.975, 5) * candidate.std(ddof=1) / np.sqrt(6))

    # a patient's slices go together: four patients, each with its own offset shared by its eight slices
    offsets = np.repeat(rng.normal(0.0, 2.0, 4), 8)
    candidate = offsets[:, None] + 0.1 * rng.standard_normal((32, 3))
    control = np.zeros((32, 3))
    candidate[0, 1] = control[5, 2] = np.nan  # entries not measured by one model are left out, as before
    patients = [f"p{i // 8}" for i in range(32)]
    over_landmarks = paired_difference(candidate, control)
    over_patients = paired_difference(candidate, control, patients)
    assert over_patients[0] == over_landmarks[0]
    assert over_patients[1] > 3 * over_landmarks[1]  # 94 entries but only four independent draws
    # the entries of each patient twice over: the entry-wise interval narrows, the patients' one stays
    twice = paired_difference(np.vstack([candidate, candidate]), np.vstack([control, control]), patients * 2)
    assert twice == pytest.approx(over_patients)
    assert paired_difference(np.vstack([candidate, candidate]), np.vstack([control, control]))[1] < over_landmarks[1]


def test_paired_difference_over_patients_is_the_cr1_sandwich_of_uneven_patients():
    from scipy import stats

    from cmr_landmark.evaluation import paired_difference

    # three patients of 1, 2 and 3 entries (one more entry unmeasured), worked by hand:
    # differences 1 | 2, 4 | 0, 3, 5 -> mean 15/6 = 2.5; residual sums -1.5 | 1.0 | 0.5
    candidate = np.array([[1.0], [2.0], [4.0], [0.0], [3.0], [5.0], [np.nan]])
    patients = ["a", "b", "b", "c", "c", "c", "c"]
    mean, half_width = paired_difference(candidate, np.zeros_like(candidate), patients)
    assert mean == pytest.approx(2.5)
    cr1_variance = 3 / 2 * (1.5**2 + 1.0**2 + 0.5**2) / 6**2
    assert half_width == pytest.approx(stats.t.ppf(0.975, 2) * np.sqrt(cr1_variance))


def test_paired_difference_over_patients_needs_a_name_per_row_and_two_patients():
    from cmr_landmark.evaluation import paired_difference

    candidate, control = np.ones((4, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match="one name per slice \\(row\\) of the differences expected: 4 rows, 3 names"):
        paired_difference(candidate, control, ["a", "b", "c"])
    # one entry per slice: a 1-D difference is one column
    assert paired_difference(np.arange(4.0), np.zeros(4), ["a", "a", "b", "b"]) == paired_difference(
        np.arange(4.0)[:, None], np.zeros((4, 1)), ["a", "a", "b", "b"])
    mean, half_width = paired_difference(candidate, control, ["a"] * 4)
    assert mean == 1.0 and np.isnan(half_width)
    # a patient whose every entry is unmeasured is no draw
    candidate[2:] = np.nan
    assert np.isnan(paired_difference(candidate, control, ["a", "a", "b", "b"])[1])


@pytest.mark.parametrize("arguments, message", [
    (["--view", "lax", "--model", "sax_cine"], "model sax_cine is for view sax, not lax"),
    (["--view", "sax", "--model", "lax_cine"], "model lax_cine is for view lax, not sax"),
    (["--view", "sax", "--model", "sax_cinee"], "model 'sax_cinee' is not in the manifest"),
    (["--view", "sax", "--models-dir", "TMP/no_models"], "no model manifest at TMP/no_models/manifest.json"),
    (["--view", "sax", "--run", "TMP/no_run"], "--run TMP/no_run: no coarse stage weights at TMP/no_run"),
    (["--view", "sax", "--threshold", "1.5"], "--threshold: must be a probability in [0, 1], got '1.5'"),
    (["--view", "sax", "--threshold", "-1"], "--threshold: must be a probability in [0, 1], got '-1'"),
    (["--view", "sax", "--threshold", "nan"], "--threshold: must be a probability in [0, 1], got 'nan'"),
    (["--view", "sax", "--threads", "0"], "--threads: at least 1, got 0"),
])
def test_evaluate_says_what_is_wrong_with_its_model_or_threshold_in_one_line(tmp_path, capsys, arguments, message):
    # each was a traceback (ValueError, FileNotFoundError, ModelError) or, for the threshold, a run with it
    arguments = [argument.replace("TMP", str(tmp_path)) for argument in arguments]
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as stop:
        main_evaluate([*arguments, "--via", str(FIXTURES / "via" / "sax_project.json"), "--out", str(out)])
    assert stop.value.code == 2
    assert message.replace("TMP", str(tmp_path)) in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("arguments, message", [
    ([], "is not a finished training run folder: it has no run.json, metrics.json, coarse_best.pt, fine_best.pt"),
    (["--threshold", "1.5"], "--threshold: must be 'auto' or a probability in [0, 1], got '1.5'"),
    (["--threshold", "high"], "--threshold: must be 'auto' or a probability in [0, 1], got 'high'"),
    (["--name", "../evil"], "--name '../evil': letters, digits"),  # it was written outside --models-dir
    (["--notes", "/nonexistent/notes.md"], "--notes '/nonexistent/notes.md': no such file"),
    # the notes' text given in place of their file: an OSError (name too long) traceback
    (["--notes", "## Notes\n" + "x" * 300], "--notes '## Notes\\n" + "x" * 71 + "': no such file"),
    (["--fine-search-radius-mm", "-3"], "--fine-search-radius-mm must be a positive number"),
])
def test_export_says_what_is_wrong_with_its_run_or_threshold_in_one_line(tmp_path, capsys, arguments, message):
    models = tmp_path / "models"
    with pytest.raises(SystemExit) as stop:  # a FileNotFoundError traceback; a threshold of 1.5 was taken
        main_export(["--run", str(tmp_path / "no_run"), "--name", "x", "--models-dir", str(models), *arguments])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not models.exists()


def test_the_subjects_a_model_was_trained_on_are_named_from_its_manifest():
    from types import SimpleNamespace

    from cmr_landmark.evaluation import training_subjects_among

    lax = find_model("lax", "cine", name="lax_cine")  # trained on M&Ms-2 001's two labelled frames
    slices = [SimpleNamespace(dataset="mnms2", patient="001"), SimpleNamespace(dataset="acdc", patient="patient001")]
    assert training_subjects_among(lax.training_patients, slices) == ["mnms2/001"]
    assert training_subjects_among(find_model("sax", "cine", name="sax_cine").training_patients, slices) == []


def test_evaluate_calls_the_figures_on_a_models_training_subject_training_figures(shared_data, tmp_path, capsys):
    main_evaluate(["--view", "lax", "--datasets", "mnms2", "--split", "val", "--out", str(tmp_path)])
    assert ("warning: 2 of 2 slices are of mnms2/001, which lax_cine was trained on: training figures, not a "
            "validation") in capsys.readouterr().err
    assert "training figures, not a validation" in (tmp_path / "report.md").read_text().splitlines()[0]


def test_evaluate_refuses_a_run_of_the_other_view(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"view": "sax", "sequence": "lge"}')
    with pytest.raises(SystemExit) as stop:  # its points were scored as the other view's landmarks
        main_evaluate(["--view", "lax", "--run", str(run), "--datasets", "mnms2", "--out", str(tmp_path / "ev")])
    assert stop.value.code == 2 and f"--run {run} trained a sax model, not lax" in capsys.readouterr().err


def test_an_export_fine_tuned_from_a_model_carries_its_training_subjects_and_says_which_model_is_default(
        tmp_path, capsys):
    from cmr_landmark.training import main_train

    torch.manual_seed(0)
    tiny = LandmarkCascade(UNet(3, widths=(4, 8)), UNet(3, widths=(4, 8)))
    start, models = tmp_path / "start", tmp_path / "models"
    export_cascade(tiny, "start", "sax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.5, start,
                   embed_training_state=True, extra={"training_patients": ["mnms2/001"]})
    export_cascade(tiny, "aaa_first", "sax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.5, models)
    project = FIXTURES / "via" / "sax_project.json"
    run = tmp_path / "run"
    assert main_train(["--view", "sax", "--via", str(project), "--via-val", str(project), "--epochs", "1",
                       "--batch-size", "2", "--init-from", str(start / "start.pt"), "--out", str(run)]) == 0
    assert main_export(["--run", str(run), "--name", "mine", "--models-dir", str(models)]) == 0
    entry = next(e for e in json.loads((models / "manifest.json").read_text())["models"] if e["name"] == "mine")
    assert entry["training_patients"] == ["mnms2/001"]
    assert entry["mirror_average"] and entry.get("fine_search_radius_mm") is None  # the short axis's settings
    assert "detect and the gadget choose aaa_first for sax/cine" in capsys.readouterr().out


def test_a_run_started_from_a_run_inherits_the_training_subjects_and_evaluate_run_names_them(
        shared_data, tmp_path, capsys):
    from cmr_landmark.evaluation import inherited_training_patients
    from cmr_landmark.training import main_train

    torch.manual_seed(0)
    tiny = LandmarkCascade(UNet(3, widths=(4, 8)), UNet(3, widths=(4, 8)))
    export_cascade(tiny, "start", "sax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.5, tmp_path / "models",
                   embed_training_state=True, extra={"training_patients": ["mnms2/001"]})
    project = FIXTURES / "via" / "sax_project.json"
    train = ["--view", "sax", "--via", str(project), "--via-val", str(project), "--epochs", "1", "--batch-size", "2"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main_train([*train, "--init-from", str(tmp_path / "models" / "start.pt"), "--out", str(first)]) == 0
    # the second run starts from the first run's folder, not from a model file with a manifest
    assert main_train([*train, "--init-from", str(first), "--out", str(second)]) == 0
    assert inherited_training_patients(json.loads((second / "run.json").read_text())) == ["mnms2/001"]
    capsys.readouterr()
    main_evaluate(["--view", "sax", "--run", str(second), "--datasets", "mnms2", "--split", "val",
                   "--out", str(tmp_path / "ev")])
    assert "slices are of mnms2/001, which" in capsys.readouterr().err  # was silent: figures on a training subject


def test_a_resume_starts_from_the_runs_own_start_weights_and_refuses_others(tmp_path, capsys):
    from cmr_landmark.training import main_train

    torch.manual_seed(0)
    tiny = LandmarkCascade(UNet(3, widths=(4, 8)), UNet(3, widths=(4, 8)))
    for name in ("start", "other"):
        export_cascade(tiny, name, "sax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.5, tmp_path / "models",
                       embed_training_state=True)
    start, other = tmp_path / "models" / "start.pt", tmp_path / "models" / "other.pt"
    project = FIXTURES / "via" / "sax_project.json"
    run = tmp_path / "run"
    train = ["--view", "sax", "--via", str(project), "--via-val", str(project), "--batch-size", "2", "--out", str(run)]
    assert main_train([*train, "--epochs", "1", "--init-from", str(start)]) == 0
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["init_from"] == str(start.resolve()) and recorded["widths"] == recorded["widths_fine"] == [4, 8]
    # no --init-from or --widths again: the run's own (the network is the start weights', not --widths' default)
    assert main_train([*train, "--epochs", "2", "--resume"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main_train([*train, "--epochs", "3", "--resume", "--init-from", str(other)])
    assert stop.value.code == 2 and f"init_from '{other.resolve()}' (the run's: '{start.resolve()}')" in (
        capsys.readouterr().err)


def test_export_and_evaluate_run_a_training_run_as_the_shipped_models_of_its_view_are_run():
    from cmr_landmark.config import LAX_FINE_SEARCH_RADIUS_MM
    from cmr_landmark.evaluation import run_inference_settings

    shipped = {view: find_model(view, "cine") for view in ("sax", "lax")}
    for view, spec in shipped.items():
        settings = run_inference_settings(view, None, "mean", None)
        assert settings["mirror_average"] == spec.mirror_average
        assert settings["fine_search_radius_mm"] == spec.fine_search_radius_mm
    assert shipped["lax"].fine_search_radius_mm == LAX_FINE_SEARCH_RADIUS_MM
    assert run_inference_settings("lax", True, "log_linear", 12.0) == {
        "mirror_average": True, "mirror_pooling": "log_linear", "fine_search_radius_mm": 12.0}


def test_manifests_are_written_and_shipped_as_strict_json(tmp_path):
    from cmr_landmark.config import models_dir
    from cmr_landmark.model_store import edit_manifest

    edit_manifest(tmp_path, lambda manifest: manifest["models"].append(
        {"name": "x", "validation": {"mean_mm": float("nan"), "slices": np.int64(3)}}))
    strict = json.loads((tmp_path / "manifest.json").read_text(), parse_constant=pytest.fail)  # jq/JavaScript: no NaN
    assert strict["models"][0]["validation"] == {"mean_mm": None, "slices": 3}
    json.loads((models_dir() / "manifest.json").read_text(), parse_constant=pytest.fail)


# --- hand-computed tables (each pins one rule the judged figures depend on) --------------------------------------


def test_a_probability_equal_to_the_threshold_is_a_detection() -> None:
    # "below which a landmark is not found": a peak of exactly the threshold is found, labelled or not
    truth = np.full((2, 3, 2), 50.0)
    truth[1] = np.nan  # slice 1 has no landmark
    probability = np.array([[0.5, 0.5, 0.9], [0.5, 0.1, 0.1]])
    evaluation = Evaluation("sax", 0.5, np.full((2, 3, 2), 50.0), probability, truth, np.ones((2, 2)))
    anterior = landmark_table(evaluation)[0]
    assert anterior["detected"] == 1 and anterior["detection_rate_pct"] == 100.0
    assert anterior["false_positives"] == 1 and anterior["false_positive_rate_pct"] == 100.0


def test_image_table_counts_partly_labelled_slices_in_neither_row() -> None:
    # A: nothing labelled, nothing found; B: nothing labelled, A-RVI found; C, D: only C-LV labelled (an apical slice
    # with no RV), D with a spurious A-RVI; E: all labelled and found; F: all labelled, P-RVI missed
    truth = np.full((6, 3, 2), 50.0)
    truth[[0, 1]] = np.nan
    truth[[2, 3], :2] = np.nan
    probability = np.array([[0.1, 0.1, 0.1], [0.9, 0.1, 0.1], [0.1, 0.1, 0.9], [0.9, 0.1, 0.9],
                            [0.9, 0.9, 0.9], [0.9, 0.2, 0.9]])
    evaluation = Evaluation("sax", 0.5, np.full((6, 3, 2), 50.0), probability, truth, np.ones((6, 2)))
    empty, complete = image_table(evaluation)
    assert (empty["count"], empty["correct"], empty["false_positive_images"]) == (2, 1, 1)
    assert empty["correct_pct"] == 50.0 and empty["false_positive_pct"] == 50.0
    assert (complete["count"], complete["correct"], complete["correct_pct"]) == (2, 1, 50.0)


def test_the_mean_distance_is_over_the_labelled_landmarks_whatever_their_probability() -> None:
    spacing = np.array([[1.0, 2.0], [1.0, 2.0]])  # rows 1 mm, columns 2 mm
    truth = np.full((2, 3, 2), 40.0)
    truth[1] = np.nan  # nothing labelled on slice 1: its predictions count nowhere
    predicted = np.full((2, 3, 2), 40.0)
    predicted[0, 0] = (43.0, 40.0)  # 3 rows: 3 mm
    predicted[0, 1] = (40.0, 42.0)  # 2 columns: 4 mm
    probability = np.array([[0.9, 0.1, 0.9], [0.9, 0.9, 0.9]])  # P-RVI missed: still counted, thresholds aside
    evaluation = Evaluation("sax", 0.5, predicted, probability, truth, spacing)
    assert evaluation.mean_distance_mm == pytest.approx((3.0 + 4.0 + 0.0) / 3)


def test_landmark_table_statistics_on_hand_computed_distances() -> None:
    # C-LV found 5 times, 1, 2, 3, 4 and 10 mm off along the 0.5 mm columns; missed once (50 mm off, not counted);
    # unlabelled once
    offsets_mm = [1.0, 2.0, 3.0, 4.0, 10.0, 50.0]
    truth = np.full((7, 3, 2), 60.0)
    truth[6] = np.nan
    predicted = truth.copy()
    predicted[6] = 60.0
    predicted[:6, 2, 1] += np.array(offsets_mm) / 0.5
    probability = np.full((7, 3), 0.9)
    probability[5, 2] = 0.2
    probability[6] = 0.1
    evaluation = Evaluation("sax", 0.5, predicted, probability, truth, np.tile([2.0, 0.5], (7, 1)))
    row = landmark_table(evaluation)[2]
    assert row["landmark"] == "C-LV" and (row["labelled"], row["detected"], row["unlabelled"]) == (6, 5, 1)
    assert row["detection_rate_pct"] == pytest.approx(500 / 6) and row["false_positives"] == 0
    assert row["mean_mm"] == pytest.approx(4.0)
    assert row["sd_mm"] == pytest.approx(np.sqrt((9 + 4 + 1 + 0 + 36) / 4))  # squared deviations from 4, n - 1
    assert row["median_mm"] == pytest.approx(3.0)
    assert row["p95_mm"] == pytest.approx(4.0 + 0.8 * (10.0 - 4.0))  # rank 0.95 * 4 = 3.8, linear interpolation
    assert row["max_mm"] == pytest.approx(10.0)


def test_measure_table_compares_lv_lengths_for_the_long_axis() -> None:
    # labels: MV-1 (10, 20), MV-2 (10, 40), APEX 50 rows below their midpoint: 75 mm at 1.5 mm rows. Predicted apex
    # 4, 2 and 3 rows short: 69, 72, 70.5 mm. A fourth slice's apex is missed and left out.
    truth = np.tile(np.array([[10.0, 20.0], [10.0, 40.0], [60.0, 30.0]]), (4, 1, 1))
    predicted = truth.copy()
    predicted[:, 2, 0] -= np.array([4.0, 2.0, 3.0, 30.0])
    probability = np.full((4, 3), 0.9)
    probability[3, 2] = 0.1
    evaluation = Evaluation("lax", 0.5, predicted, probability, truth, np.tile([1.5, 0.7], (4, 1)))
    (row,) = measure_table(evaluation)
    assert (row["measure"], row["unit"], row["slices"]) == ("lv_length", "mm", 3)
    assert row["label_mean"] == pytest.approx(75.0) and row["predicted_mean"] == pytest.approx(70.5)
    assert row["difference_mean"] == pytest.approx(-4.5) and row["abs_difference_mean"] == pytest.approx(4.5)
    assert row["difference_sd"] == pytest.approx(1.5)  # differences -6, -3, -4.5
    t = -4.5 / (1.5 / np.sqrt(3))
    assert row["paired_t_test_p"] == pytest.approx(2 * stats.t.sf(abs(t), df=2))


def _evaluation_with_probabilities(labelled_probabilities, unlabelled_probabilities) -> Evaluation:
    n = len(labelled_probabilities) + len(unlabelled_probabilities)
    assert n % 3 == 0
    probability = np.array([*labelled_probabilities, *unlabelled_probabilities], dtype=float).reshape(-1, 3)
    truth = np.full((n, 2), 50.0)
    truth[len(labelled_probabilities):] = np.nan
    return Evaluation("sax", 0.5, np.full((n // 3, 3, 2), 50.0), probability, truth.reshape(-1, 3, 2),
                      np.ones((n // 3, 2)))


def test_threshold_choice_weighs_false_positives_by_the_unlabelled_count() -> None:
    # 10 labelled (8 at 0.9, 2 at 0.4), 2 unlabelled (0.1, 0.45). Youden's J: 0.5 for thresholds in (0.1, 0.4]
    # (all found, 1 of 2 false), 0.8 in (0.45, 0.9] (8 of 10 found, none false)
    evaluation = _evaluation_with_probabilities([0.9] * 8 + [0.4] * 2, [0.1, 0.45])
    assert 0.45 < choose_threshold(evaluation) <= 0.9


def test_threshold_choice_takes_the_middle_of_a_plateau() -> None:
    # labelled at 0.7, unlabelled at 0.3: every candidate in (0.3, 0.7] (0.325 ... 0.7) is perfect
    evaluation = _evaluation_with_probabilities([0.7] * 6, [0.3] * 3)
    assert choose_threshold(evaluation) == pytest.approx((0.325 + 0.7) / 2, abs=0.0125 + 1e-9)


def test_the_slice_rows_give_each_landmarks_own_error_and_probability() -> None:
    from types import SimpleNamespace

    from cmr_landmark.evaluation import slice_rows

    truth = np.full((2, 3, 2), 30.0)
    truth[1, 0] = np.nan  # A-RVI not labelled on the second slice
    predicted = truth.copy()
    predicted[0] += [[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]]  # rows of 2 mm, columns of 0.5 mm: 2, 1, hypot(6, 2) mm
    predicted[1, 0] = 50.0
    probability = np.array([[0.9, 0.8, 0.7], [0.1, 0.6, 0.5]])
    evaluation = Evaluation("sax", 0.5, predicted, probability, truth, np.tile([2.0, 0.5], (2, 1)))
    slices = [SimpleNamespace(dataset="acdc", patient="patient001", slice_index=i, phase=0) for i in (0, 1)]
    first, second = slice_rows(evaluation, slices)
    assert (first["dataset"], first["patient"], first["slice_index"]) == ("acdc", "patient001", 0)
    assert first["A-RVI_error_mm"] == pytest.approx(2.0) and first["P-RVI_error_mm"] == pytest.approx(1.0)
    assert first["C-LV_error_mm"] == pytest.approx(np.hypot(6.0, 2.0)) and first["C-LV_probability"] == 0.7
    assert np.isnan(second["A-RVI_error_mm"]) and second["A-RVI_probability"] == 0.1
    assert second["P-RVI_error_mm"] == 0.0
    # what each number is: landmarks.csv counts only the found ones, the rows say which
    assert [first[f"{n}_outcome"] for n in ("A-RVI", "P-RVI", "C-LV")] == ["found", "found", "found"]
    assert second["A-RVI_outcome"] == "absent" and second["C-LV_outcome"] == "found"
    probability[1, 0], probability[0, 2] = 0.9, 0.2  # a detection where none is labelled; a labelled one missed
    first, second = slice_rows(Evaluation("sax", 0.5, predicted, probability, truth, np.tile([2.0, 0.5], (2, 1))),
                               slices)
    assert (second["A-RVI_outcome"], first["C-LV_outcome"]) == ("false positive", "missed")


def test_markdown_tables_keep_small_p_values_and_say_n_a() -> None:
    from cmr_landmark.evaluation import markdown_table

    table = markdown_table([{"measure": "lv_length", "slices": 3, "difference_mean": -4.5,
                             "difference_sd": float("nan"), "paired_t_test_p": 0.00042}])
    header, rule, row = table.splitlines()
    assert header == "| measure | slices | difference_mean | difference_sd | paired_t_test_p |"
    assert rule == "|---|---|---|---|---|"
    assert row == "| lv_length | 3 | -4.50 | n/a | 0.00042 |"  # a p of 0.0004 is not "0.00"


def test_a_card_shows_a_start_inside_the_repository_relative_to_it():
    # run.json records --init-from resolved; a shipped card must not carry the training machine's folders
    from cmr_landmark.config import REPO_ROOT
    from cmr_landmark.evaluation import _shown_path

    assert _shown_path(str(REPO_ROOT / "models" / "sax_cine.pt")) == "models/sax_cine.pt"
    assert _shown_path("/elsewhere/runs/start") == "/elsewhere/runs/start"
