"""A simple Cartesian reconstruction, enough to replay raw data: per (slice, phase) fill k-space from the
acquisitions' encode step 1, inverse FFT, root-sum-of-squares over coils, crop readout (and phase) oversampling
to the recon matrix. Fully sampled data only; no parallel imaging, partial Fourier or 3-D encoding."""

from __future__ import annotations

from collections.abc import Sequence

import ismrmrd
import ismrmrd.xsd
import numpy as np

from .image_series import ImageReadError

# Acquisitions that carry no imaging k-space lines.
NON_IMAGING_FLAGS = (
    ismrmrd.ACQ_IS_NOISE_MEASUREMENT,
    ismrmrd.ACQ_IS_NAVIGATION_DATA,
    ismrmrd.ACQ_IS_PHASECORR_DATA,
    ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
)


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


def reconstruct_cartesian(
    header: ismrmrd.xsd.ismrmrdHeader, acquisitions: Sequence[ismrmrd.Acquisition]
) -> list[ismrmrd.Image]:
    """Magnitude images (float32), one per (slice, phase), with the geometry of their acquisitions."""
    try:
        encoding = header.encoding[0]
        encoded = encoding.encodedSpace.matrixSize
        recon_matrix, recon_fov = encoding.reconSpace.matrixSize, encoding.reconSpace.fieldOfView_mm
        encoded_x, encoded_y = int(encoded.x), int(encoded.y)
        recon_x, recon_y = int(recon_matrix.x), int(recon_matrix.y)
    except (AttributeError, IndexError, TypeError) as error:
        raise ImageReadError(f"no encoding matrix/FOV to reconstruct with in the header ({error})") from error
    if int(encoded.z) != 1:
        raise ImageReadError(f"only 2-D Cartesian data can be reconstructed, the header encodes z = {encoded.z}")
    if recon_x > encoded_x or recon_y > encoded_y:
        raise ImageReadError(f"recon matrix {recon_x}x{recon_y} is larger than the encoded {encoded_x}x{encoded_y}")
    lines: dict[tuple[int, int], list[ismrmrd.Acquisition]] = {}
    for acquisition in acquisitions:
        if any(acquisition.is_flag_set(flag) for flag in NON_IMAGING_FLAGS):
            continue
        index = acquisition.idx
        if index.repetition or index.contrast or index.set or index.average:  # they would overwrite each other
            raise ImageReadError(
                f"only one repetition, contrast, set and average can be reconstructed; an acquisition has repetition "
                f"{index.repetition}, contrast {index.contrast}, set {index.set}, average {index.average}")
        lines.setdefault((int(acquisition.idx.slice), int(acquisition.idx.phase)), []).append(acquisition)
    if not lines:
        raise ImageReadError("no imaging acquisitions to reconstruct")
    images = []
    for index, ((slice_index, phase), group) in enumerate(sorted(lines.items())):
        coils = group[0].active_channels
        kspace = np.zeros((coils, encoded_y, encoded_x), dtype=np.complex64)
        for acquisition in group:
            step = int(acquisition.idx.kspace_encode_step_1)
            if acquisition.number_of_samples != encoded_x or acquisition.active_channels != coils or step >= encoded_y:
                raise ImageReadError(
                    f"slice {slice_index} phase {phase}: acquisition with {acquisition.number_of_samples} samples, "
                    f"{acquisition.active_channels} coils, line {step} does not fit the {encoded_x}x{encoded_y} "
                    f"encoding with {coils} coils"
                )
            kspace[:, step, :] = acquisition.data
        steps = [int(acquisition.idx.kspace_encode_step_1) for acquisition in group]
        if len(steps) != encoded_y or len(set(steps)) != encoded_y:
            raise ImageReadError(
                f"slice {slice_index} phase {phase}: {len(set(steps))} distinct of {encoded_y} k-space lines in "
                f"{len(steps)} acquisitions; only fully sampled Cartesian data, each line once, can be reconstructed")
        coil_images = centre_crop(kspace_to_image(kspace), recon_y, recon_x)
        magnitude = np.sqrt((np.abs(coil_images) ** 2).sum(axis=0)).astype(np.float32)
        first = group[0]
        image = ismrmrd.Image.from_array(
            magnitude,
            acquisition=first,
            image_type=ismrmrd.IMTYPE_MAGNITUDE,
            image_index=index + 1,
            image_series_index=1,
            field_of_view=(float(recon_fov.x), float(recon_fov.y), float(recon_fov.z)),
        )
        images.append(image)
    return images
