"""The short-axis orientation read from the anatomy: its geometry (directions under turns and mirrors), the stack
estimate and the display chosen from it, the manifest entries, and the shipped network on the shipped M&Ms-2 sample
(a subject it was not trained on) written as NIfTI in all 8 orientations."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_io import write_nifti

from cmr_landmark.config import REPO_ROOT
from cmr_landmark.display_orientation import (
    StoredOrientation,
    display_orientation,
    estimate_stored_orientation,
    mean_rv_direction_deg,
    orientation_inputs,
    rv_direction_deg,
)
from cmr_landmark.geometry import (
    ORIENTATIONS,
    angle_between_deg,
    orient_image,
    oriented_spacing_mm,
    shown_direction_deg,
)
from cmr_landmark.io import read_nifti, read_series
from cmr_landmark.model_store import ModelError, find_model, load_orientation_network
from cmr_landmark.offline_detection import display_orientation_of

# A-RVI, P-RVI, C-LV: the insertion points' midpoint lies up and to the left of the LV centre
POINTS_RC = np.array([[2.0, 2.0], [4.0, 2.0], [6.0, 6.0]])


def test_rv_direction_is_counter_clockwise_from_the_viewers_right_in_mm():
    # the midpoint (3, 2) lies 3 rows up and 4 columns left of the centre (6, 6)
    assert rv_direction_deg(POINTS_RC, (1.0, 1.0)) == pytest.approx(np.degrees(np.arctan2(3.0, -4.0)))
    assert rv_direction_deg(np.array([[5.0, 1.0], [7.0, 1.0], [6.0, 6.0]]), (1.0, 1.0)) == pytest.approx(180.0)
    # rows twice as far apart in mm: 6 mm up, 4 mm left
    assert rv_direction_deg(POINTS_RC, (2.0, 1.0)) == pytest.approx(180 - np.degrees(np.arctan2(6.0, 4.0)))
    assert np.isnan(rv_direction_deg(np.array([[np.nan, np.nan], [4.0, 2.0], [6.0, 6.0]]), (1.0, 1.0)))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_a_direction_turns_with_the_pixels(orientation):
    moved = []
    for row, col in POINTS_RC.astype(int):
        image = np.zeros((9, 9))
        image[row, col] = 1.0
        moved.append(np.argwhere(orient_image(image, *orientation) == 1.0)[0])
    stored = rv_direction_deg(POINTS_RC, (1.0, 1.0))
    assert shown_direction_deg(stored, *orientation) == pytest.approx(rv_direction_deg(np.array(moved, float),
                                                                                       (1.0, 1.0)))


def test_the_mean_direction_is_circular():
    slices = [SimpleNamespace(view="sax", has_all_landmarks=True, pixel_spacing_mm=(1.0, 1.0),
                              landmarks_rc=np.array([[6 - 4 * np.sin(a), 6 + 4 * np.cos(a)]] * 2 + [[6.0, 6.0]]))
              for a in np.radians([350.0, 10.0])]
    assert angle_between_deg(mean_rv_direction_deg(slices), 0.0) < 1e-6
    with pytest.raises(ValueError, match="no short-axis slice"):
        mean_rv_direction_deg([])


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("stored_direction", [0.0, 44.0, 100.0, 181.0, 269.0, 300.0])
@pytest.mark.parametrize("target", [109.5, 194.4])
def test_the_display_undoes_a_mirror_and_turns_the_rv_nearest_the_models_direction(mirrored, stored_direction,
                                                                                    target):
    turns, mirror = display_orientation(StoredOrientation(stored_direction, mirrored, 1.0), target)
    assert mirror == mirrored
    assert angle_between_deg(shown_direction_deg(stored_direction, turns, mirror), target) <= 45.0


class FixedOutputs(torch.nn.Module):
    """Stands in for the network: the same outputs row by row, whatever the images."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = torch.tensor(outputs, dtype=torch.float32)

    def forward(self, images):
        assert images.shape[1:] == (1, 64, 64)
        return self.outputs[: len(images)]


