"""NIfTI / DICOM series -> ISMRMRD: images with their geometry, or simulated raw Cartesian k-space.

The XML header says what the series is (protocolName ``CMR_LANDMARK_<VIEW>_<SEQUENCE>``) and how many slices
and phases to expect (encoding limits), which the gadget uses to release a slice's phases together.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np

from .config import MODEL_SEQUENCES, VIEWS
from .io import ImageReadError, ImageSeries
from .io.ismrmrd_file import write_ismrmrd_acquisitions, write_ismrmrd_images
from .io.kspace import image_to_kspace

H1_RESONANCE_FREQUENCY_HZ = 63_870_000  # 1.5 T
IMAGE_SERIES_INDEX = 1
IMAGE_GROUP = f"image_{IMAGE_SERIES_INDEX}"
READOUT_OVERSAMPLING = 2  # raw data are acquired with 2x readout oversampling, as scanners do
DEFAULT_COILS = 4
# Clinical receive arrays combine at most a few dozen channels, and the raw file grows by one oversampled k-space
# per coil and image (an ACDC cine with 1000 coils: 8.8 GB): more than this is a typo, not a coil.
MAX_COILS = 64
# Parallel imaging as a scanner's cine acquires it (Siemens iPAT, GRAPPA): one line in every R through the k-space
# centre and a block of consecutive reference lines about it, acquired within each image ("embedded" calibration).
DEFAULT_CALIBRATION_LINES = 24


def protocol_name(view: str, sequence: str) -> str:
    """``CMR_LANDMARK_SAX_CINE`` etc.: what the series is, in the header's protocolName."""
    if view not in VIEWS or sequence not in MODEL_SEQUENCES:
        raise ValueError(f"view must be one of {VIEWS} and sequence one of {MODEL_SEQUENCES}, got {view!r}, "
                         f"{sequence!r}")
    return f"CMR_LANDMARK_{view.upper()}_{sequence.upper()}"


def _space(matrix: tuple[int, int], fov_mm: tuple[float, float, float]) -> xsd.encodingSpaceType:
    return xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=matrix[0], y=matrix[1], z=1),
        fieldOfView_mm=xsd.fieldOfViewMm(x=fov_mm[0], y=fov_mm[1], z=fov_mm[2]),
    )


def build_header(series: ImageSeries, view: str, sequence: str, coils: int = 1, readout_oversampling: int = 1,
                 acceleration: int = 1) -> xsd.ismrmrdHeader:
    """An ISMRMRD XML header for ``series``: encoded/recon matrix and FOV, limits of slices and phases, and with
    ``acceleration`` > 1 the parallel imaging (embedded calibration) of :func:`series_to_acquisitions`."""
    rows, cols = series.images.shape[2:]
    fov = series.ismrmrd_plane(0).field_of_view_mm
    recon_fov = (float(fov[0]), float(fov[1]), float(fov[2]))
    encoded_fov = (recon_fov[0] * readout_oversampling, recon_fov[1], recon_fov[2])
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=rows - 1, center=rows // 2),
        kspace_encoding_step_2=xsd.limitType(minimum=0, maximum=0, center=0),
        slice=xsd.limitType(minimum=0, maximum=series.n_slices - 1, center=0),
        phase=xsd.limitType(minimum=0, maximum=series.n_phases - 1, center=0),
    )
    encoding = xsd.encodingType(
        encodedSpace=_space((cols * readout_oversampling, rows), encoded_fov),
        reconSpace=_space((cols, rows), recon_fov),
        encodingLimits=limits,
        trajectory=xsd.trajectoryType.CARTESIAN,
    )
    if acceleration > 1:
        encoding.parallelImaging = xsd.parallelImagingType(
            accelerationFactor=xsd.accelerationFactorType(kspace_encoding_step_1=acceleration,
                                                          kspace_encoding_step_2=1),
            calibrationMode=xsd.calibrationModeType.EMBEDDED,
        )
    return xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=H1_RESONANCE_FREQUENCY_HZ),
        encoding=[encoding],
        measurementInformation=xsd.measurementInformationType(
            patientPosition=xsd.patientPositionType.HFS,
            protocolName=protocol_name(view, sequence),
        ),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(receiverChannels=coils),
    )


def ismrmrd_pixels(images: np.ndarray) -> np.ndarray:
    """Pixels in a type ISMRMRD images carry: int16 / uint16 / float32 kept, other integers that fit int16 as
    int16, everything else float32."""
    if images.dtype in (np.int16, np.uint16, np.float32):
        return images
    if images.dtype.kind in "iu" and images.size and images.min() >= -(2**15) and images.max() < 2**15:
        return images.astype(np.int16)
    return images.astype(np.float32)


def series_to_images(series: ImageSeries) -> list[ismrmrd.Image]:
    """One ISMRMRD image per (slice, phase), slice-major, each with its slice's geometry (LPS)."""
    pixels = ismrmrd_pixels(series.images)
    images = []
    for slice_index in range(series.n_slices):
        plane = series.ismrmrd_plane(slice_index)
        for phase in range(series.n_phases):
            image = ismrmrd.Image.from_array(
                np.ascontiguousarray(pixels[slice_index, phase]),
                image_type=ismrmrd.IMTYPE_MAGNITUDE,
                image_series_index=IMAGE_SERIES_INDEX,
                image_index=slice_index * series.n_phases + phase + 1,
                slice=slice_index,
                phase=phase,
                field_of_view=tuple(float(v) for v in plane.field_of_view_mm),
                position=tuple(float(v) for v in plane.position),
                read_dir=tuple(float(v) for v in plane.read_dir),
                phase_dir=tuple(float(v) for v in plane.phase_dir),
                slice_dir=tuple(float(v) for v in plane.slice_dir),
            )
            images.append(image)
    return images


