"""NIfTI/DICOM -> ISMRMRD images or raw k-space, read back through the readers and the simple recon."""

from __future__ import annotations

import h5py
import ismrmrd
import numpy as np
import pytest
from test_io import dicom_series, oblique_affine, write_nifti

from cmr_landmark.convert import series_to_acquisitions
from cmr_landmark.convert_cli import main_convert
from cmr_landmark.io import list_image_groups, read_ismrmrd_images, read_series


def heart_like(rows: int, cols: int, phases: int, slices: int) -> np.ndarray:
    """Smooth blobs of whole-number intensity on a dim background (compressible, like scanner images), different
    per slice and phase."""
    r, c = np.mgrid[:rows, :cols]
    images = np.empty((rows, cols, slices, phases), dtype=np.float32)
    for k in range(slices):
        for t in range(phases):
            radius = np.hypot(r - rows * (0.4 + 0.05 * k), c - cols * 0.55)
            images[:, :, k, t] = np.rint(100 + 800 * np.exp(-((radius / (6 + t)) ** 2)))
    return images


@pytest.fixture
def nifti_cine(tmp_path):
    data = heart_like(24, 32, phases=3, slices=2)
    return write_nifti(tmp_path / "cine.nii.gz", data, oblique_affine()), data


@pytest.mark.parametrize("sequence", ["cine", "lge", "t1", "any"])
def test_the_sequence_is_written_into_the_protocol_name(nifti_cine, tmp_path, sequence):
    # 'any': a contrast no sequence-specific model knows (a T2 map), which the gadget's rule sends to sax_any
    out = tmp_path / f"{sequence}.h5"
    assert main_convert([str(nifti_cine[0]), "--out", str(out), "--view", "sax", "--sequence", sequence]) == 0
    header, _ = read_ismrmrd_images(out)
    assert header.measurementInformation.protocolName == f"CMR_LANDMARK_SAX_{sequence.upper()}"


def test_images_round_trip_with_geometry_and_header(nifti_cine, tmp_path):
    path, data = nifti_cine
    out = tmp_path / "cine.h5"
    assert main_convert([str(path), "--out", str(out), "--view", "sax", "--sequence", "lge"]) == 0
    original, converted = read_series(path), read_series(out)
    np.testing.assert_array_equal(converted.images, original.images)
    assert converted.images.dtype == np.float32
    rng = np.random.default_rng(3)
    for k in range(original.n_slices):
        points = rng.uniform(0, 24, size=(4, 2))
        # NIfTI world is RAS+, ISMRMRD patient coordinates LPS: x and y change sign, nothing else (written out
        # here, not the package's own constant, so that a wrong constant cannot pass on both sides)
        np.testing.assert_allclose(
            converted.pixel_to_world_mm(k, points), original.pixel_to_world_mm(k, points) * [-1.0, -1.0, 1.0],
            atol=1e-3)
    header, images = read_ismrmrd_images(out)
    assert header.measurementInformation.protocolName == "CMR_LANDMARK_SAX_LGE"
    limits = header.encoding[0].encodingLimits
    assert (limits.slice.maximum, limits.phase.maximum) == (1, 2)
    assert (header.encoding[0].reconSpace.matrixSize.x, header.encoding[0].reconSpace.matrixSize.y) == (32, 24)
    assert [(im.slice, im.phase) for im in images] == [(k, t) for k in range(2) for t in range(3)]
    for image in images:
        directions = np.array([image.read_dir, image.phase_dir, image.slice_dir])
        np.testing.assert_allclose(directions @ directions.T, np.eye(3), atol=1e-5)
    assert list_image_groups(out) == ["dataset/image_1"]


def test_compressed_images_read_back_identical_and_smaller(nifti_cine, tmp_path):
    path, _ = nifti_cine
    plain, packed = tmp_path / "plain.h5", tmp_path / "packed.h5"
    main_convert([str(path), "--out", str(plain), "--view", "lax"])
    main_convert([str(path), "--out", str(packed), "--view", "lax", "--compress"])
    np.testing.assert_array_equal(read_series(packed).images, read_series(plain).images)
    with h5py.File(packed, "r") as file:
        pixels = file["dataset/image_1/data"]
        assert pixels.compression == "gzip"
        assert pixels.id.get_storage_size() < pixels.size * pixels.dtype.itemsize / 2


