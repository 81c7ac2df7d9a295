"""Raw data as scanners export it, through the simple reconstruction that replay uses: noise, navigator and
calibration lines, averages, partial Fourier, asymmetric echoes and phase resolution are reconstructed; parallel
imaging without enough calibration lines, 3-D and damaged data are refused in one line that says what to do
(parallel imaging itself: tests/test_raw_parallel_imaging.py)."""

from __future__ import annotations

import copy

import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np
import pytest
from test_convert import heart_like
from test_io import oblique_affine, write_nifti

from cmr_landmark.convert import READOUT_OVERSAMPLING, build_header, series_to_acquisitions
from cmr_landmark.io import ImageReadError, partial_fourier, read_series
from cmr_landmark.io.ismrmrd_file import write_ismrmrd_acquisitions
from cmr_landmark.io.recon import read_encoding, reconstruct_cartesian
from cmr_landmark.replay_cli import main_replay

ROWS, COLS, COILS = 24, 32, 3


@pytest.fixture
def series(tmp_path):
    return read_series(write_nifti(tmp_path / "cine.nii.gz", heart_like(ROWS, COLS, phases=2, slices=2),
                                   oblique_affine()))


def raw(series) -> tuple[xsd.ismrmrdHeader, list[ismrmrd.Acquisition]]:
    header = build_header(series, "sax", "cine", coils=COILS, readout_oversampling=READOUT_OVERSAMPLING)
    return header, list(series_to_acquisitions(series, coils=COILS))


def pixels(header, acquisitions) -> np.ndarray:
    return np.stack([image.data[0, 0] for image in reconstruct_cartesian(header, acquisitions)])


def expected(series) -> np.ndarray:
    return series.images.reshape(-1, ROWS, COLS)  # slice-major, as the reconstruction orders its images


def nrmse(image: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(image - reference) / np.linalg.norm(reference))


def blob_centre(image: np.ndarray) -> np.ndarray:
    """(row, col) centre of the bright blob, weighted by its signal above the background."""
    weights = np.clip(image - np.median(image), 0, None)
    return np.array([(weights * grid).sum() / weights.sum() for grid in np.mgrid[: image.shape[0], : image.shape[1]]])


def test_noise_navigator_and_phase_correction_lines_are_left_out(series):
    header, acquisitions = raw(series)
    noise = ismrmrd.Acquisition.from_array(np.ones((COILS + 1, 100), dtype=np.complex64))  # other shape: not imaging
    noise.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    mixed = [noise]
    for acquisition in acquisitions:
        for flag in (ismrmrd.ACQ_IS_NAVIGATION_DATA, ismrmrd.ACQ_IS_PHASECORR_DATA):
            extra = copy.deepcopy(acquisition)
            extra.clear_all_flags()
            extra.set_flag(flag)
            extra.data[:] = 1e6  # would ruin the image if it were taken for a k-space line
            mixed.append(extra)
        mixed.append(acquisition)
    np.testing.assert_allclose(pixels(header, mixed), expected(series), atol=1e-3 * series.images.max())


def test_averages_are_averaged(series):
    header, acquisitions = raw(series)
    both = []
    for acquisition in acquisitions:
        second = copy.deepcopy(acquisition)
        second.idx.average = 1
        noise = np.random.default_rng(acquisition.scan_counter).normal(size=second.data.shape).astype(np.float32)
        acquisition.data[:] += noise  # +noise in one average, -noise in the other: their mean is the clean line
        second.data[:] -= noise
        both += [acquisition, second]
    images = reconstruct_cartesian(header, both)
    assert len(images) == 4 and {image.average for image in images} == {0}
    np.testing.assert_allclose(np.stack([image.data[0, 0] for image in images]), expected(series),
                               atol=1e-3 * series.images.max())