def test_a_stack_is_decided_by_its_summed_direction_and_mean_mirror_logit():
    # two images point up-left (135 deg), one with no RV says (0, 0); mirror logits +2, -1, +0.5
    c = np.cos(np.radians(135.0))
    network = FixedOutputs([[c, -c, 2.0], [c, -c, -1.0], [0.0, 0.0, 0.5]])
    stored = estimate_stored_orientation(network, np.random.default_rng(0).random((3, 40, 50)), (1.5, 1.5))
    assert stored.rv_direction_deg == pytest.approx(135.0, abs=1e-4)
    assert stored.mirrored
    assert stored.certainty == pytest.approx(2 / 3, abs=1e-5)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_the_averaged_estimate_turns_and_mirrors_exactly_with_the_image(orientation):
    # any network, even a random linear map of the pixels, answers a stack the same way however it is stored
    from cmr_landmark.display_orientation import OrientationAveraged

    torch.manual_seed(0)
    network = OrientationAveraged(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64 * 64, 3)))
    rows, cols = np.mgrid[:64, :64]
    blob = np.exp(-((rows - 20) ** 2 + (cols - 45) ** 2) / 50.0)  # off centre, so no turn or mirror keeps it
    images = blob + 0.1 * np.random.default_rng(1).random((3, 64, 64))
    given = estimate_stored_orientation(network, images, (1.0, 1.0))
    stored = estimate_stored_orientation(network, np.stack([orient_image(i, *orientation) for i in images]),
                                         (1.0, 1.0))
    assert angle_between_deg(stored.rv_direction_deg, shown_direction_deg(given.rv_direction_deg, *orientation)) < 1e-3
    assert stored.certainty == pytest.approx(given.certainty, rel=1e-4)
    assert stored.certainty > 1e-3
    logit = network(torch.from_numpy(orientation_inputs(images, (1.0, 1.0))).float())[:, 2].mean()
    assert abs(float(logit)) > 1e-3
    assert stored.mirrored == (given.mirrored != orientation[1])


def manifest_with(tmp_path, **entry_changes):
    tmp_path.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((REPO_ROOT / "models" / "manifest.json").read_text())
    sax = next(m for m in manifest["models"] if m["name"] == "sax_cine")
    sax.update(entry_changes)
    (tmp_path / "manifest.json").write_text(json.dumps({"models": [sax]}))
    return tmp_path


@pytest.mark.parametrize("key", ["display_rv_direction_deg", "display_long_axis_deg"])
@pytest.mark.parametrize("value", [360.0, -1.0, "up", True])
def test_a_bad_display_direction_in_the_manifest_is_refused(tmp_path, key, value):
    with pytest.raises(ModelError, match=key):
        find_model("sax", "cine", folder=manifest_with(tmp_path, **{key: value}))


def test_a_manifest_without_the_network_or_with_a_changed_file_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no orientation network"):
        load_orientation_network(manifest_with(tmp_path))
    (tmp_path / "sax_orientation.pt").write_bytes(b"not the file")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["orientation_network"] = {"file": "sax_orientation.pt", "sha256": "0" * 64}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="sha256"):
        load_orientation_network(tmp_path)


def shipped_sax_cine():
    """The shipped sax_cine (models/ is committed: a missing or broken manifest entry or network fails the test)."""
    load_orientation_network()
    return find_model("sax", "cine", name="sax_cine")


def sample_nifti(tmp_path, orientation, name="sax.nii.gz"):
    """The shipped M&Ms-2 short-axis sample (its header puts it in the standard display) written as a NIfTI file
    whose pixels are stored turned and mirrored as ``orientation`` says; (path, the sample series)."""
    sample = read_series(REPO_ROOT / "samples" / "mnms2_001_sax.h5")
    stored = np.stack([np.stack([orient_image(image, *orientation) for image in phases])
                       for phases in sample.images])  # (slices, phases, H, W)
    spacing = oriented_spacing_mm(sample.pixel_spacing_mm, orientation[0])
    affine = np.diag([*spacing, 10.0, 1.0])
    return write_nifti(tmp_path / name, np.transpose(stored, (2, 3, 0, 1)).astype(np.float32), affine), sample


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_the_shipped_network_shows_the_sample_as_its_header_does_however_it_is_stored(tmp_path, orientation):
    spec = shipped_sax_cine()
    path, sample = sample_nifti(tmp_path, orientation)
    plane = sample.ismrmrd_plane(0)
    from cmr_landmark.geometry import model_display_orientation

    assert model_display_orientation("sax", plane.read_dir, plane.phase_dir) == (0, False)
    shown = display_orientation_of(read_nifti(path), spec)
    assert shown.source == "anatomy"
    probe = np.arange(12.0).reshape(3, 4)
    assert np.array_equal(orient_image(orient_image(probe, *orientation), shown.quarter_turns, shown.mirror), probe)