def test_kspace_simulation_and_simple_recon_give_back_the_images(nifti_cine, tmp_path):
    path, _ = nifti_cine
    images_h5, kspace_h5 = tmp_path / "images.h5", tmp_path / "kspace.h5"
    main_convert([str(path), "--out", str(images_h5), "--view", "sax"])
    assert main_convert([str(path), "--out", str(kspace_h5), "--view", "sax", "--kspace", "--coils", "3"]) == 0
    with ismrmrd.Dataset(str(kspace_h5), "dataset", mode="r") as dataset:
        acquisitions = [dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())]
        assert list_image_groups(kspace_h5) == []
    assert len(acquisitions) == 2 * 3 * 24  # one per ky line of every slice and phase
    assert {a.active_channels for a in acquisitions} == {3}
    assert {a.number_of_samples for a in acquisitions} == {64}  # 2x readout oversampling of 32 columns
    firsts = [a for a in acquisitions if a.is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE)]
    lasts = [a for a in acquisitions if a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)]
    assert {a.idx.kspace_encode_step_1 for a in firsts} == {0} and {a.idx.kspace_encode_step_1 for a in lasts} == {23}
    assert [(a.idx.slice, a.idx.phase) for a in firsts] == [(k, t) for k in range(2) for t in range(3)]
    expected, reconstructed = read_series(images_h5), read_series(kspace_h5)
    assert reconstructed.images.shape == expected.images.shape
    np.testing.assert_allclose(reconstructed.images, expected.images, atol=1e-3 * expected.images.max())
    for k in range(2):
        np.testing.assert_allclose(
            reconstructed.pixel_to_world_mm(k, [[3.0, 5.0]]), expected.pixel_to_world_mm(k, [[3.0, 5.0]]), atol=1e-3
        )


def test_recon_refuses_lines_that_do_not_fit(nifti_cine, tmp_path):
    from cmr_landmark.convert import build_header
    from cmr_landmark.io.image_series import ImageReadError
    from cmr_landmark.io.recon import reconstruct_cartesian

    series = read_series(nifti_cine[0])
    header = build_header(series, "sax", "cine", coils=4, readout_oversampling=1)  # says 32 samples, data has 64
    with pytest.raises(ImageReadError, match="does not fit"):
        reconstruct_cartesian(header, series_to_acquisitions(series, coils=4))


def test_recon_refuses_missing_lines_and_more_than_one_repetition(nifti_cine):
    from cmr_landmark.convert import READOUT_OVERSAMPLING, build_header
    from cmr_landmark.io.image_series import ImageReadError
    from cmr_landmark.io.recon import reconstruct_cartesian

    series = read_series(nifti_cine[0])
    header = build_header(series, "sax", "cine", coils=2, readout_oversampling=READOUT_OVERSAMPLING)
    acquisitions = list(series_to_acquisitions(series, coils=2))
    every_other = [a for a in acquisitions if a.idx.kspace_encode_step_1 % 2 == 0]  # R = 2, nothing to fit GRAPPA to
    with pytest.raises(ImageReadError, match="too few to fit the GRAPPA kernel"):
        reconstruct_cartesian(header, every_other)
    repeated = acquisitions[0]
    repeated.idx.repetition = 1  # a second repetition would overwrite the first's lines
    with pytest.raises(ImageReadError, match="only one repetition"):
        reconstruct_cartesian(header, acquisitions)


