"""A simple Cartesian reconstruction, enough to replay raw data: per (slice, phase) fill k-space from the acquisitions'
encode step 1 (averages averaged), fill the lines parallel imaging skipped by GRAPPA, estimate what partial Fourier
and asymmetric echoes left out by POCS, inverse FFT, root-sum-of-squares over coils, resample and crop from the
encoded to the recon field of view and matrix (readout and phase oversampling, phase resolution below 100 %). Noise,
navigator, phase-correction and other non-imaging acquisitions are left out, and so are readouts of exact zeros
beside measured ones (lines a converter wrote for lines not acquired); parallel-imaging calibration-only lines only
fit the GRAPPA kernel, except that under the header's calibration mode "embedded" (Siemens' integrated reference
lines) they also replace GRAPPA's estimates of those lines in the image of their own slice and phase.

The steps of their own: GRAPPA in :mod:`.grappa`, POCS in :mod:`.partial_fourier`, the FFTs in :mod:`.kspace`.

Time-interleaved sampling (TGRAPPA: the grid of lines moves by one from phase to phase) is unfolded with a kernel
fitted to the phases' lines together. Refused with one line saying so: lines missing irregularly (not one in every
R), undersampled single-coil data, calibration blocks too short for the kernel, 3-D encoding and several
repetitions, contrasts or sets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import ismrmrd
import ismrmrd.xsd
import numpy as np

from .grappa import (
    GRAPPA_KERNEL_LINES,
    MIN_KERNEL_PLACEMENTS_Y,
    LineSampling,
    filled_lines,
    grappa_fill,
    grappa_weights,
    min_calibration_lines,
)
from .image_series import ImageReadError
from .kspace import centre_crop, centre_pad, kspace_to_image
from .partial_fourier import pocs_partial_fourier

# Acquisitions that carry no imaging k-space lines. A calibration-only line is a parallel-imaging reference line
# (GRAPPA/SENSE ACS, often of another contrast), not part of the image but used to fit the GRAPPA kernel (and, in
# an "embedded" calibration mode, put in its own image where GRAPPA would estimate it); a line flagged
# ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING is both.
NON_IMAGING_FLAGS = (
    ismrmrd.ACQ_IS_NOISE_MEASUREMENT,
    ismrmrd.ACQ_IS_NAVIGATION_DATA,
    ismrmrd.ACQ_IS_PHASECORR_DATA,
    ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
    ismrmrd.ACQ_IS_RTFEEDBACK_DATA,
    ismrmrd.ACQ_IS_HPFEEDBACK_DATA,
    ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA,
    ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE,
    ismrmrd.ACQ_IS_PHASE_STABILIZATION,
    ismrmrd.ACQ_IS_PARALLEL_CALIBRATION,
)
CALIBRATION_FLAGS = (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
# Partial Fourier below 5/8 of the lines (or of the readout) leaves too little beyond the symmetric centre for the
# images to stand in for the scanner's (scanners offer 5/8 to 7/8).
MIN_PARTIAL_FOURIER_FRACTION = 5 / 8
WHAT_TO_DO = "reconstruct it on the scanner (or in Gadgetron) and replay the images"


@dataclass(frozen=True)
class Encoding:
    """What the header says about the k-space to fill and the image to make of it."""

    encoded_x: int
    encoded_y: int
    recon_x: int
    recon_y: int
    recon_fov_mm: tuple[float, float, float]  # the images' field of view: the recon matrix times its pixel size
    # the k-space matrix the encoded one is zero-padded (or cropped) to so that its pixels have the recon pixel size
    resampled_x: int
    resampled_y: int
    centre_line: int  # the encode step 1 of the k-space centre (encodingLimits), lands on encoded_y // 2
    acceleration: int  # the header's parallel-imaging factor along encode step 1 (1: none)
    # the header's calibration mode is "embedded": calibration-only lines were acquired within the image of their
    # slice and phase (Siemens' integrated reference lines; siemens_to_ismrmrd writes "separate" for a reference
    # scan), in its contrast, so they are measured lines of that image
    embedded_calibration: bool


def _resampled(recon: int, encoded: int, recon_fov_mm: float, encoded_fov_mm: float) -> int:
    # an encoded FOV twice the recon FOV is 2x oversampling (crop the image); the same FOV with fewer encoded than
    # recon pixels is a phase resolution below 100 % (zero-pad k-space). Without both FOVs, the matrices alone: a
    # larger encoded one is oversampling (crop), a smaller one a lower resolution (pad to the recon matrix).
    if recon_fov_mm > 0 and encoded_fov_mm > 0:
        return max(round(recon * encoded_fov_mm / recon_fov_mm), 1)
    return max(encoded, recon)


def _image_fov_mm(recon_fov_mm: float, encoded_fov_mm: float, recon: int, resampled: int) -> float:
    if recon_fov_mm > 0 and encoded_fov_mm > 0:
        return encoded_fov_mm * recon / resampled
    return recon_fov_mm


def read_encoding(header: ismrmrd.xsd.ismrmrdHeader) -> Encoding:
    """The first encoding's matrices, FOVs, k-space centre and acceleration; refuses 3-D and non-Cartesian."""
    try:
        encoding = header.encoding[0]
        encoded, encoded_fov = encoding.encodedSpace.matrixSize, encoding.encodedSpace.fieldOfView_mm
        recon, recon_fov = encoding.reconSpace.matrixSize, encoding.reconSpace.fieldOfView_mm
        encoded_x, encoded_y, encoded_z = int(encoded.x), int(encoded.y), int(encoded.z or 1)
        recon_x, recon_y = int(recon.x), int(recon.y)
        header_recon_fov_mm = (float(recon_fov.x), float(recon_fov.y), float(recon_fov.z))
        resampled_x = _resampled(recon_x, encoded_x, header_recon_fov_mm[0], float(encoded_fov.x))
        resampled_y = _resampled(recon_y, encoded_y, header_recon_fov_mm[1], float(encoded_fov.y))
        # the pixel size is the encoded FOV over the resampled matrix, a whole number: the recon FOV the header
        # gives may differ from the images' by that rounding (0.1 mm at 60 mm for 33 % phase oversampling)
        recon_fov_mm = (_image_fov_mm(header_recon_fov_mm[0], float(encoded_fov.x), recon_x, resampled_x),
                        _image_fov_mm(header_recon_fov_mm[1], float(encoded_fov.y), recon_y, resampled_y),
                        header_recon_fov_mm[2])
    except (AttributeError, IndexError, TypeError, ValueError) as error:
        raise ImageReadError(f"no encoding matrix/FOV to reconstruct with in the header ({error})") from error
    trajectory = getattr(encoding.trajectory, "value", encoding.trajectory)
    description = getattr(encoding, "trajectoryDescription", None)
    identifier = str(getattr(description, "identifier", "") or "")
    if "epi" in identifier.lower():  # Siemens converters write EPI as a Cartesian trajectory with this description
        raise ImageReadError(f"the header describes an EPI readout ({identifier}), which needs phase correction "
                             f"this reconstruction does not do; {WHAT_TO_DO}")
    if trajectory not in (None, "cartesian"):
        raise ImageReadError(f"the header's trajectory is {trajectory}: only Cartesian raw data can be "
                             f"reconstructed here; {WHAT_TO_DO}")
    if encoded_z != 1:
        raise ImageReadError(f"3-D encoded raw data (the header encodes z = {encoded_z}) cannot be reconstructed "
                             f"here, only 2-D (multi-slice) Cartesian data; {WHAT_TO_DO}")
    if min(encoded_x, encoded_y, recon_x, recon_y) < 1:
        raise ImageReadError(f"the header's encoded {encoded_x}x{encoded_y} or recon {recon_x}x{recon_y} matrix is "
                             "empty")
    if resampled_x < recon_x or resampled_y < recon_y:
        raise ImageReadError(f"the recon field of view {recon_fov_mm[0]:g}x{recon_fov_mm[1]:g} mm is larger than "
                             f"the encoded {float(encoded_fov.x):g}x{float(encoded_fov.y):g} mm")
    limits = encoding.encodingLimits
    step_1 = limits.kspace_encoding_step_1 if limits is not None else None
    # a centre of 0 is a limit some converters leave unset (encode steps put the k-space centre mid-range, whatever
    # the order the lines were acquired in): the middle of the encoded lines, as for a missing one
    centre_line = int(step_1.center) if step_1 is not None and step_1.center else encoded_y // 2
    parallel = encoding.parallelImaging
    factor = parallel.accelerationFactor.kspace_encoding_step_1 if parallel is not None else None
    mode = parallel.calibrationMode if parallel is not None else None
    return Encoding(encoded_x, encoded_y, recon_x, recon_y, recon_fov_mm, resampled_x, resampled_y, centre_line,
                    int(factor or 1), getattr(mode, "value", mode) == "embedded")


