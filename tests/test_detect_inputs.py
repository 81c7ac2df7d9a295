"""``cmr-landmark detect`` on the odd inputs a user gives it: each works, or is refused (exit 2) or warned of in one
line. Inputs built here; the checks on real files skip where the public data is absent."""

from __future__ import annotations

import json
import logging
import shutil
import warnings

import numpy as np
import pydicom
import pytest
from test_convert import heart_like
from test_io import ORIENTATION, SPACING, dicom_series, write_dicom, write_nifti

from cmr_landmark.config import REPO_ROOT
from cmr_landmark.detect_cli import main_detect
from cmr_landmark.io import ImageReadError, read_dicom, read_series
from cmr_landmark.model_store import find_model
from cmr_landmark.offline_detection import view_warning
from cmr_landmark.preprocess import to_magnitude


def refusal(args: list[str], models, monkeypatch, capsys) -> str:
    """detect's one-line message where it refuses ``args`` with exit status 2."""
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(models))
    with pytest.raises(SystemExit) as stop:
        main_detect(args)
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("cmr-landmark detect: ") and message.count("\n") == 1, message
    return message


def label_map(rows: int = 48, cols: int = 56, slices: int = 3) -> np.ndarray:
    """ACDC's codes: 1 RV, 2 LV myocardium, 3 LV blood pool, on a background of 0."""
    r, c = np.mgrid[:rows, :cols]
    radius = np.hypot(r - rows / 2, c - cols / 2)
    mask = np.zeros((rows, cols), np.uint8)
    mask[radius < 12] = 2
    mask[radius < 8] = 3
    mask[(np.hypot(r - rows / 2, c - cols / 2 + 14) < 8) & (mask == 0)] = 1
    return np.repeat(mask[:, :, None], slices, axis=2)


def test_a_label_map_given_as_the_image_is_refused(tmp_path, throwaway_model_folder, monkeypatch, capsys):
    path = write_nifti(tmp_path / "seg.nii.gz", label_map(), np.eye(4))
    message = refusal([str(path), "--view", "sax", "--sequence", "cine", "--out", str(tmp_path / "o.json")],
                      throwaway_model_folder, monkeypatch, capsys)
    assert "only the values 0, 1, 2, 3: a segmentation (label map)" in message
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("name", ["patient001/patient001_frame01_gt.nii.gz", "patient001/patient001_frame02_gt.nii.gz"])
def test_an_acdc_segmentation_is_refused(name, shared_data, tmp_path, monkeypatch, capsys):
    message = refusal([str(shared_data / "acdc" / name), "--view", "sax", "--sequence", "cine",
                       "--out", str(tmp_path / "o.json")], REPO_ROOT / "models", monkeypatch, capsys)
    assert "segmentation (label map)" in message


def test_an_image_of_few_grey_levels_in_float_is_not_taken_for_a_label_map(tmp_path, throwaway_model_folder,
                                                                           monkeypatch):
    # the phantoms' look: a few levels, but not whole numbers
    path = write_nifti(tmp_path / "phantom.nii.gz", label_map().astype(np.float32) * 0.15 + 0.1, np.eye(4))
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(throwaway_model_folder))
    assert main_detect([str(path), "--view", "sax", "--sequence", "cine", "--out", str(tmp_path / "o.json")]) == 0


@pytest.mark.parametrize(("pixels", "reason"), [
    (np.full((32, 32, 2), np.nan, np.float32), "no finite pixel"),
    (np.full((32, 32, 2), 7, np.int16), "no signal: every finite pixel has magnitude 7"),
    (np.full((32, 32, 2), 3e300), "beyond float32's range"),  # what the detector computes in: all Inf, then 0
    # blank for different reasons: still nothing to find (was only warned of, and the model run on nothing)
    (np.stack([np.zeros((32, 32)), np.full((32, 32), 5.0)], axis=2), "magnitude 0; no signal: every finite pixel "
                                                                     "has magnitude 5"),
])
def test_a_series_without_signal_is_refused(pixels, reason, tmp_path, throwaway_model_folder, monkeypatch, capsys):
    path = write_nifti(tmp_path / "blank.nii", pixels, np.eye(4))
    message = refusal([str(path), "--view", "sax", "--sequence", "cine", "--out", str(tmp_path / "o.json")],
                      throwaway_model_folder, monkeypatch, capsys)
    assert "nothing to find landmarks in" in message and reason in message