def test_dicom_series_converts_with_its_patient_geometry(tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    dicom_series(folder, slices=2, phases=2)
    out = tmp_path / "dicom.h5"
    assert main_convert([str(folder), "--out", str(out), "--view", "sax"]) == 0
    original, converted = read_series(folder), read_series(out)
    np.testing.assert_array_equal(converted.images, original.images)
    for k in range(2):
        np.testing.assert_allclose(
            converted.pixel_to_world_mm(k, [[0.0, 0.0], [11.0, 15.0]]),
            original.pixel_to_world_mm(k, [[0.0, 0.0], [11.0, 15.0]]),
            atol=1e-3,
        )


def test_bad_input_exits_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main_convert([str(tmp_path / "nothing.nii.gz"), "--out", str(tmp_path / "x.h5"), "--view", "sax"])
    assert stop.value.code == 2
    assert "no such file" in capsys.readouterr().err
    source = write_nifti(tmp_path / "sax.nii.gz", heart_like(32, 32, phases=1, slices=1), np.eye(4))
    with pytest.raises(SystemExit) as stop:  # --out a folder: a message, not a traceback
        main_convert([str(source), "--out", str(tmp_path), "--view", "sax"])
    assert stop.value.code == 2
    assert "cannot write" in capsys.readouterr().err
    pixels = heart_like(32, 32, phases=1, slices=1)
    pixels[3, 3] = np.nan
    holey = write_nifti(tmp_path / "holey.nii.gz", pixels, np.eye(4))
    with pytest.raises(SystemExit) as stop:  # one NaN would blank every reconstructed image
        main_convert([str(holey), "--out", str(tmp_path / "k.h5"), "--view", "sax", "--kspace"])
    assert stop.value.code == 2
    assert "NaN or infinite pixels" in capsys.readouterr().err
    # a segmentation given in place of its image: refused here, not slice by slice in the gadget later
    rows, cols = np.mgrid[:48, :56]
    labels = np.where(np.hypot(rows - 24, cols - 28) < 12, 2, 0).astype(np.uint8)
    labels[np.hypot(rows - 24, cols - 28) < 8] = 3
    segmentation = write_nifti(tmp_path / "sax_gt.nii.gz", np.repeat(labels[:, :, None], 3, axis=2), np.eye(4))
    with pytest.raises(SystemExit) as stop:
        main_convert([str(segmentation), "--out", str(tmp_path / "gt.h5"), "--view", "sax"])
    assert stop.value.code == 2 and not (tmp_path / "gt.h5").exists()
    assert "only the values 0, 2, 3: a segmentation (label map)" in capsys.readouterr().err
    blank = write_nifti(tmp_path / "blank.nii.gz", np.zeros((48, 56, 2), np.float32), np.eye(4))
    assert main_convert([str(blank), "--out", str(tmp_path / "blank.h5"), "--view", "sax"]) == 0  # passes through


@pytest.mark.parametrize("coils", ["0", "65", "1000"])
def test_a_coil_count_no_receive_array_has_is_refused_before_anything_is_written(tmp_path, capsys, coils):
    source = write_nifti(tmp_path / "sax.nii.gz", heart_like(16, 16, phases=1, slices=1), np.eye(4))
    out = tmp_path / "k.h5"
    with pytest.raises(SystemExit) as stop:  # --coils 1000 once wrote 8.8 GB for an ACDC cine
        main_convert([str(source), "--out", str(out), "--view", "sax", "--kspace", "--coils", coils])
    assert stop.value.code == 2
    assert f"--coils must be 1-64 (a scanner's receive array), got {coils}" in capsys.readouterr().err
    assert not out.exists()


def test_a_public_sets_nifti_is_converted_with_a_one_line_warning_about_its_affine(tmp_path, capsys):
    pixels = heart_like(16, 16, phases=1, slices=1)
    for name, dataset in (("patient001_frame01.nii.gz", "acdc"), ("001_SA_ED.nii.gz", "mnms2")):
        source = write_nifti(tmp_path / name, pixels, np.eye(4))
        assert main_convert([str(source), "--out", str(tmp_path / "public.h5"), "--view", "sax"]) == 0
        (warning,) = capsys.readouterr().err.splitlines()
        assert warning.startswith(f"warning: {name} is named like a file of the public set {dataset}, whose NIfTI "
                                  "affines are not trustworthy")
        assert "A-RVI/P-RVI" in warning and "display orientation" in warning and "cmr-landmark detect" in warning
    own = write_nifti(tmp_path / "my_scan.nii.gz", pixels, np.eye(4))  # any other file: its affine is believed
    assert main_convert([str(own), "--out", str(tmp_path / "own.h5"), "--view", "sax"]) == 0
    assert capsys.readouterr().err == ""


def test_acquired_line_flags_keep_one_line_in_r_through_the_centre_and_flag_the_calibration_block():
    from cmr_landmark.convert import acquired_line_flags

    both, reference_only = ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION
    # 16 lines, centre 8, R = 3, a block of 5 calibration lines 6-10 (written out by hand)
    flags = {line: acquired_line_flags(line, 16, 3, 5) for line in range(16)}
    assert {line for line, f in flags.items() if f is not None} == {2, 5, 6, 7, 8, 9, 10, 11, 14}
    assert [line for line, f in flags.items() if f == (both,)] == [8]
    assert [line for line, f in flags.items() if f == (reference_only,)] == [6, 7, 9, 10]
    assert [line for line, f in flags.items() if f == ()] == [2, 5, 11, 14]
    assert all(acquired_line_flags(line, 16, 1, 5) == () for line in range(16))  # unaccelerated: every line


def test_accelerated_kspace_is_written_as_a_scanner_would_and_replays_unfolded(tmp_path):
    source = write_nifti(tmp_path / "sax.nii.gz", heart_like(64, 48, phases=2, slices=1), oblique_affine())
    full_h5, accelerated_h5 = tmp_path / "full.h5", tmp_path / "r2.h5"
    assert main_convert([str(source), "--out", str(full_h5), "--view", "sax", "--kspace", "--coils", "8"]) == 0
    assert main_convert([str(source), "--out", str(accelerated_h5), "--view", "sax", "--kspace", "--coils", "8",
                         "--acceleration", "2", "--calibration-lines", "16"]) == 0
    with ismrmrd.Dataset(str(accelerated_h5), "dataset", mode="r") as dataset:
        header = ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header())
        acquisitions = [dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())]
    parallel = header.encoding[0].parallelImaging
    assert parallel.accelerationFactor.kspace_encoding_step_1 == 2 and parallel.calibrationMode.value == "embedded"
    assert len(acquisitions) == 2 * (32 + 8)  # per phase: the 32 grid lines and the block's 8 lines between them
    firsts = [a.idx.kspace_encode_step_1 for a in acquisitions if a.is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE)]
    assert firsts == [0, 0]  # the grid runs through the centre line 32, so its first line is 0
    full, unfolded = read_series(full_h5).images, read_series(accelerated_h5).images
    error = np.linalg.norm(unfolded - full) / np.linalg.norm(full)
    assert error < 0.05, f"GRAPPA left {error:.3f} of the image's norm (folded?)"


@pytest.mark.parametrize(("options", "message"), [
    (["--acceleration", "2"], "--acceleration applies to raw acquisitions (--kspace)"),
    (["--kspace", "--coils", "1", "--acceleration", "2"], "--acceleration needs several --coils"),
    (["--kspace", "--acceleration", "0"], "--acceleration must be 1 or more, got 0"),
    (["--kspace", "--acceleration", "2", "--calibration-lines", "8"],
     "--calibration-lines must be 11 or more at --acceleration 2"),
    (["--kspace", "--acceleration", "7"], "--calibration-lines must be 26 or more at --acceleration 7"),
])
def test_an_acceleration_that_cannot_be_written_is_refused(tmp_path, capsys, options, message):
    source = write_nifti(tmp_path / "sax.nii.gz", heart_like(16, 16, phases=1, slices=1), np.eye(4))
    out = tmp_path / "k.h5"
    with pytest.raises(SystemExit) as stop:
        main_convert([str(source), "--out", str(out), "--view", "sax", *options])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