def measured(acquisition: ismrmrd.Acquisition) -> bool:
    """Whether ``acquisition`` holds a measured readout: converters that write the whole k-space matrix (from an
    array, say) put readouts of exact zeros where parallel imaging or partial Fourier skipped a line, and a measured
    one always has noise. Taken as lines, they would leave the skipped lines zero, the image folded."""
    return bool(acquisition.data.any())


def without_zero_readouts(group: list[ismrmrd.Acquisition]) -> list[ismrmrd.Acquisition]:
    """One image's acquisitions without its readouts of exact zeros (:func:`measured`); an image of nothing but
    zeros keeps them all, so that it comes out as the blank image it is (which the gadget reports as one) instead
    of vanishing from its slice."""
    return [acquisition for acquisition in group if measured(acquisition)] or group


def imaging_lines(acquisitions: Sequence[ismrmrd.Acquisition]) -> dict[int, list[ismrmrd.Acquisition]]:
    """One slice's imaging acquisitions by phase, in order; refuses what they cannot make one image of."""
    lines: dict[int, list[ismrmrd.Acquisition]] = {}
    for acquisition in acquisitions:
        if any(acquisition.is_flag_set(flag) for flag in NON_IMAGING_FLAGS):
            continue
        if acquisition.is_flag_set(ismrmrd.ACQ_IS_REVERSE):  # EPI: needs flipping and ghost correction
            raise ImageReadError(f"an imaging acquisition is flagged ACQ_IS_REVERSE (a readout played backwards, as "
                                 f"in EPI), which this reconstruction does not correct; {WHAT_TO_DO}")
        index = acquisition.idx
        if index.kspace_encode_step_2:
            raise ImageReadError(f"an acquisition has kspace_encode_step_2 = {index.kspace_encode_step_2}: 3-D "
                                 f"encoded raw data cannot be reconstructed here; {WHAT_TO_DO}")
        if index.repetition or index.contrast or index.set:  # several images per (slice, phase): not one series
            raise ImageReadError(
                f"only one repetition, contrast and set can be reconstructed; an acquisition has repetition "
                f"{index.repetition}, contrast {index.contrast}, set {index.set}; {WHAT_TO_DO}")
        lines.setdefault(int(index.phase), []).append(acquisition)
    return {phase: without_zero_readouts(group) for phase, group in lines.items()}


