"""Parallel-imaging (GRAPPA) raw data through the reconstruction that replay uses: a slice of the shipped short-axis
sample made into 8-coil raw data, undersampled as scanners do (one line in every R plus calibration lines), must
come back unfolded, close to the fully sampled reconstruction and far from the zero-filled one; what GRAPPA cannot
unfold is refused in one line."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np
import pytest

from cmr_landmark.convert import READOUT_OVERSAMPLING, build_header, series_to_acquisitions
from cmr_landmark.io import ImageReadError, read_series
from cmr_landmark.io.grappa import grappa_fill, grappa_weights
from cmr_landmark.io.ismrmrd_file import read_ismrmrd_images, write_ismrmrd_acquisitions
from cmr_landmark.io.recon import (
    fill_kspace,
    line_sampling,
    longest_run,
    magnitude_image,
    read_encoding,
    readout_span,
    reconstruct_cartesian,
)

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "mnms2_001_sax.h5"
COILS = 8
ACS_LINES = 24  # a scanner's usual calibration block
MID_SLICE = 6  # the left ventricle is well inside this slice of the sample


@pytest.fixture(scope="module")
def series():
    """One mid-ventricular slice (both phases, 256 x 256) of the sample, as a series of its own."""
    full = read_series(SAMPLE)
    return dataclasses.replace(full, images=full.images[MID_SLICE : MID_SLICE + 1],
                               slice_geometry=full.slice_geometry[MID_SLICE : MID_SLICE + 1], trigger_times_ms=None)


@pytest.fixture(scope="module")
def raw(series) -> tuple[xsd.ismrmrdHeader, list[ismrmrd.Acquisition]]:
    header = build_header(series, "sax", "cine", coils=COILS, readout_oversampling=READOUT_OVERSAMPLING)
    return header, list(series_to_acquisitions(series, coils=COILS))


def rows(raw) -> int:
    return raw[0].encoding[0].encodedSpace.matrixSize.y


def accelerated_header(raw, acceleration: int, calibration_mode: xsd.calibrationModeType | None = None
                       ) -> xsd.ismrmrdHeader:
    header = copy.deepcopy(raw[0])
    header.encoding[0].parallelImaging = xsd.parallelImagingType(accelerationFactor=xsd.accelerationFactorType(
        kspace_encoding_step_1=acceleration, kspace_encoding_step_2=1), calibrationMode=calibration_mode)
    return header


def is_acs(step: int, lines: int, total: int) -> bool:
    return total // 2 - lines // 2 <= step < total // 2 + lines // 2


def undersample(raw, acceleration: int, acs_lines: int = ACS_LINES, calibration: str = "embedded",
                first_line: int = 0) -> list[ismrmrd.Acquisition]:
    """One line in every ``acceleration`` from ``first_line`` (partial Fourier below it), and the central
    ``acs_lines`` as ``calibration``: "embedded" image lines flagged ..._CALIBRATION_AND_IMAGING, "integrated" as
    siemens_to_ismrmrd writes Siemens' integrated reference lines (those on the image grid flagged
    ..._CALIBRATION_AND_IMAGING, the others ACQ_IS_PARALLEL_CALIBRATION only), "unflagged" image lines, or a
    "separate" reference scan of phase 0 only, flagged ACQ_IS_PARALLEL_CALIBRATION and at half the signal
    (another contrast: mixed into the image, it would show), as Siemens acquires it once per slice."""
    total = rows(raw)
    kept = []
    for acquisition in copy.deepcopy(raw[1]):
        step = acquisition.idx.kspace_encode_step_1
        acs = is_acs(step, acs_lines, total)
        separate_acs = calibration == "separate"
        if acs and separate_acs and acquisition.idx.phase == 0:
            reference = copy.deepcopy(acquisition)
            reference.clear_all_flags()
            reference.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
            reference.data[:] *= 0.5
            kept.append(reference)
        if step < first_line:
            continue
        if acs and not separate_acs:
            if calibration == "embedded" or (calibration == "integrated" and step % acceleration == 0):
                acquisition.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
            elif calibration == "integrated":
                acquisition.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
            kept.append(acquisition)
        elif step % acceleration == 0:
            kept.append(acquisition)
    return kept


def zero_filled(raw, kept: list[ismrmrd.Acquisition]) -> np.ndarray:
    """The plain reconstruction of the undersampled image lines: the missing ones zero, nothing unfolded (built
    here: the reconstruction takes readouts of zeros for lines not acquired, and unfolds them)."""
    encoding = read_encoding(raw[0])
    image_lines = [a for a in kept if not a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)]
    phases = [[a for a in image_lines if a.idx.phase == phase] for phase in sorted({a.idx.phase for a in image_lines})]
    return np.stack([magnitude_image(encoding, fill_kspace(encoding, "", lines)[0], lines[0], 1).data[0, 0]
                     for lines in phases])


def pixels(header, acquisitions) -> np.ndarray:
    return np.stack([image.data[0, 0] for image in reconstruct_cartesian(header, acquisitions)])


def nrmse(image: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(image - reference) / np.linalg.norm(reference))


# Measured on this slice (8 coils, no noise): GRAPPA 0.008 (R = 2) and 0.018 (R = 3) with embedded calibration
# lines (flagged or not), 0.020 and 0.050 with a separate reference scan (the centre of k-space filled too), 0.007
# with 6/8 partial Fourier; zero-filled 0.21, 0.25, 0.63, 0.74 and 0.21.
@pytest.mark.parametrize(("acceleration", "calibration", "first_line", "limit"), [
    (2, "embedded", 0, 0.02), (3, "embedded", 0, 0.04), (2, "unflagged", 0, 0.02), (2, "separate", 0, 0.04),
    (3, "separate", 0, 0.08), (2, "embedded", 64, 0.02),
], ids=["R2-embedded", "R3-embedded", "R2-unflagged", "R2-separate", "R3-separate", "R2-partial-fourier-6/8"])
def test_grappa_unfolds_undersampled_lines(raw, acceleration, calibration, first_line, limit):
    kept = undersample(raw, acceleration, calibration=calibration, first_line=first_line)
    # the reference: every line from the first acquired one, through the existing (partial Fourier) path
    reference = pixels(raw[0], [a for a in raw[1] if a.idx.kspace_encode_step_1 >= first_line])
    reconstructed = pixels(accelerated_header(raw, acceleration), kept)
    error, folded = nrmse(reconstructed, reference), nrmse(zero_filled(raw, kept), reference)
    assert error < limit and folded > 5 * error, (error, folded)


def test_grappa_keeps_acquired_lines_and_leaves_partial_fourier_edges_zero(raw):
    encoding = read_encoding(raw[0])
    phase_0 = [a for a in undersample(raw, 2, first_line=64) if a.idx.phase == 0]
    kspace, lines = fill_kspace(encoding, "slice 0 phase 0", phase_0)
    sampling = line_sampling(encoding, lines, phase_0[0])
    assert (sampling.acceleration, sampling.grid_offset, lines[0], lines[-1]) == (2, 0, 64, 254)
    weights = grappa_weights(kspace[:, longest_run(lines), :], sampling.acceleration)
    acquired = kspace[:, lines].copy()
    grappa_fill(kspace, lines, sampling, weights, readout_span(encoding, phase_0[0]))
    np.testing.assert_array_equal(kspace[:, lines], acquired)
    line_energy = (np.abs(kspace) ** 2).sum(axis=(0, 2))
    # lines 0-63 are partial Fourier (left zero); line 255 is one the grid skipped at the edge (filled)
    assert np.all(line_energy[64:] > 0) and not line_energy[:64].any()


def test_the_lines_the_grid_skips_at_the_k_space_edges_are_filled(raw):
    # R = 3 on the grid 2, 5, ..., 254 (through the centre line 128): lines 0, 1 and 255 were skipped by the grid,
    # not by partial Fourier, and were left zero (measured: NRMSE 0.0247 then, 0.0244 filled; this grid errs more
    # than the one from line 0, 0.018, for a reason other than its edges)
    total = rows(raw)
    kept = []
    for acquisition in copy.deepcopy(raw[1]):
        step = acquisition.idx.kspace_encode_step_1
        if is_acs(step, ACS_LINES, total):
            acquisition.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
        if is_acs(step, ACS_LINES, total) or step % 3 == 2:
            kept.append(acquisition)
    header = accelerated_header(raw, 3)
    encoding = read_encoding(header)
    phase_0 = [a for a in kept if a.idx.phase == 0]
    kspace, lines = fill_kspace(encoding, "slice 0 phase 0", phase_0)
    sampling = line_sampling(encoding, lines, phase_0[0])
    assert (sampling.acceleration, lines[0], lines[-1]) == (3, 2, 254)
    weights = grappa_weights(kspace[:, longest_run(lines), :], sampling.acceleration)
    grappa_fill(kspace, lines, sampling, weights, readout_span(encoding, phase_0[0]))
    assert np.all((np.abs(kspace) ** 2).sum(axis=(0, 2)) > 0)
    error = nrmse(pixels(header, kept), pixels(raw[0], raw[1]))
    assert error < 0.035, error


def test_a_blank_image_of_zero_readouts_comes_out_blank_and_in_its_place(raw):
    # readouts of zeros count as skipped lines only beside measured ones: an image of nothing but zeros (a blank
    # frame) must come out, blank, for the gadget to report, not vanish from its slice
    blanked = copy.deepcopy(raw[1])
    for acquisition in blanked:
        if acquisition.idx.phase == 1:
            acquisition.data[:] = 0
    images = reconstruct_cartesian(raw[0], blanked)
    assert [(image.slice, image.phase) for image in images] == [(0, 0), (0, 1)]
    assert images[0].data.any() and not images[1].data.any()


@pytest.mark.parametrize("lost", [1, 254])
def test_a_line_lost_from_fully_sampled_data_is_not_taken_for_parallel_imaging(raw, lost):
    # without parallel imaging in the header, one line missing next to the edge left a dense block and a lone line
    # a grid step from it, which passed as R = 2 with an embedded calibration block
    damaged = [a for a in raw[1] if a.idx.kspace_encode_step_1 != lost]
    with pytest.raises(ImageReadError, match=rf"k-space lines \[{lost}\] are missing from fully sampled data"):
        reconstruct_cartesian(raw[0], damaged)


def test_real_path_reads_an_accelerated_file_unfolded(raw, tmp_path):
    """What replay runs: an ISMRMRD file of R = 3 raw data with a separate reference scan."""
    path = tmp_path / "grappa.h5"
    write_ismrmrd_acquisitions(path, accelerated_header(raw, 3), undersample(raw, 3, calibration="separate"))
    _, images = read_ismrmrd_images(path)
    assert [(image.slice, image.phase, image.image_index) for image in images] == [(0, 0, 1), (0, 1, 2)]
    reconstructed = np.stack([image.data[0, 0] for image in images])
    assert nrmse(reconstructed, pixels(raw[0], raw[1])) < 0.08


def test_undersampled_single_coil_data_are_refused(series):
    header = build_header(series, "sax", "cine", coils=1, readout_oversampling=READOUT_OVERSAMPLING)
    single = (header, list(series_to_acquisitions(series, coils=1)))
    with pytest.raises(ImageReadError, match=r"slice 0 phase 0: one k-space line in every 2 was acquired \(parallel "
                                             r"imaging\) with one coil: GRAPPA needs several coils"):
        reconstruct_cartesian(header, undersample(single, 2))


def test_too_few_calibration_lines_are_refused(raw):
    with pytest.raises(ImageReadError, match="slice 0: parallel imaging \\(acceleration 2\\) with 8 consecutive "
                                             "calibration lines, too few to fit the GRAPPA kernel: it needs 11"):
        reconstruct_cartesian(accelerated_header(raw, 2), undersample(raw, 2, acs_lines=8))


def test_irregular_gaps_are_still_refused(raw):
    lost = [a for a in raw[1] if a.idx.kspace_encode_step_1 != 50]  # in fully sampled data
    with pytest.raises(ImageReadError, match=r"slice 0 phase 0: k-space lines \[50\] break the pattern of every line "
                                             "from the first sampled line to the last: lines missing irregularly"):
        reconstruct_cartesian(raw[0], lost)
    kept = [a for a in undersample(raw, 2) if a.idx.kspace_encode_step_1 not in (20, 200)]  # two lines lost
    with pytest.raises(ImageReadError, match=r"slice 0 phase 0: k-space lines \[20, 200\] break the pattern of one "
                                             r"line in every 2 \(parallel imaging\) .*: lines missing irregularly"):
        reconstruct_cartesian(accelerated_header(raw, 2), kept)


def test_an_acceleration_other_than_the_headers_is_refused(raw):
    with pytest.raises(ImageReadError, match="one k-space line in every 3 was acquired, but the header's "
                                             "parallel-imaging acceleration is 2"):
        reconstruct_cartesian(accelerated_header(raw, 2), undersample(raw, 3))


@pytest.mark.parametrize(("mode", "limit"), [(xsd.calibrationModeType.EMBEDDED, 0.025), (None, 0.08)],
                         ids=["embedded", "no-mode"])
def test_integrated_reference_lines_are_measured_lines_of_their_image(raw, mode, limit):
    """Siemens' integrated reference lines off the image grid come flagged calibration-only, under the calibration
    mode "embedded": they were GRAPPA-estimated like any skipped line (R = 3: 0.050, as with a separate reference
    scan); measured in the image's own phase, they now stand in it (0.018, as embedded lines flagged for imaging).
    Without that mode they may be another contrast and only fit the kernel."""
    kept = undersample(raw, 3, calibration="integrated")
    assert sum(a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) for a in kept) == 2 * 16  # 16 of 24 a phase
    error = nrmse(pixels(accelerated_header(raw, 3, mode), kept), pixels(raw[0], raw[1]))
    assert error < limit and (mode is None) == (error > 0.04), error


def test_skipped_lines_written_as_readouts_of_zeros_are_unfolded(raw):
    """A converter that writes the whole k-space matrix puts zeros where lines were skipped: they were taken for
    acquired lines, so every line was 'sampled' and the image came back folded (0.21 from the fully sampled)."""
    kept = undersample(raw, 2)
    acquired = {(a.idx.phase, a.idx.kspace_encode_step_1) for a in kept}
    zeros = []
    for acquisition in copy.deepcopy(raw[1]):
        if (acquisition.idx.phase, acquisition.idx.kspace_encode_step_1) not in acquired:
            acquisition.data[:] = 0
            zeros.append(acquisition)
    header = accelerated_header(raw, 2)
    np.testing.assert_allclose(pixels(header, kept + zeros), pixels(header, kept), rtol=1e-6, atol=1e-3)
    assert nrmse(pixels(header, kept + zeros), pixels(raw[0], raw[1])) < 0.02


def time_interleaved(series, phases: list[int], acceleration: int):
    """The slice as a cine of ``phases`` (indices into its two), every line acquired, and the lines TGRAPPA keeps:
    one in every ``acceleration``, the grid moved by one line from phase to phase, no calibration lines."""
    cine = dataclasses.replace(series, images=series.images[:, phases])
    header = build_header(cine, "sax", "cine", coils=COILS, readout_oversampling=READOUT_OVERSAMPLING)
    every_line = list(series_to_acquisitions(cine, coils=COILS))
    kept = [a for a in every_line if (a.idx.kspace_encode_step_1 - a.idx.phase) % acceleration == 0]
    return (header, every_line), kept


# Measured on this slice, its ED and ES frames alternating (a time average of the two is the hardest case for the
# kernel's calibration; neighbouring phases of a real cine differ far less): 0.033 (R = 2, 2 phases), 0.059 (R = 3,
# 3 phases), 0.17 (R = 4, 6 phases); zero-filled 0.65, 0.72, 0.76.
@pytest.mark.parametrize(("phases", "acceleration", "limit"), [
    ([0, 1], 2, 0.05), ([0, 1, 0], 3, 0.08), ([0, 1, 0, 1, 0, 1], 4, 0.22),
], ids=["R2", "R3", "R4"])
def test_time_interleaved_sampling_is_unfolded_with_the_phases_lines_together(series, phases, acceleration, limit):
    raw, kept = time_interleaved(series, phases, acceleration)
    reference = pixels(*raw)
    error = nrmse(pixels(accelerated_header(raw, acceleration), kept), reference)
    folded = nrmse(zero_filled(raw, kept), reference)
    assert error < limit and folded > 4 * error, (error, folded)


def test_time_interleaved_sampling_with_a_calibration_block_in_every_phase(series):
    # the 24 central lines in every phase as well (unflagged): measured 0.0077, as a fixed grid with them (0.008);
    # the kernel is fitted to all phases' lines together, which here cover every line
    raw, kept = time_interleaved(series, [0, 1], 2)
    block = [a for a in raw[1] if is_acs(a.idx.kspace_encode_step_1, ACS_LINES, rows(raw))
             and (a.idx.kspace_encode_step_1 - a.idx.phase) % 2]
    assert nrmse(pixels(accelerated_header(raw, 2), kept + block), pixels(*raw)) < 0.02


def test_time_interleaved_sampling_with_fewer_phases_than_the_acceleration_is_refused(series):
    raw, kept = time_interleaved(series, [0, 1], 3)  # lines 0, 1, 3, 4, 6, ...: never three in a row
    with pytest.raises(ImageReadError, match=r"slice 0: parallel imaging \(acceleration 3\) with 2 consecutive "
                                             r"calibration lines \(the lines of its 2 phases together: "
                                             r"time-interleaved sampling needs as many phases as the acceleration, "
                                             r"or more\), too few to fit the GRAPPA kernel"):
        reconstruct_cartesian(accelerated_header(raw, 3), kept)


def test_lines_lost_at_the_edge_of_one_time_interleaved_phase_are_refused_as_damaged(series):
    # on its own, phase 1 would pass for partial Fourier: against phase 0's extent, moved by one line, it is damaged
    raw, kept = time_interleaved(series, [0, 1], 2)
    lost = [a for a in kept if not (a.idx.phase == 1 and a.idx.kspace_encode_step_1 >= rows(raw) - 12)]
    with pytest.raises(ImageReadError, match=r"slice 0 phase 1: k-space lines \[.*\] are sampled in slice 0 phase 0 "
                                             r"or here but not in both: lines lost in one image \(damaged data\)"):
        reconstruct_cartesian(accelerated_header(raw, 2), lost)


@pytest.mark.parametrize(("acceleration", "limit"), [(2, 1.5), (3, 3.0)])
def test_grappa_on_noisy_data_amplifies_the_noise_little(raw, acceleration, limit):
    # every scanner readout has noise: the regularisation must keep GRAPPA from amplifying it (measured with noise
    # of 5 % of the k-space RMS, error against the noise-free image as a multiple of the fully sampled noisy
    # reconstruction's: 1.2 at R = 2 and 2.05 at R = 3 with the shipped 1e-4; without regularisation (1e-8) 1.7 and
    # 5.7, at 1e-3 1.9 and 3.3)
    rng = np.random.default_rng(0)
    noisy = copy.deepcopy(raw[1])
    rms = np.sqrt(np.mean([np.mean(np.abs(a.data) ** 2) for a in noisy]))
    for acquisition in noisy:
        noise = rng.standard_normal(acquisition.data.shape) + 1j * rng.standard_normal(acquisition.data.shape)
        acquisition.data[:] += (0.05 * rms / np.sqrt(2) * noise).astype(np.complex64)
    clean = pixels(raw[0], raw[1])
    fully_sampled_error = nrmse(pixels(raw[0], noisy), clean)
    grappa_error = nrmse(pixels(accelerated_header(raw, acceleration), undersample((raw[0], noisy), acceleration)),
                         clean)
    assert grappa_error < limit * fully_sampled_error, (grappa_error, fully_sampled_error)