def test_on_request_or_without_a_direction_for_the_model_a_nifti_goes_as_stored(tmp_path, caplog):
    spec = shipped_sax_cine()
    path, _ = sample_nifti(tmp_path, (2, False))
    series = read_nifti(path)
    as_stored = {"source": "as stored", "quarter_turns": 0, "mirror": False}
    assert display_orientation_of(series, spec, nifti_as_stored=True).as_record() == as_stored
    with caplog.at_level(logging.WARNING):
        unknown = SimpleNamespace(**{**spec.__dict__, "display_rv_direction_deg": None})
        assert display_orientation_of(series, unknown).as_record() == as_stored
    assert "records no display_rv_direction_deg" in caplog.text


def test_a_models_folder_of_ones_own_uses_the_shipped_network(tmp_path):
    # a folder made by `export --models-dir` holds landmark models only: the shipped network decides the display
    import shutil

    from cmr_landmark.model_store import find_model

    own = manifest_with(tmp_path / "own")
    shutil.copy(REPO_ROOT / "models" / "sax_cine.pt", own / "sax_cine.pt")
    spec = find_model("sax", "cine", folder=own)
    path, _ = sample_nifti(tmp_path, (1, True))
    shown = display_orientation_of(read_nifti(path), spec)
    assert shown.source == "anatomy"
    assert shown.as_record() == display_orientation_of(read_nifti(path), shipped_sax_cine()).as_record()


def test_a_long_file_is_decided_from_a_bounded_sample_of_every_slice(tmp_path, monkeypatch):
    # 12 slices x 30 phases: at most ORIENTATION_MAX_IMAGES images go to the network, from every slice
    import cmr_landmark.offline_detection as offline_detection
    from cmr_landmark.config import ORIENTATION_MAX_IMAGES

    spec = shipped_sax_cine()
    slice_of_image = np.repeat(np.arange(12.0), 30)
    images = np.broadcast_to(slice_of_image[:, None, None], (360, 32, 32)).reshape(12, 30, 32, 32)
    series = SimpleNamespace(images=images, pixel_spacing_mm=(1.5, 1.5), frame="RAS", source=tmp_path / "x.nii")
    seen = []

    def record(network, given, spacing):
        seen.append(np.asarray(given)[:, 0, 0])
        return StoredOrientation(120.0, False, 1.0)

    monkeypatch.setattr(offline_detection, "estimate_stored_orientation", record)
    assert display_orientation_of(series, spec).source == "anatomy"
    assert len(seen[0]) == ORIENTATION_MAX_IMAGES
    assert set(seen[0]) == set(range(12))


@pytest.mark.parametrize("orientation", [(2, False), (1, True)])
def test_detect_finds_on_a_turned_nifti_what_it_finds_on_the_standard_display(tmp_path, orientation):
    # Shown as stored, the turned sample would be far from the display the model was trained on (half a turn: 29.5
    # mm on ACDC, scripts/sax_orientation_check.py; mirrored: the names swapped). Shown as the anatomy says, the
    # points map back to within 2 mm of those found on the standard display, under the same names.
    from cmr_landmark.detector import Detector
    from cmr_landmark.geometry import points_to_original
    from cmr_landmark.offline_detection import detect_series

    spec = shipped_sax_cine()
    detector = Detector(spec, use_bf16=False)
    standard_path, sample = sample_nifti(tmp_path, (0, False), "standard.nii.gz")
    turned_path, _ = sample_nifti(tmp_path, orientation, "turned.nii.gz")
    standard = detect_series(read_nifti(standard_path), detector)
    turned_series = read_nifti(turned_path)
    turned = detect_series(turned_series, detector, display_orientation_of(turned_series, spec))
    compared = 0
    for on_standard, on_turned in zip(standard, turned, strict=True):
        for name, found in on_standard["landmarks"].items():
            if found is None:
                continue
            other = on_turned["landmarks"][name]
            assert other is not None, (on_standard["slice"], on_standard["phase"], name)
            back = points_to_original(np.array([other["voxel"]], float), sample.images.shape[-2:], *orientation)[0]
            assert np.linalg.norm((back - found["voxel"]) * sample.pixel_spacing_mm) < 2.0
            compared += 1
    assert compared >= 30