def calibration_lines(acquisitions: Sequence[ismrmrd.Acquisition]) -> list[ismrmrd.Acquisition]:
    """One slice's acquisitions flagged as parallel-imaging calibration (reference-only or also imaging), all
    phases together: a separate reference scan is acquired once per slice, and one kernel serves its phases."""
    return [acquisition for acquisition in acquisitions
            if any(acquisition.is_flag_set(flag) for flag in CALIBRATION_FLAGS) and measured(acquisition)]


def readout_centre(encoding: Encoding, acquisition: ismrmrd.Acquisition) -> int:
    """The sample of the echo (k-space centre) in the readouts: a readout shorter than the encoded one is an
    asymmetric echo, placed by its ``center_sample`` (0: not set, taken as the middle)."""
    samples = acquisition.number_of_samples
    if samples < encoding.encoded_x:
        return int(acquisition.center_sample or samples // 2)
    return encoding.encoded_x // 2


def readout_span(encoding: Encoding, acquisition: ismrmrd.Acquisition) -> slice:
    """The columns of the encoded k-space that ``acquisition``'s readout fills."""
    left = encoding.encoded_x // 2 - readout_centre(encoding, acquisition)
    return slice(left, left + acquisition.number_of_samples)


def fill_kspace(encoding: Encoding, where: str, group: Sequence[ismrmrd.Acquisition]) -> tuple[np.ndarray, np.ndarray]:
    """(coils, encoded_y, encoded_x) k-space of one image, its averages (and the phases in ``group``) averaged,
    unsampled points zero; and the indices of its sampled lines."""
    first = group[0]
    coils, samples = first.active_channels, first.number_of_samples
    columns = readout_span(encoding, first)
    line_shift = encoding.encoded_y // 2 - encoding.centre_line
    # the acquisitions' own precision: a 25-phase, 16-coil slice stays in memory for its GRAPPA kernel
    kspace = np.zeros((coils, encoding.encoded_y, encoding.encoded_x), dtype=np.complex64)
    counts = np.zeros(encoding.encoded_y, dtype=np.int64)
    seen: set[tuple[int, int, int]] = set()
    for acquisition in group:
        step, average = int(acquisition.idx.kspace_encode_step_1), int(acquisition.idx.average)
        line = step + line_shift
        same_readout = (acquisition.number_of_samples, acquisition.active_channels, acquisition.center_sample) == (
            samples, coils, first.center_sample)
        fits = 0 <= columns.start <= encoding.encoded_x - samples and 0 <= line < encoding.encoded_y
        if not same_readout or not fits:
            raise ImageReadError(
                f"{where}: acquisition of line {step} with {acquisition.number_of_samples} samples (centre "
                f"{acquisition.center_sample}) and {acquisition.active_channels} coils does not fit the "
                f"{encoding.encoded_x}x{encoding.encoded_y} encoding (k-space centre line {encoding.centre_line}) "
                f"with the first line's {samples} samples (centre {first.center_sample}) and {coils} coils; "
                f"{WHAT_TO_DO}")
        key = (line, average, int(acquisition.idx.phase))
        if key in seen:
            raise ImageReadError(f"{where}: line {step} of average {average} was acquired more than once (repetitions "
                                 f"or sets not told apart in idx?); {WHAT_TO_DO}")
        seen.add(key)
        kspace[:, line, columns] += acquisition.data
        counts[line] += 1
    sampled = counts > 0
    kspace[:, sampled] /= counts[sampled, None]
    return kspace, np.flatnonzero(sampled)


def longest_run(lines: np.ndarray) -> np.ndarray:
    """The longest run of consecutive numbers in sorted ``lines`` (the first of equally long ones)."""
    breaks = np.flatnonzero(np.diff(lines) != 1) + 1
    runs = np.split(lines, breaks)
    return max(runs, key=len)


def line_sampling(encoding: Encoding, sampled_lines: np.ndarray, readout: ismrmrd.Acquisition) -> LineSampling:
    """How the sampled lines (indices into the encoded k-space) are spaced. Refuses (ImageReadError with the bare
    reason) what GRAPPA and POCS cannot make an image of: lines missing irregularly, undersampled
    single-coil data, partial Fourier below 5/8, an echo (of ``readout``) more asymmetric than 5/8."""
    first, last = int(sampled_lines[0]), int(sampled_lines[-1])
    block = longest_run(sampled_lines)  # the calibration lines of embedded (integrated) ACS, if any
    outer = np.setdiff1d(sampled_lines, block)
    acceleration, grid_offset = 1, 0
    if outer.size:
        spacings = np.bincount(np.diff(sampled_lines))
        spacings[1] -= len(block) - 1  # the block's lines are consecutive whatever the acceleration
        acceleration = int(spacings.argmax())  # the spacing of most lines outside the block
        grid_offset = int(outer[0] % acceleration)
        grid = np.arange(first + (grid_offset - first) % acceleration, last + 1, acceleration)
        breaks = np.setxor1d(np.union1d(grid, block), sampled_lines)
        if breaks.size:
            pattern = "every line" if acceleration == 1 else f"one line in every {acceleration} (parallel imaging)"
            raise ImageReadError(
                f"k-space lines {breaks[:5].tolist()}{'...' if breaks.size > 5 else ''} break the pattern of "
                f"{pattern} from the first sampled line to the last: lines missing irregularly (lost?)")
        if encoding.acceleration == 1 and acceleration > 1 and outer.size < GRAPPA_KERNEL_LINES:
            # a header without parallel imaging and a few lines outside one dense block: lines lost at its ends
            lost = np.setdiff1d(np.arange(first, last + 1), sampled_lines)
            raise ImageReadError(f"k-space lines {lost[:5].tolist()}{'...' if lost.size > 5 else ''} are missing "
                                 "from fully sampled data (the header describes no parallel imaging): lines lost?")
        if encoding.acceleration > 1 and acceleration != encoding.acceleration:
            raise ImageReadError(f"one k-space line in every {acceleration} was acquired, but the header's "
                                 f"parallel-imaging acceleration is {encoding.acceleration}")
        if readout.active_channels == 1:
            raise ImageReadError(f"one k-space line in every {acceleration} was acquired (parallel imaging) with one "
                                 "coil: GRAPPA needs several coils to fill the lines between")
    centre = encoding.encoded_y // 2
    if not first <= centre <= last:
        raise ImageReadError(f"the k-space centre line {encoding.centre_line} was not acquired")
    # partial Fourier is the share of the symmetric extent about the centre that was acquired (GRAPPA fills all
    # lines from the first to the last): lines missing on both sides alike are a phase resolution below 100 % (a
    # scanner's FFT length includes them), not asymmetry
    if last - first + 1 < MIN_PARTIAL_FOURIER_FRACTION * 2 * max(centre - first, last - centre + 1):
        raise ImageReadError(f"k-space lines {first}-{last} about the centre {centre} were acquired, less partial "
                             "Fourier than 5/8, too little to reconstruct well")
    samples, centre_sample = readout.number_of_samples, readout_centre(encoding, readout)
    if samples < MIN_PARTIAL_FOURIER_FRACTION * 2 * max(centre_sample, samples - centre_sample):
        raise ImageReadError(f"readouts of {samples} samples about the echo at sample {centre_sample}, a more "
                             "asymmetric echo than 5/8, too little to reconstruct well")
    return LineSampling(acceleration, grid_offset)


def slice_calibration(encoding: Encoding, where: str, flagged: Sequence[ismrmrd.Acquisition],
                      kspaces: Sequence[np.ndarray], sampled_lines: Sequence[np.ndarray],
                      readout: ismrmrd.Acquisition) -> np.ndarray:
    """The fully sampled k-space (coils, lines, samples) to fit a slice's GRAPPA kernel to, averaged over its
    phases (a kernel holds for any object seen by the same coils, so for their mean too): the longest block of
    consecutive lines flagged for calibration (``flagged``) where there are any, else of the lines the images
    sampled (``sampled_lines``, one array per image), each line averaged over the images that sampled it: a densely
    sampled centre, or under time-interleaved sampling (TGRAPPA: the grid moves by a line from phase to phase) the
    phases together. Over the sampled readout."""
    if flagged:
        kspace, lines = fill_kspace(encoding, f"{where} calibration", flagged)
        return kspace[:, longest_run(lines), readout_span(encoding, flagged[0])]
    columns = readout_span(encoding, readout)
    total = np.zeros_like(kspaces[0][:, :, columns])
    counts = np.zeros(total.shape[1], dtype=np.int64)
    for kspace, lines in zip(kspaces, sampled_lines, strict=True):
        total[:, lines] += kspace[:, lines, columns]
        counts[lines] += 1
    block = longest_run(np.flatnonzero(counts))
    # divided in the data's single precision: the kernel's normal equations are summed in it too (grappa_weights)
    return total[:, block] / counts[block, None].astype(total.real.dtype)


def slice_grappa_weights(encoding: Encoding, where: str, flagged: Sequence[ismrmrd.Acquisition],
                         kspaces: Sequence[np.ndarray], sampled_lines: Sequence[np.ndarray],
                         readout: ismrmrd.Acquisition, acceleration: int) -> np.ndarray:
    """The GRAPPA weights of one slice (:func:`grappa_weights`) from its calibration (:func:`slice_calibration`);
    refuses calibration data too few to fit them or from other coils."""
    calibration = slice_calibration(encoding, where, flagged, kspaces, sampled_lines, readout)
    coils, lines = calibration.shape[:2]
    needed = min_calibration_lines(acceleration)
    if coils != kspaces[0].shape[0]:
        raise ImageReadError(f"{where}: the calibration lines have {coils} coils, the image lines "
                             f"{kspaces[0].shape[0]}; {WHAT_TO_DO}")
    if lines < needed:
        if flagged:
            source = ""
        elif any(not np.array_equal(image_lines, sampled_lines[0]) for image_lines in sampled_lines):
            source = (f" (the lines of its {len(sampled_lines)} phases together: time-interleaved sampling needs as "
                      "many phases as the acceleration, or more)")
        else:
            source = " (none flagged for calibration: the images' densely sampled centre)"
        raise ImageReadError(
            f"{where}: parallel imaging (acceleration {acceleration}) with {lines} consecutive calibration "
            f"line{'' if lines == 1 else 's'}{source}, too few to fit the GRAPPA kernel: it needs {needed} (its "
            f"{GRAPPA_KERNEL_LINES} source lines span {needed - MIN_KERNEL_PLACEMENTS_Y + 1}, fitted at "
            f"{MIN_KERNEL_PLACEMENTS_Y} or more places); {WHAT_TO_DO}")
    return grappa_weights(calibration, acceleration)


def put_measured_lines(encoding: Encoding, where: str, kspace: np.ndarray, sampled_lines: np.ndarray,
                       references: Sequence[ismrmrd.Acquisition]) -> None:
    """Puts into ``kspace`` (GRAPPA-filled), in place, the lines that ``references``, the image's own reference-only
    lines of an embedded calibration, measured instead of GRAPPA's estimates of them: measured lines err less (at
    R = 3 a 24-line block halved the error of a simulated cine)."""
    reference, lines = fill_kspace(encoding, f"{where} calibration", references)
    estimated = np.setdiff1d(lines, sampled_lines)
    kspace[:, estimated] = reference[:, estimated]


def magnitude_image(encoding: Encoding, kspace: np.ndarray, acquisition: ismrmrd.Acquisition,
                    image_index: int) -> ismrmrd.Image:
    """The root-sum-of-squares magnitude (float32) of ``kspace`` resampled to the recon field of view and matrix,
    with the geometry of ``acquisition``."""
    resampled = centre_pad(centre_crop(kspace, min(encoding.encoded_y, encoding.resampled_y),
                                       min(encoding.encoded_x, encoding.resampled_x)),
                           encoding.resampled_y, encoding.resampled_x)
    # no rescaling: lines not acquired do not change the acquired ones, so the pixels keep the values a fully
    # sampled acquisition of the resampled matrix would give
    coil_images = centre_crop(kspace_to_image(resampled), encoding.recon_y, encoding.recon_x)
    magnitude = np.sqrt((np.abs(coil_images) ** 2).sum(axis=0)).astype(np.float32)
    image = ismrmrd.Image.from_array(
        magnitude,
        acquisition=acquisition,
        image_type=ismrmrd.IMTYPE_MAGNITUDE,
        image_index=image_index,
        image_series_index=1,
        field_of_view=encoding.recon_fov_mm,
    )
    image.average = 0  # the averages are combined in this one image
    return image


def calibration_block(sampled_lines: np.ndarray) -> np.ndarray:
    """The image's block of consecutive lines (embedded calibration lines), empty where no two are consecutive."""
    block = longest_run(sampled_lines)
    return block if len(block) > 1 else block[:0]


@dataclass(frozen=True)
class FirstImageSampling:
    """Where the series' first image is and how its k-space lines were sampled: every image must be sampled alike,
    or time-interleaved, on a grid moved by whole lines."""

    where: str
    lines: np.ndarray
    sampling: LineSampling


def check_same_lines(first: FirstImageSampling, where: str, sampled_lines: np.ndarray,
                     sampling: LineSampling) -> None:
    """Refuses an image whose sampled lines differ from the ``first`` image's other than by time-interleaving:
    partial Fourier and parallel imaging are one pattern for the whole scan, so a line lost in one image only is
    damaged data. The same pattern on a grid moved by whole lines (the same acceleration, and the extent and
    calibration block within a grid step of the first image's) is time-interleaved sampling (TGRAPPA), which is unfolded
    (:func:`slice_calibration`)."""
    first_where, first_lines, first_sampling = first.where, first.lines, first.sampling
    if np.array_equal(sampled_lines, first_lines):
        return
    steps = sampling.acceleration

    def within_a_step(lines: np.ndarray, other: np.ndarray) -> bool:  # the same span on a grid moved by < R lines
        return len(lines) == len(other) == 0 or (len(lines) > 0 and len(other) > 0 and abs(
            int(lines[0]) - int(other[0])) < steps and abs(int(lines[-1]) - int(other[-1])) < steps)

    if (steps == first_sampling.acceleration > 1 and sampling.grid_offset != first_sampling.grid_offset
            and within_a_step(sampled_lines, first_lines)
            and within_a_step(calibration_block(sampled_lines), calibration_block(first_lines))):
        return
    differing = sorted(set(first_lines.tolist()) ^ set(sampled_lines.tolist()))
    raise ImageReadError(f"{where}: k-space lines {differing[:5]} are sampled in {first_where} or here but not in "
                         f"both: lines lost in one image (damaged data); {WHAT_TO_DO}")


def unfold_kspaces(encoding: Encoding, slice_index: int, groups: Sequence[Sequence[ismrmrd.Acquisition]],
                   kspaces: Sequence[np.ndarray], sampled_lines: Sequence[np.ndarray],
                   samplings: Sequence[LineSampling], calibration: Sequence[ismrmrd.Acquisition]) -> None:
    """Fills in place the k-spaces of one slice's images (its phases' acquisition ``groups``, each sampled on its
    ``sampled_lines`` as its ``samplings`` say): the lines parallel imaging skipped by one GRAPPA kernel fitted to
    the slice's ``calibration`` lines (:func:`slice_calibration`), and, under an embedded calibration, each image's
    own reference-only lines as measured. In place because the slice's k-spaces of all phases are in memory
    together (the kernel is fitted to their mean), and a copy of each would double that."""
    if samplings[0].acceleration == 1:
        return
    weights = slice_grappa_weights(encoding, f"slice {slice_index}", calibration, kspaces, sampled_lines,
                                   groups[0][0], samplings[0].acceleration)
    reference_only = [acquisition for acquisition in calibration
                      if acquisition.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)]
    for group, kspace, lines, sampling in zip(groups, kspaces, sampled_lines, samplings, strict=True):
        grappa_fill(kspace, lines, sampling, weights, readout_span(encoding, group[0]))
        phase = group[0].idx.phase
        own = [acquisition for acquisition in reference_only if acquisition.idx.phase == phase]
        if encoding.embedded_calibration and own:
            put_measured_lines(encoding, f"slice {slice_index} phase {phase}", kspace, lines, own)