def test_calibration_only_lines_are_not_image_lines(series):
    """A separate parallel-imaging reference scan repeats central lines (in another contrast): they must neither
    count as duplicates nor be mixed into the image."""
    header, acquisitions = raw(series)
    references = []
    for acquisition in acquisitions:
        if abs(acquisition.idx.kspace_encode_step_1 - ROWS // 2) < 4:
            reference = copy.deepcopy(acquisition)
            reference.clear_all_flags()
            reference.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
            reference.data[:] *= 0.3
            references.append(reference)
    np.testing.assert_allclose(pixels(header, references + acquisitions), expected(series),
                               atol=1e-3 * series.images.max())


def test_parallel_imaging_with_too_few_calibration_lines_is_refused_naming_it(series, tmp_path, capsys):
    header, acquisitions = raw(series)
    header.encoding[0].parallelImaging = xsd.parallelImagingType(
        accelerationFactor=xsd.accelerationFactorType(kspace_encoding_step_1=2, kspace_encoding_step_2=1))
    kept = []
    for acquisition in acquisitions:
        step = acquisition.idx.kspace_encode_step_1
        if abs(step - ROWS // 2) < 4:  # 7 auto-calibration lines, imaging ones among them: GRAPPA needs 11
            acquisition.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING if step % 2 == 0
                                 else ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
            kept.append(acquisition)
        elif step % 2 == 0:
            kept.append(acquisition)
    path = tmp_path / "grappa.h5"
    write_ismrmrd_acquisitions(path, header, kept)
    with pytest.raises(SystemExit) as stop:  # refused before any gadget starts
        main_replay([str(path), "--out", str(tmp_path / "out.h5")])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "Traceback" not in message
    assert "grappa.h5: raw data: slice 0: parallel imaging (acceleration 2) with 7 consecutive calibration" in message
    assert "too few to fit the GRAPPA kernel" in message and "reconstruct it on the scanner" in message


@pytest.mark.parametrize("missing", [range(0, ROWS // 4), range(3 * ROWS // 4, ROWS)], ids=["low", "high"])
def test_partial_fourier_is_filled_by_pocs_and_nothing_moves(series, missing, monkeypatch):
    header, acquisitions = raw(series)
    zeroed = copy.deepcopy(acquisitions)
    for acquisition in zeroed:
        if acquisition.idx.kspace_encode_step_1 in missing:
            acquisition.data[:] = 0
    partial = [a for a in acquisitions if a.idx.kspace_encode_step_1 not in missing]
    header.encoding[0].encodingLimits.kspace_encoding_step_1 = xsd.limitType(
        minimum=min(a.idx.kspace_encode_step_1 for a in partial),
        maximum=max(a.idx.kspace_encode_step_1 for a in partial), center=ROWS // 2)
    reconstructed = pixels(header, partial)
    # readouts of zeros written for the lines not acquired are the same partial Fourier
    np.testing.assert_allclose(reconstructed, pixels(header, zeroed), rtol=1e-5, atol=1e-5)
    # not moved: the blob's centre stays where it was
    for image, original in zip(reconstructed, expected(series), strict=True):
        np.testing.assert_allclose(blob_centre(image), blob_centre(original), atol=0.25)
    monkeypatch.setattr(partial_fourier, "POCS_ITERATIONS", 0)  # zero-filled: blurred along the phase encoding
    assert nrmse(reconstructed, expected(series)) < 0.5 * nrmse(pixels(header, partial), expected(series))


def test_partial_fourier_below_five_eighths_is_refused(series):
    header, acquisitions = raw(series)
    half = [a for a in acquisitions if a.idx.kspace_encode_step_1 >= ROWS // 2 - 1]
    with pytest.raises(ImageReadError, match="less partial Fourier than 5/8"):
        reconstruct_cartesian(header, half)


def test_asymmetric_echo_is_placed_by_its_centre_sample(series, monkeypatch):
    header, acquisitions = raw(series)
    full = pixels(header, acquisitions)
    samples = COLS * READOUT_OVERSAMPLING
    cut = samples // 5  # the early part of the echo not sampled
    zeroed = copy.deepcopy(acquisitions)
    for acquisition in zeroed:
        acquisition.data[:, :cut] = 0
    for acquisition in acquisitions:
        late = np.ascontiguousarray(acquisition.data[:, cut:])
        acquisition.resize(number_of_samples=samples - cut, active_channels=COILS)
        acquisition.data[:] = late
        acquisition.center_sample = samples // 2 - cut
    asymmetric = pixels(header, acquisitions)
    monkeypatch.setattr(partial_fourier, "POCS_ITERATIONS", 0)  # the readouts placed as acquired, the rest zero
    # placed where its centre sample says: as the full readouts with their early samples zeroed
    np.testing.assert_allclose(pixels(header, acquisitions), pixels(header, zeroed), rtol=1e-5, atol=1e-5)
    # and POCS brings back most of what the zeros lost
    assert nrmse(asymmetric, full) < 0.5 * nrmse(pixels(header, zeroed), full)


def test_phase_resolution_below_full_is_zero_padded_to_the_recon_matrix(series):
    """Siemens writes fewer encoded than recon lines over the same FOV (phase resolution < 100 %)."""
    header, acquisitions = raw(series)
    lines = 3 * ROWS // 4
    first = (ROWS - lines) // 2
    zeroed = copy.deepcopy(acquisitions)
    for acquisition in zeroed:
        if not first <= acquisition.idx.kspace_encode_step_1 < first + lines:
            acquisition.data[:] = 0
    header.encoding[0].encodedSpace.matrixSize.y = lines
    header.encoding[0].encodingLimits.kspace_encoding_step_1 = xsd.limitType(minimum=0, maximum=lines - 1,
                                                                             center=lines // 2)
    kept = []
    for acquisition in acquisitions:
        if first <= acquisition.idx.kspace_encode_step_1 < first + lines:
            acquisition.idx.kspace_encode_step_1 -= first
            kept.append(acquisition)
    full_header, _ = raw(series)
    reconstructed = pixels(header, kept)
    assert reconstructed.shape == (4, ROWS, COLS)
    np.testing.assert_allclose(reconstructed, pixels(full_header, zeroed), rtol=1e-4, atol=1e-3)


def test_3d_lines_under_a_2d_header_are_refused_as_3d(series):
    header, acquisitions = raw(series)
    partition = copy.deepcopy(acquisitions[0])
    partition.idx.kspace_encode_step_2 = 1
    with pytest.raises(ImageReadError, match="kspace_encode_step_2 = 1: 3-D encoded raw data"):
        reconstruct_cartesian(header, [*acquisitions, partition])


def test_a_line_lost_at_the_edge_of_one_image_is_refused_not_zero_filled(series):
    header, acquisitions = raw(series)
    damaged = [a for a in acquisitions
               if not (a.idx.slice == 1 and a.idx.phase == 1 and a.idx.kspace_encode_step_1 == 0)]
    with pytest.raises(ImageReadError, match=r"slice 1 phase 1: k-space lines \[0\] .*damaged data"):
        reconstruct_cartesian(header, damaged)


def test_phase_resolution_inside_the_scanners_fft_length_is_not_taken_for_partial_fourier(series):
    """Siemens converters write the FFT length (zeros included) as the encoded matrix: a 50 % phase resolution
    leaves half the lines missing, on both sides alike, which is no asymmetry (it was refused as 'less partial
    Fourier than 5/8')."""
    header, acquisitions = raw(series)
    central = range(ROWS // 4, 3 * ROWS // 4)
    zeroed = copy.deepcopy(acquisitions)
    for acquisition in zeroed:
        if acquisition.idx.kspace_encode_step_1 not in central:
            acquisition.data[:] = 0
    kept = [a for a in acquisitions if a.idx.kspace_encode_step_1 in central]
    np.testing.assert_allclose(pixels(header, kept), pixels(header, zeroed), rtol=1e-5, atol=1e-5)


def test_reversed_readouts_and_epi_are_refused(series):
    header, acquisitions = raw(series)
    reversed_lines = copy.deepcopy(acquisitions)
    for acquisition in reversed_lines[1::2]:
        acquisition.set_flag(ismrmrd.ACQ_IS_REVERSE)  # EPI's odd lines: were put in unflipped, a wrong image
    with pytest.raises(ImageReadError, match="ACQ_IS_REVERSE"):
        reconstruct_cartesian(header, reversed_lines)
    header.encoding[0].trajectoryDescription = xsd.trajectoryDescriptionType(identifier="ConventionalEPI")
    with pytest.raises(ImageReadError, match="EPI readout"):
        reconstruct_cartesian(header, acquisitions)


def test_the_images_field_of_view_is_their_pixel_size_times_their_matrix(series):
    header, _ = raw(series)
    encoding = header.encoding[0]
    # 33 % phase oversampling that the resampled matrix rounds: 399 mm over 255 lines of 1.5647 mm, not 1.5625
    encoding.encodedSpace.matrixSize.y, encoding.encodedSpace.fieldOfView_mm.y = 255, 399.0
    encoding.reconSpace.matrixSize.y, encoding.reconSpace.fieldOfView_mm.y = 192, 300.0
    assert read_encoding(header).recon_fov_mm[1] == pytest.approx(399.0 / 255 * 192)


def test_without_fields_of_view_the_matrices_alone_decide_crop_or_pad(series):
    header, _ = raw(series)
    encoding = header.encoding[0]
    encoding.encodedSpace.fieldOfView_mm.y = encoding.reconSpace.fieldOfView_mm.y = 0.0  # a converter left them out
    encoding.encodedSpace.matrixSize.y = 3 * ROWS // 4  # phase resolution 75 %: was refused as "0x0 mm is larger"
    assert (read_encoding(header).resampled_y, read_encoding(header).recon_y) == (ROWS, ROWS)


def test_a_k_space_centre_left_at_0_by_a_converter_is_taken_as_unset(series):
    header, acquisitions = raw(series)
    header.encoding[0].encodingLimits.kspace_encoding_step_1 = xsd.limitType(minimum=0, maximum=ROWS - 1, center=0)
    # was refused: every line shifted by half the matrix "does not fit" the encoding
    np.testing.assert_allclose(pixels(header, acquisitions), expected(series), atol=1e-3 * series.images.max())