def test_blank_images_of_a_stack_are_named_in_one_warning(tmp_path, throwaway_model_folder, monkeypatch, caplog):
    images = heart_like(40, 48, phases=1, slices=4)
    images[:, :, 3] = 0  # zero padding past the apex
    path = write_nifti(tmp_path / "stack.nii.gz", images, np.eye(4))
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(throwaway_model_folder))
    with caplog.at_level(logging.WARNING):
        assert main_detect([str(path), "--view", "sax", "--sequence", "cine", "--out", str(tmp_path / "o.json")]) == 0
    (warning,) = [r.getMessage() for r in caplog.records if "nothing to find landmarks in" in r.getMessage()]
    assert "1 of 4 images" in warning and "slice 3 phase 0" in warning and "\n" not in warning


def test_a_pixel_beyond_float32_is_set_to_zero_without_a_runtime_warning():
    image = np.arange(16, dtype=np.float64).reshape(4, 4)
    image[0, 0] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        magnitude = to_magnitude(image)
    assert magnitude[0, 0] == 0.0 and magnitude[3, 3] == 15.0


def test_a_stack_given_as_long_axis_is_warned_of(tmp_path, throwaway_model_folder, monkeypatch, caplog):
    path = write_nifti(tmp_path / "stack.nii.gz", heart_like(40, 48, phases=1, slices=4), np.eye(4))
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(throwaway_model_folder))
    with caplog.at_level(logging.WARNING):
        assert main_detect([str(path), "--view", "lax", "--sequence", "cine", "--out", str(tmp_path / "o.json")]) == 0
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "4 parallel slices" in warning and "--view sax" in warning and "\n" not in warning
    assert "give --nifti-3d phases" in warning  # the other reading of a 3-D file, for a long-axis cine


def test_a_long_axis_cine_stored_as_3d_nifti_is_read_as_phases_when_told(tmp_path, throwaway_model_folder,
                                                                         monkeypatch):
    cine = heart_like(40, 48, phases=1, slices=6)[:, :, :, 0]  # rows x cols x 6, the slice axis squeezed out
    path = write_nifti(tmp_path / "lax_cine.nii.gz", cine, np.eye(4))
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(throwaway_model_folder))
    out = tmp_path / "o.json"
    assert main_detect([str(path), "--view", "lax", "--sequence", "cine", "--out", str(out), "--nifti-3d",
                        "phases"]) == 0
    result = json.loads(out.read_text())
    assert [(r["slice"], r["phase"]) for r in result["images"]] == [(0, t) for t in range(6)]
    assert [s["slice"] for s in result["longitudinal_shortening"]] == [0]  # one cine: its shortening, once
    with pytest.raises(ImageReadError, match="only for a 3-D NIfTI"):  # DICOM/ISMRMRD say it themselves
        read_series(REPO_ROOT / "samples" / "mnms2_001_sax.h5", nifti_third_axis="phases")
    # a trailing empty axis (rows x cols x N x 1, as converters write) is still a 3-D image; a real 4-D one is not
    padded = write_nifti(tmp_path / "padded.nii.gz", cine[:, :, :, None], np.eye(4))
    assert read_series(padded, nifti_third_axis="phases").images.shape[:2] == (1, 6)
    stack_of_cines = write_nifti(tmp_path / "4d.nii.gz", heart_like(40, 48, phases=3, slices=4), np.eye(4))
    with pytest.raises(ImageReadError, match="reads a 3-D file"):  # was ignored: 4 slices x 3 phases as given
        read_series(stack_of_cines, nifti_third_axis="phases")