def reconstruct_cartesian(
    header: ismrmrd.xsd.ismrmrdHeader, acquisitions: Iterable[ismrmrd.Acquisition]
) -> list[ismrmrd.Image]:
    """Magnitude images (float32), one per (slice, phase), with the geometry of their acquisitions, from
    acquisitions held in memory (:func:`reconstruct_slices` takes them one slice at a time)."""
    by_slice: dict[int, list[ismrmrd.Acquisition]] = {}
    for acquisition in acquisitions:
        by_slice.setdefault(int(acquisition.idx.slice), []).append(acquisition)
    return reconstruct_slices(header, sorted(by_slice.items()))


def reconstruct_slices(
    header: ismrmrd.xsd.ismrmrdHeader, slices: Iterable[tuple[int, Sequence[ismrmrd.Acquisition]]]
) -> list[ismrmrd.Image]:
    """Magnitude images (float32), one per (slice, phase), with the geometry of their acquisitions, from ``slices``:
    (slice index, that slice's acquisitions in the order acquired), by increasing index. Nothing here needs more
    than one slice's acquisitions at a time, so a reader can hand them over as it reads them (a 32-coil cine is
    gigabytes). A refusal comes when the slice that shows it is reached."""
    encoding = read_encoding(header)
    images: list[ismrmrd.Image] = []
    first: FirstImageSampling | None = None
    for slice_index, acquisitions in slices:
        slice_images, first = reconstruct_slice(encoding, slice_index, acquisitions, first, len(images) + 1)
        images += slice_images
        del acquisitions  # this slice's readouts are freed before the reader reads the next slice's
    if not images:
        raise ImageReadError("no imaging acquisitions to reconstruct (only noise, navigator, calibration or other "
                             "non-imaging data)")
    return images


