"""Centred 2-D Fourier transforms between coil images and k-space, and centred crops and pads of their matrices
(the k-space centre, and the image centre, at n // 2 of each axis)."""

from __future__ import annotations

import numpy as np


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