def test_the_phases_hint_is_given_only_where_the_option_would_change_something(tmp_path):
    spec = find_model("lax", "cine")
    stack_of_cines = read_series(write_nifti(tmp_path / "4d.nii.gz", heart_like(40, 48, phases=3, slices=4),
                                             np.eye(4)))
    warning = view_warning(stack_of_cines, spec, records_with([3] * 12, ("MV-1", "MV-2", "APEX")))
    assert "4 parallel slices" in warning and "--nifti-3d" not in warning


def records_with(found_per_image: list[int], names: tuple[str, ...] = ("A-RVI", "P-RVI", "C-LV")) -> list[dict]:
    point = {"voxel": [1.0, 1.0], "world_mm": [0.0, 0.0, 0.0], "probability": 0.9}
    return [{"slice": 0, "phase": t, "landmarks": {n: point if i < found else None for i, n in enumerate(names)}}
            for t, found in enumerate(found_per_image)]


def test_a_model_that_finds_almost_nothing_names_the_other_view(tmp_path):
    path = write_nifti(tmp_path / "one.nii.gz", heart_like(40, 48, phases=5, slices=1), np.diag([2.0, 2.0, 8.0, 1]))
    series = read_series(path)
    spec = find_model("sax", "cine", folder=REPO_ROOT / "models")
    warning = view_warning(series, spec, records_with([0, 1, 0, 2, 0]))
    assert "all its landmarks in 0 of 5 images" in warning and "--view lax" in warning
    assert view_warning(series, spec, records_with([3, 1, 0, 2, 0])) is None  # one in five, as a basal slice has
    # the LV centre in most images: a short-axis stack whose outer slices lie beyond the RV, not another view
    # points filled in from the neighbouring phases are not the image's own: they had hidden the warning
    filled_in = records_with([3] * 5, ("MV-1", "MV-2", "APEX"))
    for record in filled_in:
        record["landmarks"]["APEX"] = {**record["landmarks"]["APEX"], "filled": True}
    lax_warning = view_warning(series, find_model("lax", "cine", folder=REPO_ROOT / "models"), filled_in)
    assert "all its landmarks in 0 of 5 images" in lax_warning
    lv_centre_only = records_with([3] * 5, ("C-LV", "A-RVI", "P-RVI"))
    for record in lv_centre_only:
        record["landmarks"].update({"A-RVI": None, "P-RVI": None})
    assert view_warning(series, spec, lv_centre_only) is None
    # 40 x 48 mm: no heart fits, whatever the view
    tiny = read_series(write_nifti(tmp_path / "tiny.nii.gz", heart_like(40, 48, phases=5, slices=1), np.eye(4)))
    assert "too small to hold a heart" in view_warning(tiny, spec, records_with([0, 1, 0, 2, 0]))


def test_a_long_axis_image_given_as_short_axis_is_warned_of(shared_data, tmp_path, monkeypatch, caplog):
    # the shipped short-axis model finds nothing on the M&Ms-2 4-chamber view; the long-axis one finds all three
    path = shared_data / "mnms2" / "001" / "001_LA_ED.nii.gz"
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(REPO_ROOT / "models"))
    for view, warned in (("sax", True), ("lax", False)):
        caplog.clear()
        args = [str(path), "--view", view, "--sequence", "cine", "--out", str(tmp_path / "o.json")]
        with caplog.at_level(logging.WARNING):
            assert main_detect(args) == 0
        view_warnings = [r.getMessage() for r in caplog.records if "--view lax" in r.getMessage()]
        assert bool(view_warnings) == warned, (view, view_warnings)


def test_an_out_that_is_the_input_is_refused(tmp_path, throwaway_model_folder, monkeypatch, capsys):
    path = write_nifti(tmp_path / "a.nii", heart_like(16, 16, 1, 1)[:, :, 0, 0], np.eye(4))
    before = path.read_bytes()
    message = refusal([str(path), "--view", "sax", "--sequence", "cine", "--out", str(path)],
                      throwaway_model_folder, monkeypatch, capsys)
    assert "is the input file" in message and path.read_bytes() == before