def test_detect_orients_a_nifti_by_anatomy_unless_asked_to_keep_it_as_stored(tmp_path, monkeypatch):
    from cmr_landmark.detect_cli import main_detect

    shipped_sax_cine()
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(REPO_ROOT / "models"))
    path, _ = sample_nifti(tmp_path, (1, True))
    reports = {}
    for flags in ([], ["--nifti-as-stored"]):
        out = tmp_path / f"out{len(flags)}.json"
        assert main_detect([str(path), "--view", "sax", "--sequence", "cine", "--out", str(out), *flags]) == 0
        reports[tuple(flags)] = json.loads(out.read_text())["display_orientation"]
    by_anatomy = reports[()]
    assert by_anatomy["source"] == "anatomy" and (by_anatomy["quarter_turns"], by_anatomy["mirror"]) == (1, True)
    assert reports[("--nifti-as-stored",)] == {"source": "as stored", "quarter_turns": 0, "mirror": False}


def test_a_training_item_carries_the_rv_direction_of_its_own_transform():
    # targets are the labels carried through the item's random turn, mirror, zoom and shift: (cos, sin, mirrored)
    from myops_stack import load_myops_stack

    from cmr_landmark.train_orientation import training_item

    slices = load_myops_stack()
    labelled = next(s for s in slices if s.has_all_landmarks)
    mirrors = set()
    for seed in range(12):
        image, target = training_item(labelled, np.random.default_rng(seed), synthetic_t1_fraction=0.3)
        assert image.shape == (64, 64) and np.isfinite(image).all()
        assert np.hypot(target[0], target[1]) == pytest.approx(1.0, abs=1e-5)
        mirrors.add(bool(target[2]))
    assert mirrors == {False, True}
    without_rv = labelled.__class__(**{**labelled.__dict__, "landmarks_rc": np.full((3, 2), np.nan)})
    _, target = training_item(without_rv, np.random.default_rng(0))
    assert target[0] == target[1] == 0.0


class TruthNetwork(torch.nn.Module):
    """Answers each input with the true direction and mirror, looked up by the input's exact pixels."""

    def __init__(self, answers: dict):
        super().__init__()
        self.answers = answers

    def forward(self, images):
        return torch.tensor([self.answers[image.numpy().tobytes()] for image in images], dtype=torch.float32)


def test_the_validation_figures_of_a_network_that_knows_the_truth_are_perfect():
    from myops_stack import load_myops_stack

    from cmr_landmark.train_orientation import evaluate

    slices = load_myops_stack()
    answers = {}
    for s in slices:
        truth = rv_direction_deg(s.landmarks_rc, s.pixel_spacing_mm)
        for turns, mirror in ORIENTATIONS:
            image = orientation_inputs(orient_image(s.image, turns, mirror)[np.newaxis],
                                       oriented_spacing_mm(s.pixel_spacing_mm, turns))[0]
            angle = np.radians(shown_direction_deg(truth, turns, mirror)) if np.isfinite(truth) else None
            direction = [0.0, 0.0] if angle is None else [np.cos(angle), np.sin(angle)]
            answers[image.astype(np.float32).tobytes()] = [*direction, 5.0 if mirror else -5.0]
    measured = evaluate(TruthNetwork(answers), slices)
    assert measured["image_median_error_deg"] < 1e-3 and measured["stack_max_error_deg"] < 1e-3
    assert measured["image_mirror_right_pct"] == measured["stack_right_pct"] == 100.0


def test_an_exported_network_is_listed_with_its_sha256_and_loads(tmp_path):
    from cmr_landmark.display_orientation import OrientationNet
    from cmr_landmark.train_orientation import export

    run = tmp_path / "run"
    run.mkdir()
    torch.save(OrientationNet().state_dict(), run / "best.pt")
    (run / "history.json").write_text(json.dumps([{"epoch": 1, "stack_right_pct": 50.0, "image_median_error_deg": 9.0,
                                                   "train_loss": 1.0, "seconds": 2.0}]))
    (tmp_path / "manifest.json").write_text(json.dumps({"models": []}))
    export(run, tmp_path)
    entry = json.loads((tmp_path / "manifest.json").read_text())["orientation_network"]
    assert entry["validation"] == {"epoch": 1, "stack_right_pct": 50.0, "image_median_error_deg": 9.0}
    network = load_orientation_network(tmp_path)
    assert tuple(network(torch.zeros(2, 1, 64, 64)).shape) == (2, 3)


