"""PNG overlays: the image is shown as its magnitude, windowed so that the heart is visible."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from cmr_landmark.overlay import save_landmark_overlay, save_phase_overlays


def grey_levels(path) -> int:
    """The number of grey levels in a picture without markers: 1 or a few for a uniform square."""
    return len(np.unique(matplotlib.image.imread(str(path))[..., :3]))


@pytest.mark.parametrize("kind", ["nan pixels", "complex"])
def test_the_picture_shows_the_image(kind, tmp_path):
    # a fitted T1 map's unfitted (NaN) pixels, or a complex image whose signal is in its imaginary part
    pixels = np.random.default_rng(0).uniform(200.0, 1500.0, (40, 40))
    if kind == "nan pixels":
        pixels[:4] = np.nan
    else:
        pixels = 1j * pixels
    path = save_landmark_overlay(pixels, {}, tmp_path / "overlay.png")
    assert grey_levels(path) > 50  # before: one black square (a NaN window; the imaginary part dropped)


def test_a_phase_grid_whose_points_all_lie_far_off_the_image_shows_the_whole_image(tmp_path):
    # the crop to the points plus 50 mm would be empty (before: a negative figure size, ValueError)
    images = [np.random.default_rng(phase).random((40, 40)) for phase in range(2)]
    path = save_phase_overlays(images, [{"APEX": (-200.0, 10.0)}] * 2, [{}] * 2, tmp_path / "phases.png")
    assert path.is_file()