def test_an_out_that_is_an_image_of_the_input_folder_is_refused(tmp_path, throwaway_model_folder, monkeypatch,
                                                                capsys):
    # before: OUT.json replaced file00.dcm, and the series could not be read again
    dicom_series(tmp_path, slices=1, phases=2, shape=(12, 16),
                 texture=np.random.default_rng(0).integers(0, 50, (12, 16)))
    image = sorted(tmp_path.glob("*.dcm"))[0]
    before = image.read_bytes()
    message = refusal([str(tmp_path), "--view", "sax", "--sequence", "cine", "--out", str(image)],
                      throwaway_model_folder, monkeypatch, capsys)
    assert "is an image of the input folder" in message and image.read_bytes() == before
    # an earlier result in the folder is no image: the same command again writes it again
    out = tmp_path / "result.json"
    for _ in range(2):
        assert main_detect([str(tmp_path), "--view", "sax", "--sequence", "cine", "--out", str(out)]) == 0


def test_an_image_group_with_a_file_that_has_none_is_refused(tmp_path, throwaway_model_folder, monkeypatch, capsys):
    path = write_nifti(tmp_path / "a.nii", heart_like(16, 16, 1, 1)[:, :, 0, 0], np.eye(4))
    # was ignored: the images read were not the group the user named
    message = refusal([str(path), "--view", "sax", "--sequence", "cine", "--out", str(tmp_path / "out.json"),
                       "--image-group", "dataset/image_2"], throwaway_model_folder, monkeypatch, capsys)
    assert "an image group (dataset/image_2) is chosen only in an ISMRMRD file" in message


def test_a_folder_of_nifti_files_says_to_give_one(tmp_path):
    folder = tmp_path / "niftis"
    folder.mkdir()
    write_nifti(folder / "a.nii.gz", heart_like(16, 16, 1, 1)[:, :, 0, 0], np.eye(4))
    with pytest.raises(ImageReadError, match=r"1 NIfTI/ISMRMRD files \(e.g. a.nii.gz\); give one file"):
        read_series(folder)


def test_a_copied_dicom_file_is_read_once_not_as_another_phase(tmp_path, caplog):
    dicom_series(tmp_path, slices=2, phases=2, shape=(12, 16))
    first = sorted(tmp_path.glob("*.dcm"))[0]
    shutil.copy(first, tmp_path / f"{first.stem} (1).dcm")  # what a file manager names a copy
    with caplog.at_level(logging.WARNING):
        series = read_dicom(tmp_path)
    assert series.images.shape == (2, 2, 12, 16)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "the same SOPInstanceUID" in warning


def test_anonymised_dicom_files_without_instance_uids_are_all_read(tmp_path):
    for t in range(2):  # no SOPInstanceUID to tell a copy by: each file is an image
        write_dicom(tmp_path / f"IM{t}.dcm", np.full((8, 8), t), np.zeros(3), ORIENTATION, SPACING, 40.0 * t, t, "")
    for path in tmp_path.glob("*.dcm"):
        dataset = pydicom.dcmread(str(path))
        del dataset.SOPInstanceUID
        dataset.save_as(str(path))
    assert read_dicom(tmp_path).images.shape == (1, 2, 8, 8)


@pytest.mark.parametrize("with_position", [True, False])
def test_a_multi_frame_dicom_is_refused_by_name(with_position, tmp_path):
    # before: "expected 2-D images of one size, got shapes [(3, 8, 8)]", or where enhanced MR keeps the geometry in
    # its functional groups, "DICOM image without geometry"
    path = tmp_path / "enhanced.dcm"
    write_dicom(path, np.zeros((8, 8)), np.zeros(3), ORIENTATION, SPACING, 0.0, 1, "1.2.3")
    dataset = pydicom.dcmread(str(path))
    dataset.NumberOfFrames = 3
    dataset.PixelData = np.arange(3 * 64, dtype=np.uint16).tobytes()
    if not with_position:
        del dataset.ImagePositionPatient
    dataset.save_as(str(path))
    with pytest.raises(ImageReadError, match="multi-frame"):
        read_series(tmp_path)