def test_detect_on_ismrmrd_turns_the_header_display_toward_the_models_direction():
    # the file's header puts the sample in the standard display; sax_lge (RV at ~194 degrees in its training images)
    # sees it a quarter turn on
    from cmr_landmark.detector import Detector, detect_in_orientation
    from cmr_landmark.offline_detection import detect_series

    spec = find_model("sax", "lge", name="sax_lge", folder=REPO_ROOT / "models")
    series = read_series(REPO_ROOT / "samples" / "mnms2_001_sax.h5")
    assert 180 < spec.display_rv_direction_deg < 225  # a quarter turn from the standard display's 270 degrees
    assert display_orientation_of(series, spec).as_record() == {
        "source": "header", "display_rv_direction_deg": spec.display_rv_direction_deg}
    detector = Detector(spec, use_bf16=False)
    record = detect_series(series, detector)[10]  # slice 5, end-diastole
    pixels = series.images[5, :]
    turned = detect_in_orientation(detector, pixels, series.pixel_spacing_mm, 1, False, same_slice=True)[0]
    standard = detect_in_orientation(detector, pixels, series.pixel_spacing_mm, 0, False, same_slice=True)[0]
    apart = 0
    for name in ("A-RVI", "P-RVI", "C-LV"):
        found = np.array(series.voxel_to_pixel(record["landmarks"][name]["voxel"]))
        assert np.linalg.norm(found - (turned[name].row, turned[name].col)) < 0.01, name
        apart += np.linalg.norm(found - (standard[name].row, standard[name].col)) > 1.0
    assert apart, "the two displays gave the same points: the test would not tell them apart"


def test_an_interrupted_orientation_training_resumes_as_if_it_had_not_stopped(tmp_path, monkeypatch):
    from myops_stack import load_myops_stack

    from cmr_landmark import train_orientation

    slices = load_myops_stack()
    monkeypatch.setattr(train_orientation, "sax_slices", lambda datasets, split: slices)
    train_orientation.train(tmp_path / "straight", epochs=2, batch_size=4, lr=1e-3, seed=3)
    evaluate, calls = train_orientation.evaluate, []

    def stopped_in_epoch_2(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the machine goes away during the second epoch
        return evaluate(*args)

    monkeypatch.setattr(train_orientation, "evaluate", stopped_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_orientation.train(tmp_path / "resumed", epochs=2, batch_size=4, lr=1e-3, seed=3)
    monkeypatch.setattr(train_orientation, "evaluate", evaluate)
    train_orientation.train(tmp_path / "resumed", epochs=2, batch_size=4, lr=1e-3, seed=3)  # picks up after epoch 1
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["model"]
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)


@pytest.mark.parametrize("stored_mirrored, warned", [(True, False), (False, True)])
def test_a_file_named_like_a_public_set_keeps_its_sets_display_and_is_checked_against_its_anatomy(
        tmp_path, caplog, stored_mirrored, warned):
    # ACDC's files are stored as the mirror of the standard display; the M&Ms-2 sample is not, unless written so
    spec = shipped_sax_cine()
    path, _ = sample_nifti(tmp_path, (0, stored_mirrored), name="patient999_frame01.nii.gz")
    with caplog.at_level(logging.WARNING):
        shown = display_orientation_of(read_nifti(path), spec)
    assert shown.as_record() == {"source": "public set acdc", "quarter_turns": 0, "mirror": True}
    assert ("A-RVI and P-RVI come back swapped" in caplog.text) == warned


def test_the_certainty_of_a_stack_estimate_is_at_most_one():
    class Overshooting(torch.nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:  # (cos, sin, mirror logit) beyond the unit circle
            return torch.tensor([[1.2, 0.1, 3.0]]).repeat(len(inputs), 1)

    stored = estimate_stored_orientation(Overshooting(), np.ones((2, 32, 32), np.float32), (1.5, 1.5))
    assert stored.certainty == 1.0 and stored.mirrored