def coil_sensitivities(rows: int, cols: int, coils: int) -> np.ndarray:
    """(coils, rows, cols) smooth complex sensitivities of coils spaced around the image, normalised so their
    root-sum-of-squares is 1 everywhere (so a root-sum-of-squares recon gives back the image's magnitude exactly)."""
    y, x = np.mgrid[0:rows, 0:cols]
    y, x = (y - rows / 2) / rows, (x - cols / 2) / cols
    angles = 2 * np.pi * np.arange(coils) / coils
    maps = np.stack(
        [np.exp(-((x - 0.6 * np.cos(a)) ** 2 + (y - 0.6 * np.sin(a)) ** 2) / 0.5) * np.exp(1j * (a + 2 * x))
         for a in angles]
    )
    return (maps / np.sqrt((np.abs(maps) ** 2).sum(axis=0))).astype(np.complex64)


def acquired_line_flags(line: int, rows: int, acceleration: int, calibration_lines: int) -> tuple[int, ...] | None:
    """The parallel-imaging flags of k-space ``line`` (of ``rows``, centre rows // 2) when one in every
    ``acceleration`` lines is acquired with ``calibration_lines`` reference lines about the centre, as Siemens marks
    integrated reference lines; None where the line is skipped. Without acceleration every line, unflagged."""
    if acceleration == 1:
        return ()
    on_grid = (line - rows // 2) % acceleration == 0
    if 0 <= line - (rows // 2 - calibration_lines // 2) < calibration_lines:  # the block about the centre line
        return (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING,) if on_grid else (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION,)
    return () if on_grid else None


def series_to_acquisitions(series: ImageSeries, coils: int = DEFAULT_COILS, acceleration: int = 1,
                           calibration_lines: int = DEFAULT_CALIBRATION_LINES) -> Iterator[ismrmrd.Acquisition]:
    """Simulated raw data: each image padded to 2x readout oversampling, weighted by ``coils`` sensitivities,
    Fourier transformed; one acquisition per acquired ky line with its slice, phase and first/last flags (with
    ``acceleration`` > 1, the lines :func:`acquired_line_flags` keeps, with its flags). Made one image at a time
    as they are taken: a 32-coil cine is gigabytes."""
    rows, cols = series.images.shape[2:]
    padded_cols = cols * READOUT_OVERSAMPLING
    left = padded_cols // 2 - cols // 2  # keeps the image centre on the FFT centre (see recon.centre_crop)
    sensitivities = coil_sensitivities(rows, padded_cols, coils)
    counter = 0
    for slice_index in range(series.n_slices):
        plane = series.ismrmrd_plane(slice_index)
        for phase in range(series.n_phases):
            padded = np.zeros((rows, padded_cols), dtype=np.complex64)
            padded[:, left : left + cols] = series.images[slice_index, phase]
            kspace = image_to_kspace(sensitivities * padded).astype(np.complex64)
            acquired = {line: flags for line in range(rows)
                        if (flags := acquired_line_flags(line, rows, acceleration, calibration_lines)) is not None}
            first_line, last_line = min(acquired), max(acquired)
            for line, flags in acquired.items():
                acquisition = ismrmrd.Acquisition.from_array(
                    np.ascontiguousarray(kspace[:, line, :]),
                    scan_counter=counter,
                    center_sample=padded_cols // 2,
                    position=tuple(float(v) for v in plane.position),
                    read_dir=tuple(float(v) for v in plane.read_dir),
                    phase_dir=tuple(float(v) for v in plane.phase_dir),
                    slice_dir=tuple(float(v) for v in plane.slice_dir),
                )
                acquisition.idx.kspace_encode_step_1 = line
                acquisition.idx.slice = slice_index
                acquisition.idx.phase = phase
                for flag in flags:
                    acquisition.set_flag(flag)
                if line == first_line:
                    acquisition.set_flag(ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1)
                    acquisition.set_flag(ismrmrd.ACQ_FIRST_IN_SLICE)
                    acquisition.set_flag(ismrmrd.ACQ_FIRST_IN_PHASE)
                if line == last_line:
                    acquisition.set_flag(ismrmrd.ACQ_LAST_IN_ENCODE_STEP1)
                    acquisition.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
                    acquisition.set_flag(ismrmrd.ACQ_LAST_IN_PHASE)
                    if slice_index == series.n_slices - 1 and phase == series.n_phases - 1:
                        acquisition.set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
                yield acquisition
                counter += 1


def convert(series: ImageSeries, out_path: Path, view: str, sequence: str, kspace: bool = False,
            coils: int = DEFAULT_COILS, compress: bool = False, acceleration: int = 1,
            calibration_lines: int = DEFAULT_CALIBRATION_LINES) -> None:
    """Write ``series`` to ``out_path`` as ISMRMRD images (or, with ``kspace``, simulated raw acquisitions, whose
    reconstruction gives back the images' magnitude, undersampled by ``acceleration`` with ``calibration_lines``
    reference lines; ``compress`` applies to images only)."""
    if kspace:
        if not np.all(np.isfinite(series.images)):  # one NaN would spread over its whole k-space and image
            raise ImageReadError("images with NaN or infinite pixels cannot be turned into k-space (--kspace)")
        header = build_header(series, view, sequence, coils=coils, readout_oversampling=READOUT_OVERSAMPLING,
                              acceleration=acceleration)
        write_ismrmrd_acquisitions(out_path, header,
                                   series_to_acquisitions(series, coils, acceleration, calibration_lines))
    else:
        header = build_header(series, view, sequence)
        write_ismrmrd_images(out_path, header, {IMAGE_GROUP: series_to_images(series)}, compress=compress)