def test_rounded_orientation_cosines_are_one_plane(tmp_path):
    # before: a single file whose cosines were written to two decimals (lengths 1.004 / 0.995) was "not
    # parallel to the series' first image": itself, since the slice normal was never made unit length
    rounded = [0.71, 0.71, 0.0, 0.0, 0.0, -0.995]
    write_dicom(tmp_path / "a.dcm", np.arange(64).reshape(8, 8), np.zeros(3), rounded, SPACING, 0.0, 1, "1.2.3")
    series = read_dicom(tmp_path)
    assert series.images.shape == (1, 1, 8, 8)
    assert np.isclose(np.linalg.norm(series.slice_geometry[0].col_step_mm), SPACING[1])


def test_monochrome1_is_read_bright_where_the_signal_is_high(tmp_path):
    pixels = np.arange(64).reshape(8, 8)
    write_dicom(tmp_path / "a.dcm", pixels.max() - pixels, np.zeros(3), ORIENTATION, SPACING, 0.0, 1, "1.2.3")
    dataset = pydicom.dcmread(str(tmp_path / "a.dcm"))
    dataset.PhotometricInterpretation = "MONOCHROME1"
    dataset.save_as(str(tmp_path / "a.dcm"))
    assert np.array_equal(read_dicom(tmp_path).images[0, 0], pixels)


@pytest.mark.parametrize("damage, message", [
    ("rgb", "colour DICOM image"), ("no_spacing", "without PixelSpacing"), ("jpeg_lossless", "no decoder installed"),
])
def test_dicom_a_scanner_would_not_write_is_refused_in_one_line(damage, message, tmp_path):
    path = tmp_path / "a.dcm"
    write_dicom(path, np.zeros((8, 8)), np.zeros(3), ORIENTATION, SPACING, 0.0, 1, "1.2.3")
    dataset = pydicom.dcmread(str(path))
    if damage == "rgb":
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, "RGB", 0
        dataset.BitsAllocated = dataset.BitsStored = 8
        dataset.HighBit = 7
        dataset.PixelData = np.zeros((8, 8, 3), np.uint8).tobytes()
    elif damage == "no_spacing":
        del dataset.PixelSpacing
    else:  # compressed as a PACS exports it; decoding needs an optional plugin
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLosslessSV1
        dataset.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xd9"])
    dataset.save_as(str(path))
    try:
        import pylibjpeg  # noqa: F401  (installed: the file decodes, or fails as corrupt, not as unsupported)
    except ImportError:
        pass
    else:
        if damage == "jpeg_lossless":
            pytest.skip("a JPEG decoder is installed")
    with pytest.raises(ImageReadError, match=message):
        read_series(tmp_path)


def test_complex_nifti_is_read_as_its_magnitude(tmp_path, caplog):
    data = (np.arange(48, dtype=np.float32).reshape(4, 4, 3) * np.exp(0.7j)).astype(np.complex64)
    series = read_series(write_nifti(tmp_path / "complex.nii.gz", data, np.diag([1.5, 1.5, 8.0, 1.0])))
    np.testing.assert_allclose(series.images[:, 0], np.transpose(np.abs(data), (2, 0, 1)), rtol=1e-6)
    assert "magnitude" in caplog.text


def test_a_nifti_without_qform_or_sform_says_its_world_coordinates_are_made_up(tmp_path, caplog):
    import nibabel as nib

    image = nib.Nifti1Image(np.ones((4, 4, 2), np.float32), np.diag([1.5, 1.5, 8.0, 1.0]))
    image.set_qform(None, code=0)
    image.set_sform(None, code=0)
    nib.save(image, str(tmp_path / "bare.nii"))
    read_series(tmp_path / "bare.nii")
    assert "neither qform nor sform" in caplog.text


