"""Resampling to the network grids is a function of the scene in mm, not of how it was sampled into pixels."""

from __future__ import annotations

import numpy as np
import pytest

from cmr_landmark.config import COARSE_GRID
from cmr_landmark.preprocess import grid_transform, resample_stack, resample_to_grid, to_magnitude

FIELD_OF_VIEW_MM = 256.0
CENTRE_MM = 128.0


def blobs(rows_mm: np.ndarray, cols_mm: np.ndarray) -> np.ndarray:
    """Two small blobs (Gaussian sigma 4 mm, about an RV insertion wedge's size): their height on the 4 mm grid
    depends on how many mm the anti-aliasing filter blurs them by."""
    return sum(4.0 * np.exp(-((rows_mm - r0) ** 2 + (cols_mm - c0) ** 2) / (2 * 4.0**2))
               for r0, c0 in ((130.0, 110.0), (96.0, 150.0)))


def sampled_scene(pixel_spacing_mm: tuple[float, float], stripes: bool = False) -> np.ndarray:
    """The blobs sampled at (row, column) ``pixel_spacing_mm``; with ``stripes``, plus stripes of 4 mm period along
    both axes, which alias into the 4 mm grid unless the filter removes them."""
    r, c = np.meshgrid(np.arange(0.0, FIELD_OF_VIEW_MM, pixel_spacing_mm[0]),
                       np.arange(0.0, FIELD_OF_VIEW_MM, pixel_spacing_mm[1]), indexing="ij")
    scene = blobs(r, c)
    if stripes:
        scene = scene + np.cos(2 * np.pi * r / 4.0) + np.cos(2 * np.pi * c / 4.0)
    return scene.astype(np.float32)


def on_coarse_grid(image: np.ndarray, pixel_spacing_mm: tuple[float, float], rotation_rad: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``image`` on the coarse grid centred at (128, 128) mm: per image (ndimage) and through the stack path."""
    centre_rc = (CENTRE_MM / pixel_spacing_mm[0], CENTRE_MM / pixel_spacing_mm[1])
    transform = grid_transform(image.shape, pixel_spacing_mm, COARSE_GRID, centre_rc=centre_rc,
                               rotation_rad=rotation_rad)
    return resample_to_grid(image, transform), resample_stack(image[np.newaxis], [transform])[0]


@pytest.mark.parametrize("pixel_spacing_mm", [(1.0, 2.0), (2.0, 1.0)])
@pytest.mark.parametrize("rotation_rad", [0.0, 0.5])
def test_non_square_pixels_are_smoothed_by_the_same_mm_on_each_axis(pixel_spacing_mm, rotation_rad):
    # Each image axis gets the anti-aliasing sigma its own shrink asks for (0.4 grid pixel, in mm the same on both),
    # so a 1 x 2 mm sampling of the blobs lands on the grid as a 1 x 1 mm one does. One sigma for both axes, from
    # the axis that shrinks most, blurred the 2 mm axis twice as many mm: blob heights 0.4-0.55 lower (of 3.4).
    square_affine, square_stack = on_coarse_grid(sampled_scene((1.0, 1.0)), (1.0, 1.0), rotation_rad)
    affine, stack = on_coarse_grid(sampled_scene(pixel_spacing_mm), pixel_spacing_mm, rotation_rad)
    assert np.abs(affine - square_affine).max() < 0.1
    if rotation_rad == 0.0:  # the stack path takes axis-aligned transforms (inference) only
        np.testing.assert_allclose(stack, affine, atol=1e-5)
        assert np.abs(stack - square_stack).max() < 0.1


def test_stripes_finer_than_the_grid_are_filtered_away():
    # what the filter is for: unfiltered, every grid sample of the 4 mm stripes would read the same phase, a
    # uniform shift of 2; filtered, the blobs alone remain
    grid_image, _ = on_coarse_grid(sampled_scene((1.0, 1.0), stripes=True), (1.0, 1.0))
    grid_mm = (np.arange(COARSE_GRID.size_px) - (COARSE_GRID.size_px - 1) / 2) * COARSE_GRID.pixel_mm + CENTRE_MM
    r, c = np.meshgrid(grid_mm, grid_mm, indexing="ij")
    inside = (np.minimum(r, c) > 8.0) & (np.maximum(r, c) < FIELD_OF_VIEW_MM - 8.0)
    blobs_on_grid, _ = on_coarse_grid(sampled_scene((1.0, 1.0)), (1.0, 1.0))
    assert np.abs(grid_image - blobs_on_grid)[inside].max() < 0.2


@pytest.mark.parametrize("pixel_spacing_mm", [(1e-9, 1e-9), (1.5, 0.0), (1.5, float("nan")), (1.5, 500.0)])
def test_a_pixel_size_no_mr_image_has_is_refused_before_any_filtering(pixel_spacing_mm):
    # every path (gadget, detect, training) builds its grids here: 1e-9 mm would ask the filter for gigabytes
    with pytest.raises(ValueError, match="pixel spacing must be two numbers of mm"):
        grid_transform((64, 64), pixel_spacing_mm, COARSE_GRID)


def test_a_signed_real_image_becomes_the_same_magnitude_offline_and_in_the_gadget():
    # phase-sensitive inversion recovery (PSIR) writes signed real pixels; the models saw magnitude images
    import ismrmrd

    from cmr_landmark.gadget import magnitude_2d

    signed = np.array([[-300.0, 5.0], [120.0, -7.5]], dtype=np.float32)
    np.testing.assert_array_equal(to_magnitude(signed), np.abs(signed))
    np.testing.assert_array_equal(magnitude_2d(ismrmrd.Image.from_array(signed[None, None])), to_magnitude(signed))
    assert to_magnitude(np.array([-32768], dtype=np.int16))[0] == 32768.0  # no integer wrap-around