def reconstruct_slice(
    encoding: Encoding, slice_index: int, acquisitions: Sequence[ismrmrd.Acquisition],
    first: FirstImageSampling | None, first_image_index: int,
) -> tuple[list[ismrmrd.Image], FirstImageSampling | None]:
    """One slice's images, numbered from ``first_image_index``, and the series' first image's sampling (``first``,
    or this slice's first image's where there was none yet), which every image must share (:func:`check_same_lines`).
    A slice index that only non-imaging data carries (a noise scan's, say) has no images."""
    groups = [group for _, group in sorted(imaging_lines(acquisitions).items())]
    if not groups:
        return [], first
    kspaces, sampled, samplings = [], [], []
    for group in groups:
        where = f"slice {slice_index} phase {group[0].idx.phase}"
        kspace, sampled_lines = fill_kspace(encoding, where, group)
        try:
            sampling = line_sampling(encoding, sampled_lines, group[0])
        except ImageReadError as problem:
            raise ImageReadError(f"{where}: {problem}; {WHAT_TO_DO}") from None
        first = first or FirstImageSampling(where, sampled_lines, sampling)
        check_same_lines(first, where, sampled_lines, sampling)
        kspaces.append(kspace)
        sampled.append(sampled_lines)
        samplings.append(sampling)
    unfold_kspaces(encoding, slice_index, groups, kspaces, sampled, samplings, calibration_lines(acquisitions))
    images = []
    for group, kspace, sampled_lines, sampling in zip(groups, kspaces, sampled, samplings, strict=True):
        lines = filled_lines(sampled_lines, encoding.encoded_y, sampling)
        kspace = pocs_partial_fourier(kspace, lines, readout_span(encoding, group[0]))
        images.append(magnitude_image(encoding, kspace, group[0], first_image_index + len(images)))
    return images, first