def test_a_nifti_whose_affine_is_vouched_for_is_shown_as_its_dicom(shared_data, tmp_path, monkeypatch):
    # dcm2niix writes the DICOM's geometry into the affine. Shown as its anatomy says, this Kaggle frame came back
    # with A-RVI and P-RVI swapped (80 mm off); --nifti-affine shows it as the DICOM header does.
    dicom = shared_data / "kaggle_dsb_dicom" / "IM-1133-0029.dcm"
    series = read_series(dicom)
    geometry = series.patient_geometry_lps(0)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1] = lps_to_ras @ geometry.row_step_mm, lps_to_ras @ geometry.col_step_mm
    affine[:3, 2] = lps_to_ras @ np.cross(geometry.col_step_mm, geometry.row_step_mm) / np.linalg.norm(
        geometry.col_step_mm) / np.linalg.norm(geometry.row_step_mm) * 8.0
    affine[:3, 3] = lps_to_ras @ geometry.origin_mm
    nifti = write_nifti(tmp_path / "frame.nii.gz", series.images[0, 0], affine)
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(REPO_ROOT / "models"))
    results = {}
    for name, path, options in (("dicom", dicom, []), ("nifti", nifti, ["--nifti-affine"])):
        out = tmp_path / f"{name}.json"
        assert main_detect([str(path), "--view", "sax", "--sequence", "cine", "--out", str(out), *options]) == 0
        results[name] = json.loads(out.read_text())
    assert results["nifti"]["display_orientation"]["source"] == "header"
    for landmark, found in results["dicom"]["images"][0]["landmarks"].items():
        from_nifti = results["nifti"]["images"][0]["landmarks"][landmark]
        assert (found is None) == (from_nifti is None), landmark
        if found is not None:  # DICOM voxels are [column, row], NIfTI's [i = row, j = column]; LPS against RAS
            np.testing.assert_allclose(from_nifti["voxel"], found["voxel"][::-1], atol=1e-3)
            np.testing.assert_allclose(from_nifti["world_mm"], lps_to_ras @ found["world_mm"], atol=1e-2)
    for measure in ("rv_insertion_angle_deg", "anterior_rvi_direction_deg"):
        assert results["dicom"]["images"][0][measure] == results["nifti"]["images"][0][measure], measure
    assert results["dicom"]["images"][0]["anterior_rvi_direction_deg"] is not None


def test_blank_phases_of_a_long_axis_cine_get_no_points_and_no_length(shared_data, tmp_path, monkeypatch):
    # before: all three points were filled into the blank phases from their neighbours, with LV lengths of 77-83 mm
    # that entered the shortening, where the gadget tagged the same phases as failed
    import nibabel as nib

    source = nib.load(str(shared_data / "mnms2" / "001" / "001_LA_CINE.nii.gz"))
    data = np.asanyarray(source.dataobj).astype(np.float32)
    data[..., 10:15] = 0.0
    path = write_nifti(tmp_path / "cine.nii.gz", data, source.affine)
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(REPO_ROOT / "models"))
    out = tmp_path / "o.json"
    assert main_detect([str(path), "--view", "lax", "--sequence", "cine", "--out", str(out)]) == 0
    images = json.loads(out.read_text())["images"]
    blank = [image for image in images if 10 <= image["phase"] < 15]
    assert all(landmark is None for image in blank for landmark in image["landmarks"].values())
    assert all(image["lv_length_mm"] is None for image in blank)
    assert all(image["lv_length_mm"] is not None for image in images if not 10 <= image["phase"] < 15)


@pytest.mark.parametrize("images, threshold, message", [
    ([np.ones((40, 40)), np.ones((40, 30))], None, "images of one shape"),
    ([np.ones((40, 40))], float("nan"), r"\[0, 1\]"),
    ([np.ones((40, 40))], 2.0, r"\[0, 1\]"),
])
def test_the_detector_refuses_what_it_cannot_answer(images, threshold, message):
    # a threshold of 2 or NaN had found nothing, silently; images of two shapes gave numpy's stacking error
    from cmr_landmark.detector import Detector

    detector = Detector(find_model("sax", "cine", folder=REPO_ROOT / "models"))
    with pytest.raises(ValueError, match=message):
        detector.detect(images, (1.5, 1.5), probability_threshold=threshold)
