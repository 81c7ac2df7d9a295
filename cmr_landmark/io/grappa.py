"""GRAPPA (Griswold et al., Magn Reson Med 47:1202, 2002), along encode step 1 only: the acceleration R is the spacing
of the lines acquired outside the calibration block (one in every R from the first sampled line to the last). Each
missing line is a weighted sum over all coils of 5 readout points about its own on the 2 nearest acquired lines
above it and the 2 below (Gadgetron's default kernel size). The weights are fitted once per slice, by least squares
with Tikhonov regularisation, to fully sampled calibration lines averaged over the slice's phases: the lines flagged
ACQ_IS_PARALLEL_CALIBRATION (a separate reference scan, of any phase) or ..._CALIBRATION_AND_IMAGING, else the
images' densely sampled centre. Acquired lines are kept as acquired; the fewer than R lines the grid skips at a
k-space edge are filled, R or more (partial Fourier) are left to :mod:`.partial_fourier`. The reconstruction that
uses it, with what it refuses: :mod:`.recon`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# The GRAPPA kernel (Gadgetron's default size): the acquired lines it reads above and below the missing ones, and
# the readout points about the missing point's own on each.
GRAPPA_LINES_ABOVE, GRAPPA_LINES_BELOW = 2, 2
GRAPPA_KERNEL_LINES = GRAPPA_LINES_ABOVE + GRAPPA_LINES_BELOW
GRAPPA_KERNEL_SAMPLES = 5
# Tikhonov lambda relative to the trace of the calibration's normal matrix (the sum of its eigenvalues, about 5x
# the largest here; the trace costs nothing where an eigenvalue solver took 1 s a slice). Gadgetron adds 5e-4 of
# the trace divided by the number of unknowns (coils x kernel points), a weaker regularisation that falls with the
# coil count; on simulated 8- and 16-coil cine with noise, R = 2 and 3 erred least at 1e-4 of the whole trace
# (1e-5: noise amplified; 1e-3: folding left).
GRAPPA_REGULARISATION = 1e-4
# Places along encode step 1 at which the kernel must fit inside the calibration block (each one a whole readout
# of equations): fewer fit the noise of too few lines.
MIN_KERNEL_PLACEMENTS_Y = 5


@dataclass(frozen=True)
class LineSampling:
    """How an image's k-space lines are spaced: all from the first sampled one to the last (``acceleration`` 1),
    or the lines ``grid_offset`` + n * ``acceleration`` (besides a block of consecutive calibration lines)."""

    acceleration: int
    grid_offset: int


def min_calibration_lines(acceleration: int) -> int:
    """The consecutive calibration lines the GRAPPA kernel needs at ``acceleration``: its source lines span
    (GRAPPA_KERNEL_LINES - 1) * R + 1 lines, fitted at MIN_KERNEL_PLACEMENTS_Y places or more (3R + 5)."""
    return (GRAPPA_KERNEL_LINES - 1) * acceleration + MIN_KERNEL_PLACEMENTS_Y


def grappa_weights(calibration: np.ndarray, acceleration: int) -> np.ndarray:
    """GRAPPA weights fitted to fully sampled ``calibration`` k-space (coils, lines, samples): a
    (GRAPPA_KERNEL_SAMPLES * GRAPPA_KERNEL_LINES * coils, (acceleration - 1) * coils) matrix from a kernel's source
    points (by readout shift, line, coil) to the missing lines 1 .. acceleration - 1 below its acquired line above
    them (by line, coil)."""
    extent = (GRAPPA_KERNEL_LINES - 1) * acceleration + 1  # lines from the kernel's first source line to its last
    # every placement of the kernel in the calibration block: (coils, lines, samples, kernel lines, kernel samples)
    windows = sliding_window_view(calibration, (extent, GRAPPA_KERNEL_SAMPLES), axis=(1, 2))[..., ::acceleration, :]
    placements_y, placements_x = windows.shape[1:3]
    sources = windows.transpose(1, 2, 4, 3, 0).reshape(placements_y * placements_x, -1)
    above = (GRAPPA_LINES_ABOVE - 1) * acceleration  # the acquired line just above the missing ones, from the first
    centre_x = GRAPPA_KERNEL_SAMPLES // 2
    columns = slice(centre_x, centre_x + placements_x)
    targets = np.stack([calibration[:, above + offset : above + offset + placements_y, columns]
                        for offset in range(1, acceleration)])  # (offsets, coils, lines, samples)
    targets = targets.transpose(2, 3, 0, 1).reshape(placements_y * placements_x, -1)
    # the normal equations summed in the data's single precision (twice as fast; its error, 1e-7 of the trace, is
    # far below lambda) and solved in double by numpy (scipy's LAPACK runs a second OpenBLAS thread pool, which
    # beside numpy's ran 2x slower on 2 cores)
    sources_h = sources.conj().T
    gram, projected = (sources_h @ sources).astype(np.complex128), (sources_h @ targets).astype(np.complex128)
    gram[np.diag_indices_from(gram)] += GRAPPA_REGULARISATION * np.trace(gram).real
    return np.linalg.solve(gram, projected).astype(np.complex64)


def filled_lines(sampled_lines: np.ndarray, rows: int, sampling: LineSampling) -> tuple[int, int]:
    """The first and last k-space line an image has once parallel imaging's skipped lines are filled: its first and
    last sampled ones, or the k-space edge where the grid skipped fewer than R lines before it (partial Fourier
    leaves R or more)."""
    first = 0 if sampled_lines[0] < sampling.acceleration else int(sampled_lines[0])
    last = rows - 1 if rows - 1 - sampled_lines[-1] < sampling.acceleration else int(sampled_lines[-1])
    return first, last


def grappa_fill(kspace: np.ndarray, sampled_lines: np.ndarray, sampling: LineSampling, weights: np.ndarray,
                columns: slice) -> None:
    """Fills in place the lines of ``kspace`` (coils, lines, samples) that parallel imaging skipped, estimated from
    the acquired ones by ``weights`` (:func:`grappa_weights`) over the sampled readout ``columns``: those between its
    first and last sampled line, and the fewer than R the grid leaves at a k-space edge; acquired lines kept as
    acquired, partial Fourier edges (R lines or more) left zero."""
    coils, rows = kspace.shape[:2]
    lines_apart = sampling.acceleration
    first, last = filled_lines(sampled_lines, rows, sampling)
    missing = np.setdiff1d(np.arange(first, last + 1), sampled_lines)
    offsets = (missing - sampling.grid_offset) % lines_apart  # 1 .. acceleration - 1 below the acquired line above
    above = missing - offsets  # a grid line, one above the k-space edge (-R < above < 0) for the edge's first lines
    # zeros beyond the k-space edges and the readout, as at the partial Fourier edges: a missing line near an edge
    # may have kernel source points outside what was acquired (one grid step more above, for the edge's lines)
    margin_above, margin_below = GRAPPA_LINES_ABOVE * lines_apart, GRAPPA_LINES_BELOW * lines_apart
    margin_x = GRAPPA_KERNEL_SAMPLES // 2
    # (readout, lines, coils): the kernel's points one readout sample further along are then the next block in
    # memory, so each of its GRAPPA_KERNEL_SAMPLES shifts is one matrix product over a view of the same sources,
    # without copying every point that many times
    padded = np.pad(kspace[:, :, columns].transpose(2, 1, 0), ((margin_x, margin_x), (margin_above, margin_below),
                                                               (0, 0)))
    # in padded rows, the kernel's first source line: (GRAPPA_LINES_ABOVE - 1) grid steps above `above`
    kernel_tops = np.unique(above) + lines_apart
    # (readout, kernel placements, kernel lines x coils), contiguous (np.take; indexing would make it strided)
    sources = np.take(padded, kernel_tops[:, None] + lines_apart * np.arange(GRAPPA_KERNEL_LINES), axis=1).reshape(
        len(padded), len(kernel_tops), -1)
    per_shift = weights.reshape(GRAPPA_KERNEL_SAMPLES, GRAPPA_KERNEL_LINES * coils, -1)
    samples = len(padded) - 2 * margin_x
    estimates = sum(sources[shift : shift + samples].reshape(samples * len(kernel_tops), -1) @ per_shift[shift]
                    for shift in range(GRAPPA_KERNEL_SAMPLES))
    # each missing line's estimate from the kernel placed at its acquired line above: (samples, missing, coils)
    estimates = estimates.reshape(samples, len(kernel_tops), lines_apart - 1, coils)[
        :, np.searchsorted(kernel_tops, above + lines_apart), offsets - 1, :]
    kspace[:, missing, columns] = estimates.transpose(2, 1, 0)
