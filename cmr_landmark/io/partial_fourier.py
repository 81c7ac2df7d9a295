"""Partial Fourier and asymmetric echoes: what they leave out of k-space estimated by POCS (projection onto convex
sets; Haacke et al., J Magn Reson 92:126, 1991)."""

from __future__ import annotations

import numpy as np

from .kspace import image_to_kspace, kspace_to_image

# POCS partial Fourier (Haacke 1991), as the shipped chains' GenericReconPartialFourierHandlingPOCSGadget: the
# image phase from the symmetric centre of k-space, its window tapered over this many k-space points at each end
# (the chains' transition band is 24 points on a larger matrix) so that the phase map does not ring; iterations as
# the chains'.
POCS_TAPER_POINTS = 8
POCS_ITERATIONS = 6


def symmetric_window(length: int, first: int, last: int) -> np.ndarray | None:
    """A window over k-space points ``first``..``last`` of ``length`` (centre length // 2) that keeps the part
    symmetric about the centre, tapered at its ends; None where ``first``..``last`` is itself symmetric (no partial
    Fourier along this axis; an even extent has one point more below the centre than above)."""
    centre = length // 2
    half = min(centre - first, last - centre)
    if abs((centre - first) - (last - centre)) <= 1:
        return None
    distance = np.abs(np.arange(length) - centre)  # from the centre, in k-space points
    taper = min(POCS_TAPER_POINTS, half)
    ramp = np.clip((half + 1 - distance) / (taper + 1), 0.0, 1.0)  # 1 inside, falling to 0 past `half`
    return np.sin(ramp * np.pi / 2) ** 2


def pocs_partial_fourier(kspace: np.ndarray, lines: tuple[int, int], columns: slice) -> np.ndarray:
    """``kspace`` (coils, lines, samples), acquired over ``lines`` (first, last) x ``columns``, with what partial
    Fourier or an asymmetric echo left out estimated by POCS: each coil image takes the phase of its symmetric
    k-space centre, and its k-space outside the acquired part is filled from that, ``POCS_ITERATIONS`` times; the
    acquired part is kept as acquired."""
    rows, samples = kspace.shape[1:]
    row_window = symmetric_window(rows, *lines)
    column_window = symmetric_window(samples, columns.start, columns.stop - 1)
    if row_window is None and column_window is None:
        return kspace
    window = np.outer(np.ones(rows) if row_window is None else row_window,
                      np.ones(samples) if column_window is None else column_window)
    phase = np.exp(1j * np.angle(kspace_to_image(kspace * window)))
    acquired = np.zeros((rows, samples), dtype=bool)
    acquired[lines[0] : lines[1] + 1, columns] = True
    estimate = kspace
    for _ in range(POCS_ITERATIONS):
        estimate = image_to_kspace(np.abs(kspace_to_image(estimate)) * phase)
        estimate[:, acquired] = kspace[:, acquired]
    return estimate.astype(kspace.dtype)
