"""A simple Cartesian reconstruction, enough to replay raw data: per (slice, phase) fill k-space from the
acquisitions' encode step 1 (averages averaged, partial Fourier and asymmetric echoes zero-filled), inverse FFT,
root-sum-of-squares over coils, resample and crop from the encoded to the recon field of view and matrix (readout
and phase oversampling, phase resolution below 100 %). Noise, navigator, phase-correction and other non-imaging
acquisitions, and parallel-imaging calibration-only lines, are left out. Undersampled (parallel-imaging) data,
3-D encoding and several repetitions, contrasts or sets are refused with one line saying so."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ismrmrd
import ismrmrd.xsd
import numpy as np

from .image_series import ImageReadError

# Acquisitions that carry no imaging k-space lines. A calibration-only line is a parallel-imaging reference line
# (GRAPPA/SENSE ACS, often of another contrast or resolution), not part of the image; a line flagged
# ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING is both and is kept.
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
# Zero-filling a partial Fourier acquisition costs resolution; below 5/8 of the lines (or of the readout) the
# images are too blurred to stand in for the scanner's (scanners offer 5/8 to 7/8 and recover the rest by
# homodyne/POCS, which this reconstruction does not do).
MIN_PARTIAL_FOURIER_FRACTION = 5 / 8
WHAT_TO_DO = "reconstruct it on the scanner (or in Gadgetron) and replay the images"


def image_to_kspace(image: np.ndarray) -> np.ndarray:
    """Centred 2-D FFT over the last two axes (k-space centre at n // 2), orthonormal."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def kspace_to_image(kspace: np.ndarray) -> np.ndarray:
    """Inverse of :func:`image_to_kspace`."""
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def centre_crop(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The central ``rows`` x ``cols`` of the last two axes (the FFT centre n // 2 stays the centre)."""
    top, left = image.shape[-2] // 2 - rows // 2, image.shape[-1] // 2 - cols // 2
    return image[..., top : top + rows, left : left + cols]


def centre_pad(array: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``array`` zero-padded to ``rows`` x ``cols`` in its last two axes, its centre n // 2 on the new one's."""
    padded = np.zeros((*array.shape[:-2], rows, cols), dtype=array.dtype)
    top, left = rows // 2 - array.shape[-2] // 2, cols // 2 - array.shape[-1] // 2
    padded[..., top : top + array.shape[-2], left : left + array.shape[-1]] = array
    return padded


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
    return Encoding(encoded_x, encoded_y, recon_x, recon_y, recon_fov_mm, resampled_x, resampled_y, centre_line,
                    int(factor or 1))


def imaging_lines(acquisitions: Sequence[ismrmrd.Acquisition]) -> dict[tuple[int, int], list[ismrmrd.Acquisition]]:
    """The imaging acquisitions by (slice, phase), in order; refuses what they cannot make one image of."""
    lines: dict[tuple[int, int], list[ismrmrd.Acquisition]] = {}
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
        lines.setdefault((int(index.slice), int(index.phase)), []).append(acquisition)
    if not lines:
        raise ImageReadError("no imaging acquisitions to reconstruct (only noise, navigator, calibration or other "
                             "non-imaging data)")
    return lines


def readout_centre(encoding: Encoding, acquisition: ismrmrd.Acquisition) -> int:
    """The sample of the echo (k-space centre) in the readouts: a readout shorter than the encoded one is an
    asymmetric echo, placed by its ``center_sample`` (0: not set, taken as the middle)."""
    samples = acquisition.number_of_samples
    if samples < encoding.encoded_x:
        return int(acquisition.center_sample or samples // 2)
    return encoding.encoded_x // 2


def fill_kspace(encoding: Encoding, where: str, group: Sequence[ismrmrd.Acquisition]) -> tuple[np.ndarray, np.ndarray]:
    """(coils, encoded_y, encoded_x) k-space of one image, its averages averaged, unsampled points zero; and the
    indices of its sampled lines."""
    first = group[0]
    coils, samples = first.active_channels, first.number_of_samples
    left = encoding.encoded_x // 2 - readout_centre(encoding, first)
    line_shift = encoding.encoded_y // 2 - encoding.centre_line
    kspace = np.zeros((coils, encoding.encoded_y, encoding.encoded_x), dtype=np.complex128)
    counts = np.zeros(encoding.encoded_y, dtype=np.int64)
    seen: set[tuple[int, int]] = set()
    for acquisition in group:
        step, average = int(acquisition.idx.kspace_encode_step_1), int(acquisition.idx.average)
        line = step + line_shift
        same_readout = (acquisition.number_of_samples, acquisition.active_channels, acquisition.center_sample) == (
            samples, coils, first.center_sample)
        if not same_readout or not 0 <= left <= encoding.encoded_x - samples or not 0 <= line < encoding.encoded_y:
            raise ImageReadError(
                f"{where}: acquisition of line {step} with {acquisition.number_of_samples} samples (centre "
                f"{acquisition.center_sample}) and {acquisition.active_channels} coils does not fit the "
                f"{encoding.encoded_x}x{encoding.encoded_y} encoding (k-space centre line {encoding.centre_line}) "
                f"with the first line's {samples} samples (centre {first.center_sample}) and {coils} coils; "
                f"{WHAT_TO_DO}")
        if (line, average) in seen:
            raise ImageReadError(f"{where}: line {step} of average {average} was acquired more than once (repetitions "
                                 f"or sets not told apart in idx?); {WHAT_TO_DO}")
        seen.add((line, average))
        kspace[:, line, left : left + samples] += acquisition.data
        counts[line] += 1
    sampled = counts > 0
    kspace[:, sampled] /= counts[sampled, None]
    return kspace, np.flatnonzero(sampled)


def sampling_problem(encoding: Encoding, sampled_lines: np.ndarray, samples: int, centre_sample: int) -> str | None:
    """Why the sampled lines (indices into the encoded k-space) and readouts (``samples`` long, the echo at
    ``centre_sample``) are not fully sampled or partial Fourier that zero-filling can make an image of; None when
    they are."""
    missing = encoding.encoded_y - len(sampled_lines)
    contiguous = sampled_lines[-1] - sampled_lines[0] + 1 == len(sampled_lines)
    if not contiguous:  # gaps between sampled lines fold the image: only a parallel-imaging recon can fill them
        accelerated = f" (parallel imaging, acceleration {encoding.acceleration})" if encoding.acceleration > 1 else ""
        return (f"{missing} of {encoding.encoded_y} k-space lines are missing between sampled ones{accelerated}: only "
                "fully sampled Cartesian data or partial Fourier can be reconstructed here, no GRAPPA/SENSE")
    centre = encoding.encoded_y // 2
    first, last = int(sampled_lines[0]), int(sampled_lines[-1])
    if not first <= centre <= last:
        return f"the k-space centre line {encoding.centre_line} was not acquired"
    # partial Fourier is the share of the symmetric extent about the centre that was acquired: lines missing on
    # both sides alike are a phase resolution below 100 % (a scanner's FFT length includes them), not asymmetry
    if len(sampled_lines) < MIN_PARTIAL_FOURIER_FRACTION * 2 * max(centre - first, last - centre + 1):
        return (f"k-space lines {first}-{last} about the centre {centre} were acquired, less partial Fourier than "
                "5/8, which zero-filling cannot reconstruct well")
    if samples < MIN_PARTIAL_FOURIER_FRACTION * 2 * max(centre_sample, samples - centre_sample):
        return (f"readouts of {samples} samples about the echo at sample {centre_sample}, a more asymmetric echo "
                "than 5/8, which zero-filling cannot reconstruct well")
    return None


def reconstruct_cartesian(
    header: ismrmrd.xsd.ismrmrdHeader, acquisitions: Sequence[ismrmrd.Acquisition]
) -> list[ismrmrd.Image]:
    """Magnitude images (float32), one per (slice, phase), with the geometry of their acquisitions."""
    encoding = read_encoding(header)
    images = []
    pattern: tuple[str, np.ndarray] | None = None
    for index, ((slice_index, phase), group) in enumerate(sorted(imaging_lines(acquisitions).items())):
        where = f"slice {slice_index} phase {phase}"
        kspace, sampled_lines = fill_kspace(encoding, where, group)
        problem = sampling_problem(encoding, sampled_lines, group[0].number_of_samples,
                                   readout_centre(encoding, group[0]))
        if problem:
            raise ImageReadError(f"{where}: {problem}; {WHAT_TO_DO}")
        # partial Fourier is one pattern for the whole scan; a line lost in one image only is damaged data
        if pattern is None:
            pattern = (where, sampled_lines)
        elif not np.array_equal(sampled_lines, pattern[1]):
            differing = sorted(set(pattern[1].tolist()) ^ set(sampled_lines.tolist()))
            raise ImageReadError(f"{where}: k-space lines {differing[:5]} are sampled in {pattern[0]} or here but "
                                 f"not in both: lines lost in one image (damaged data); {WHAT_TO_DO}")
        resampled = centre_pad(centre_crop(kspace, min(encoding.encoded_y, encoding.resampled_y),
                                           min(encoding.encoded_x, encoding.resampled_x)),
                               encoding.resampled_y, encoding.resampled_x)
        # no rescaling: lines not acquired do not change the acquired ones, so the pixels keep the values a fully
        # sampled acquisition of the resampled matrix would give
        coil_images = centre_crop(kspace_to_image(resampled), encoding.recon_y, encoding.recon_x)
        magnitude = np.sqrt((np.abs(coil_images) ** 2).sum(axis=0)).astype(np.float32)
        image = ismrmrd.Image.from_array(
            magnitude,
            acquisition=group[0],
            image_type=ismrmrd.IMTYPE_MAGNITUDE,
            image_index=index + 1,
            image_series_index=1,
            field_of_view=encoding.recon_fov_mm,
        )
        image.average = 0  # the averages are combined in this one image
        images.append(image)
    return images
