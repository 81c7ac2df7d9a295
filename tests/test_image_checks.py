"""The rules that refuse an image with nothing to find in (blank, or a segmentation given in its place), shared by
the gadget and ``detect``."""

from __future__ import annotations

import numpy as np
import pytest

from cmr_landmark.image_checks import LABEL_MAP_MAX_VALUES, label_map_reason, no_signal_reason


def noisy_image(rows: int = 64, cols: int = 64) -> np.ndarray:
    return np.random.default_rng(0).rayleigh(100.0, (rows, cols)).astype(np.float32)


@pytest.mark.parametrize(("image", "reason"), [
    (np.zeros((8, 8), np.float32), "no signal: every finite pixel has magnitude 0"),
    (np.full((8, 8), -32768, np.int16), "has magnitude 32768"),  # |int16 min| does not wrap to itself
    (np.full((8, 8), np.nan, np.float32), "no finite pixel"),
    (np.array([[np.nan, 1e300], [2.0, 2.0]]), "magnitude 2 (the others NaN, infinite or beyond float32's range)"),
    (np.full((8, 8), 3 - 4j, np.complex64), "has magnitude 5"),
])
def test_a_blank_image_is_named_with_its_reason(image, reason):
    assert reason in no_signal_reason(image)


def test_an_image_with_signal_passes_whatever_its_type():
    for image in (noisy_image(), noisy_image().astype(np.uint16), noisy_image() * np.exp(0.3j)):
        assert no_signal_reason(image) is None


def test_a_segmentation_is_told_from_an_image():
    codes = np.zeros((64, 64), np.uint8)
    codes[16:48, 16:48], codes[24:40, 24:40], codes[28:36, 28:36] = 1, 2, 3  # ACDC's codes
    assert label_map_reason(codes) == ("holds only the values 0, 1, 2, 3: a segmentation (label map), not an "
                                       "image")
    assert label_map_reason(np.stack([codes, codes * 2])) is not None  # a stack: all its values together
    assert label_map_reason(noisy_image()) is None
    assert label_map_reason(noisy_image().astype(np.uint16)) is None  # whole numbers, but hundreds of them
    assert label_map_reason(codes * 0.5) is None  # few values, not whole: a float phantom
    assert label_map_reason(np.zeros((64, 64))) is None  # one value is a blank image: no_signal_reason says so
    assert no_signal_reason(np.zeros((64, 64))) is not None
    assert label_map_reason(codes.astype(np.complex64)) is None


def test_the_label_map_rule_counts_every_pixel_and_stops_at_its_limits():
    many = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) % (LABEL_MAP_MAX_VALUES + 1)
    assert label_map_reason(many) is None  # one value more than a label map has
    assert label_map_reason(many % LABEL_MAP_MAX_VALUES) is not None
    sparse = np.zeros((256, 256), np.uint16)
    sparse[1::64, 3::64] = np.arange(16).reshape(4, 4)  # a few values that a strided sample misses
    assert label_map_reason(sparse) is None
    tiny = np.array([[10, 20], [30, 40]], np.uint16)  # too few pixels to tell a test pattern from a segmentation
    assert label_map_reason(tiny) is None
