"""Dataset builders, split and cache: a tiny synthetic ACDC-layout set of real NIfTI files (runs on a fresh
clone), then the real M&Ms-2 subject and the committed split against the public data."""

from __future__ import annotations

import json
import logging
import os
import shutil
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from cmr_landmark.datasets import (
    CACHE_FORMAT_VERSION,
    DATASETS,
    build_cache,
    cache_paths,
    dataset_names,
    load_slices,
    main_build_cache,
    make_splits,
    read_splits,
    stack_indices,
)

SPACING_MM = (1.5, 1.25)


def _write_acdc_patient(root, name, rv_present_slices, frames=("frame01", "frame02"), info="Group: NOR\n"):
    """Three-slice ED/ES stacks in ACDC's stored orientation and codes (1 RV, 2 myo, 3 LV): a ring with the RV
    on the right of the array, which the ACDC orientation (column flip) puts on the viewer's left. ``frames``: the
    ED and ES files' frame names, ``info``: Info.cfg."""
    rows, cols = np.mgrid[:60, :50].astype(float)
    dr, dc = (rows - 30) * SPACING_MM[0], (cols - 25) * SPACING_MM[1]
    radius = np.hypot(dr, dc)
    angle = np.degrees(np.arctan2(-dr, dc))
    folder = root / "acdc" / name
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text(info)
    for frame in frames:
        image = np.zeros((60, 50, 3), np.int16)
        mask = np.zeros((60, 50, 3), np.uint8)
        for z in range(3):
            image[..., z] = np.where(radius < 12, 3000, 800).astype(np.int16)
            if z == 2:
                continue  # a slice above the base: image but no label
            layer = np.zeros((60, 50), np.uint8)
            layer[radius < 12] = 3
            layer[(radius >= 12) & (radius < 18)] = 2
            if z in rv_present_slices:
                layer[(radius >= 18) & (radius < 26) & (np.abs(angle) < 60)] = 1
            mask[..., z] = layer
        affine = np.diag([*SPACING_MM, 10.0, 1.0])
        nib.save(nib.Nifti1Image(image, affine), str(folder / f"{name}_{frame}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, affine), str(folder / f"{name}_{frame}_gt.nii.gz"))


@pytest.fixture
def tiny_acdc(tmp_path):
    root = tmp_path / "data"
    _write_acdc_patient(root, "patient001", rv_present_slices={0})
    _write_acdc_patient(root, "patient002", rv_present_slices={0, 1})
    return root


def test_cache_round_trip_of_a_tiny_set(tiny_acdc, tmp_path):
    folder = tmp_path / "cache"
    npz_path = build_cache("acdc", folder=folder, root=tiny_acdc)
    assert npz_path == cache_paths("acdc", folder)[0] and npz_path.exists()
    slices = load_slices("acdc", folder=folder)
    assert len(slices) == 2 * 2 * 3  # patients x phases x slices
    assert {s.patient for s in slices} == {"patient001", "patient002"} and {s.phase for s in slices} == {0, 1}
    for s in slices:
        assert s.image.dtype == np.float32 and s.image.shape == (60, 50) and s.mask.shape == (60, 50)
        assert s.pixel_spacing_mm == SPACING_MM and s.view == "sax" and s.sequence == "cine" and s.labelled
        assert set(np.unique(s.mask)) <= {0, 1, 2, 3}
    no_landmark = [s for s in slices if s.is_no_landmark_image]
    assert sorted(s.slice_index for s in no_landmark) == [2, 2, 2, 2]
    complete = [s for s in slices if s.has_all_landmarks]
    assert len(complete) == 2 + 4  # patient001 has an RV on slice 0 only, patient002 on slices 0 and 1
    for s in complete:
        a_rvi, p_rvi, centre = s.landmarks_rc
        # Standard display after the ACDC column flip: LV centre mirrored, RV on the left, A-RVI the upper end.
        np.testing.assert_allclose(centre, [30, 49 - 25], atol=0.5)
        assert a_rvi[1] < centre[1] and p_rvi[1] < centre[1] and a_rvi[0] < p_rvi[0]
        assert s.mask[int(centre[0]), int(centre[1])] == 1


def test_cache_is_reused_unless_forced(tiny_acdc, tmp_path):
    folder = tmp_path / "cache"
    npz_path = build_cache("acdc", folder=folder, root=tiny_acdc)
    stamp = npz_path.stat().st_mtime_ns
    assert build_cache("acdc", folder=folder, root=tiny_acdc) == npz_path and npz_path.stat().st_mtime_ns == stamp
    build_cache("acdc", folder=folder, root=tiny_acdc, force=True)
    assert npz_path.stat().st_mtime_ns != stamp


def _age_cache(folder, dataset="acdc"):
    """Make a cache look written by an older version: an older format number and stale (here: zeroed) landmarks."""
    npz_path, json_path = cache_paths(dataset, folder)
    metadata = json.loads(json_path.read_text())
    metadata["format_version"] = CACHE_FORMAT_VERSION - 1
    json_path.write_text(json.dumps(metadata))
    with np.load(npz_path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays["landmarks_rc"] = np.zeros_like(arrays["landmarks_rc"])
    np.savez(npz_path, **arrays)


def test_an_old_format_cache_is_derived_again(tiny_acdc, tmp_path, monkeypatch):
    # A cache written under an older landmark rule is stale: load_slices and build_cache derive it again.
    monkeypatch.setenv("CMR_LANDMARK_DATA", str(tiny_acdc))
    folder = tmp_path / "cache"
    build_cache("acdc", folder=folder, root=tiny_acdc)
    fresh = np.stack([s.landmarks_rc for s in load_slices("acdc", folder=folder)])
    assert np.isfinite(fresh).any() and not np.all(np.nan_to_num(fresh) == 0)
    for build_first in (False, True):  # load_slices on its own, and build_cache without --force
        _age_cache(folder)
        if build_first:
            build_cache("acdc", folder=folder, root=tiny_acdc)
            assert json.loads(cache_paths("acdc", folder)[1].read_text())["format_version"] == CACHE_FORMAT_VERSION
        again = np.stack([s.landmarks_rc for s in load_slices("acdc", folder=folder)])
        np.testing.assert_array_equal(again, fresh)
    assert not list(folder.glob("*partial*"))


def test_an_old_format_cache_without_the_data_says_so(tiny_acdc, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "cache"
    build_cache("acdc", folder=folder, root=tiny_acdc)
    _age_cache(folder)
    monkeypatch.setenv("CMR_LANDMARK_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=f"is cache format {CACHE_FORMAT_VERSION - 1}, this version needs "
                                                f"{CACHE_FORMAT_VERSION} .* needs the data: data set folder"):
        load_slices("acdc", folder=folder)
    monkeypatch.setenv("CMR_LANDMARK_CACHE", str(folder))
    with pytest.raises(SystemExit) as stop:  # was a FileNotFoundError traceback
        main_build_cache(["acdc"])
    assert stop.value.code == 2 and "is cache format" in capsys.readouterr().err


def test_bad_requests_get_clear_errors(tiny_acdc, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown dataset"):
        build_cache("nonsense", folder=tmp_path, root=tiny_acdc)
    with pytest.raises(FileNotFoundError, match="myops"):
        build_cache("myops", folder=tmp_path, root=tiny_acdc)
    with pytest.raises(ValueError, match="split"):
        load_slices("acdc", split="test", folder=tmp_path)
    with pytest.raises(SystemExit) as stop:
        main_build_cache(["--dataset", "nonsense"])
    assert stop.value.code == 2 and "unknown data set(s) nonsense" in capsys.readouterr().err


def test_split_file_is_disjoint_and_covers_the_sets():
    splits = read_splits()
    assert set(splits) == set(DATASETS)
    for dataset, split in splits.items():
        assert not set(split["train"]) & set(split["val"]), dataset
    assert splits["mnms2"] == {"train": [], "val": ["001"]}
    for dataset in ("acdc", "mscmrseg_lge", "myops"):
        total = len(splits[dataset]["train"]) + len(splits[dataset]["val"])
        assert 0.1 < len(splits[dataset]["val"]) / total < 0.3


def test_split_file_matches_the_data(shared_data):
    """The committed split is what make_splits gives for the public data (deterministic, every patient in it)."""
    assert make_splits(shared_data) == read_splits()


def test_real_mnms2_cache(shared_data, tmp_path):
    build_cache("mnms2", folder=tmp_path, root=shared_data)
    slices = load_slices("mnms2", split="val", folder=tmp_path)
    assert load_slices("mnms2", split="train", folder=tmp_path) == []
    sax = [s for s in slices if s.view == "sax"]
    lax = [s for s in slices if s.view == "lax" and s.labelled]
    cine = [s for s in slices if not s.labelled]
    # what the cache must hold, read from the subject's files: ED and ES stacks, the 4CH ED/ES frames, the 4CH cine
    folder = shared_data / "mnms2" / "001"
    stack = nib.load(str(folder / "001_SA_ED.nii.gz"))
    four_chamber_frames = nib.load(str(folder / "001_LA_ED.nii.gz")).shape[2]
    cine_phases = nib.load(str(folder / "001_LA_CINE.nii.gz")).shape[-1]
    assert len(sax) == 2 * stack.shape[2] and len(lax) == 2 * four_chamber_frames and len(cine) == cine_phases
    assert all(s.mask is None and np.all(np.isnan(s.landmarks_rc)) for s in cine)
    for s in sax:  # (the stored matrix may be turned into the standard display: compared in either order)
        assert sorted(s.pixel_spacing_mm) == pytest.approx(sorted(stack.header.get_zooms()[:2]), rel=1e-5)
        assert sorted(s.image.shape) == sorted(stack.shape[:2])
    assert sum(s.has_all_landmarks for s in sax) >= 10
    assert all(s.has_all_landmarks for s in lax)
    metadata = json.loads(cache_paths("mnms2", tmp_path)[1].read_text())
    assert len(metadata["slices"]) == len(slices)


def test_real_myops_keeps_pathology(shared_data, tmp_path):
    # One MyoPS case, copied by symlink into a private root so the test reads 3 files, not the whole set.
    case = sorted((shared_data / "myops").glob("Case*"))[0]
    root = tmp_path / "data"
    (root / "myops").mkdir(parents=True)
    (root / "myops" / case.name).symlink_to(case, target_is_directory=True)
    build_cache("myops", folder=tmp_path, root=root)
    slices = load_slices("myops", folder=tmp_path)
    assert {s.sequence for s in slices} == {"cine", "lge"}
    for s in slices:
        assert s.pathology is not None and s.pathology.shape == s.image.shape
        # Oedema and scar lie inside the myocardium.
        assert np.all(s.mask[s.pathology > 0] == 2)
        assert 0.7 < s.pixel_spacing_mm[0] < 0.8


def test_a_cache_is_of_the_data_it_was_built_from(tiny_acdc, tmp_path, monkeypatch, capsys, caplog):
    # CMR_LANDMARK_DATA pointing at other data (here: one patient of two) reported the cache of the first data
    folder = tmp_path / "cache"
    other = tmp_path / "other"
    (other / "acdc").mkdir(parents=True)
    shutil.copytree(tiny_acdc / "acdc" / "patient001", other / "acdc" / "patient001")
    monkeypatch.setenv("CMR_LANDMARK_CACHE", str(folder))
    for root, slices in ((tiny_acdc, 12), (other, 6), (tiny_acdc, 12)):
        monkeypatch.setenv("CMR_LANDMARK_DATA", str(root))
        assert main_build_cache(["--dataset", "acdc"]) == 0
        assert f"acdc: {slices} slices" in capsys.readouterr().out
        recorded = json.loads(cache_paths("acdc", folder)[1].read_text())
        assert recorded["data_folder"] == str((root / "acdc").resolve())
    # an edited file is other data too
    path = tiny_acdc / "acdc" / "patient002" / "patient002_frame01.nii.gz"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    stamp = cache_paths("acdc", folder)[0].stat().st_mtime_ns
    load_slices("acdc")
    assert cache_paths("acdc", folder)[0].stat().st_mtime_ns != stamp
    # without the data, the cache serves as it is (CI, users without ../shared), and says whose it is
    monkeypatch.setenv("CMR_LANDMARK_DATA", str(tmp_path / "nowhere"))
    with caplog.at_level(logging.WARNING, logger="cmr_landmark.datasets"):
        assert len(load_slices("acdc")) == 12
    assert f"using the cache {cache_paths('acdc', folder)[1]} built from {(tiny_acdc / 'acdc').resolve()}" in (
        caplog.text)


def test_a_cache_that_records_no_data_is_built_again_where_the_data_is(tiny_acdc, tmp_path):
    # the caches written before the data was recorded: built again once, not trusted to be of this data
    folder = tmp_path / "cache"
    build_cache("acdc", folder=folder, root=tiny_acdc)
    json_path = cache_paths("acdc", folder)[1]
    metadata = json.loads(json_path.read_text())
    fingerprint = metadata.pop("data_fingerprint")
    metadata.pop("data_folder")
    json_path.write_text(json.dumps(metadata))
    build_cache("acdc", folder=folder, root=tiny_acdc)
    assert json.loads(json_path.read_text())["data_fingerprint"] == fingerprint
    assert len(load_slices("acdc", folder=folder)) == 12


def test_acdc_end_diastole_and_end_systole_frames_come_from_info_cfg(tmp_path):
    # the challenge's own layout: frame01 and frame12 (say), Info.cfg "ED: 1" / "ES: 12"; was "missing data file
    # ..._frame02.nii.gz"
    root = tmp_path / "data"
    _write_acdc_patient(root, "patient001", {0}, frames=("frame01", "frame12"), info="ED: 1\nES: 12\nGroup: NOR\n")
    build_cache("acdc", folder=tmp_path / "cache", root=root)
    slices = load_slices("acdc", folder=tmp_path / "cache")
    assert len(slices) == 6 and {s.phase for s in slices} == {0, 1}


def test_nifti_files_outside_patient_folders_are_named(tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    _write_acdc_patient(root, "patient001", {0})
    for path in (root / "acdc" / "patient001").glob("*.nii.gz"):
        path.rename(root / "acdc" / path.name)  # the files straight in acdc/
    shutil.rmtree(root / "acdc" / "patient001")
    with pytest.raises(FileNotFoundError, match=r"acdc holds NIfTI files but no patient\* folders: .* e.g. "
                                                r"acdc/patientNNN/"):  # was acdc/patient001_frame01.nii.gz/...
        build_cache("acdc", folder=tmp_path / "cache", root=root)
    monkeypatch.setenv("CMR_LANDMARK_DATA", str(root))
    monkeypatch.setenv("CMR_LANDMARK_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as stop:
        main_build_cache(["--dataset", "acdc"])
    assert stop.value.code == 2 and "no patient* folders" in capsys.readouterr().err


def test_patients_in_no_split_are_named_when_a_split_is_loaded(tiny_acdc, tmp_path, caplog):
    _write_acdc_patient(tiny_acdc, "patient201", {0})  # a subject of the user's own, not in splits.json
    with caplog.at_level(logging.WARNING, logger="cmr_landmark.datasets"):
        train = load_slices("acdc", "train", folder=tmp_path / "cache", root=tiny_acdc)
    assert {s.patient for s in train} == {"patient001", "patient002"}
    assert "acdc: 1 patient(s) are in neither split of" in caplog.text and "'train' slices: patient201" in caplog.text


def test_set_names_are_taken_as_typed(tiny_acdc, capsys):
    assert dataset_names(" acdc, myops,,acdc ") == ["acdc", "myops"]
    with pytest.raises(SystemExit) as stop:  # build-cache splits on commas, as train and evaluate do
        main_build_cache(["--dataset", "acdc, nosuchset"])
    assert stop.value.code == 2 and "unknown data set(s) nosuchset;" in capsys.readouterr().err


def test_a_stack_never_holds_one_slice_position_twice() -> None:
    """MyoPS's co-registered cine and LGE slices share patient, phase and positions; made into one synthetic kind
    they are still two stacks."""
    def slices(patient: str, positions: tuple[int, ...], view: str = "sax") -> list[SimpleNamespace]:
        return [SimpleNamespace(dataset="myops", patient=patient, view=view, phase=0, sequence="t1", slice_index=k)
                for k in positions]

    twins = slices("p", (0, 1, 2))
    assert stack_indices([*twins, *twins, *slices("q", (0,))]) == [[0, 1, 2], [3, 4, 5], [6]]
    # interleaved copies still make two stacks of each position once
    assert stack_indices([twins[0], twins[0], twins[1], twins[1]]) == [[0, 2], [1, 3]]
    # a long-axis slice of the same patient and phase is a stack of its own, not a second copy
    assert stack_indices([*twins, *slices("p", (0,), view="lax")]) == [[0, 1, 2], [3]]
