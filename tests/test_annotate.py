"""Crosses burnt into a copy of the pixels, in the image's dtype and range."""

from __future__ import annotations

import numpy as np
import pytest
from mrd_stream_helpers import sax_plane_image

from cmr_landmark.annotate import dashed_segment_pixels, draw_crosses
from cmr_landmark.detector import Landmark
from cmr_landmark.gadget_parameters import GadgetParameters
from cmr_landmark.mrd_connection import ReceivedImage
from cmr_landmark.output_images import SliceResult, annotated_image


def test_cross_is_drawn_at_image_maximum_with_mm_sized_arms():
    image = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) % 700
    annotated = draw_crosses(image, [(20.0, 25.2)], (2.0, 1.0), cross_size_mm=8.0)
    assert annotated.dtype == np.uint16
    changed = np.argwhere(annotated != image)
    peak = image.max()
    # Arms of 4 mm each way: 2 rows of 2 mm up and down, 4 columns of 1 mm left and right, centred on (20, 25).
    assert np.all(annotated[18:23, 25] == peak)
    assert np.all(annotated[20, 21:30] == peak)
    # inside a one-pixel outline at the image's darkest value, which nothing else of the image changes beyond
    assert np.all(annotated[[19, 21], 20:31][:, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]] == image.min())
    assert np.all(annotated[17:24, [24, 26]][[0, 1, 2, 4, 5, 6]] == image.min())
    assert annotated[17, 25] == annotated[23, 25] == annotated[20, 20] == annotated[20, 30] == image.min()
    assert changed[:, 0].min() >= 17 and changed[:, 0].max() <= 23
    assert changed[:, 1].min() >= 20 and changed[:, 1].max() <= 30
    # The original is untouched.
    assert image[20, 25] != peak


def test_a_cross_in_bright_blood_stays_visible_at_a_narrow_window():
    # the LV centre sits in blood brighter than the window a reader sets for the myocardium: white on white there,
    # so the dark outline must frame the cross wherever it lies
    image = np.full((32, 32), 300, dtype=np.uint16)
    image[8:24, 8:24] = 1200  # the blood pool
    image[0, 0] = 1250
    annotated = draw_crosses(image, [(16, 16)], (1.0, 1.0), 8.0)
    window_max = 800
    shown = np.minimum(annotated, window_max)
    assert np.all(shown[16, 12:21] == window_max)  # the cross itself is lost in the white
    assert np.all(shown[[15, 17], 11:22][:, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]] == 300)  # its outline is not
    assert np.all(shown[[15, 17], 11:22][:, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]] < window_max)


def test_close_crosses_keep_their_bright_arms():
    image = np.zeros((20, 20), dtype=np.float32)
    image[0, 0] = 1.0
    annotated = draw_crosses(image, [(10, 8), (10, 10)], (1.0, 1.0), 4.0)  # arms overlapping
    assert np.all(annotated[10, 6:13] == 1.0)
    assert np.all(annotated[8:13, 8] == 1.0) and np.all(annotated[8:13, 10] == 1.0)


def test_missing_points_are_skipped_and_crosses_clip_at_edges():
    image = np.zeros((1, 1, 16, 16), dtype=np.float32)
    image[..., 3, 3] = 5.0
    annotated = draw_crosses(image, [None, (np.nan, 3.0), (0.0, 15.0), (-30.0, -30.0)], (1.0, 1.0), 6.0)
    assert annotated.shape == image.shape
    assert np.all(annotated[0, 0, 0, 12:16] == 5.0)
    assert np.all(annotated[0, 0, 0:4, 15] == 5.0)
    # Only the clipped cross at the corner was drawn (plus the original bright pixel).
    assert np.count_nonzero(annotated) == 4 + 3 + 1


def test_blank_and_complex_images_get_visible_crosses():
    blank = np.zeros((8, 8), dtype=np.int16)
    assert draw_crosses(blank, [(4, 4)], (1, 1), 2.0)[4, 4] == np.iinfo(np.int16).max
    complex_image = np.full((8, 8), 3 + 4j, dtype=np.complex64)
    complex_image[0, 0] = 0
    annotated = draw_crosses(complex_image, [(4, 4)], (1, 1), 2.0)
    assert annotated.dtype == np.complex64 and annotated[4, 4] == 5.0


def test_a_fitted_maps_nan_and_infinite_pixels_do_not_blank_the_crosses():
    # a T1 map in ms with a few unfitted pixels: the cross takes the largest real T1, not NaN or Inf
    t1_map = np.full((16, 16), 1000.0, dtype=np.float32)
    t1_map[2, 2], t1_map[3, 3], t1_map[5, 5] = np.nan, np.inf, 1600.0
    annotated = draw_crosses(t1_map, [(10, 10)], (1.0, 1.0), 4.0)
    assert annotated[10, 10] == 1600.0 and np.all(annotated[10, 8:13] == 1600.0)


@pytest.mark.parametrize("spacing, size", [((0.0, 1.0), 8.0), ((1.0, 1.0), -1.0), ((1.0,), 8.0)])
def test_bad_arguments_are_refused(spacing, size):
    with pytest.raises(ValueError):
        draw_crosses(np.zeros((8, 8)), [(4, 4)], spacing, size)


@pytest.mark.parametrize("value, dtype", [(5.0, np.float32), (-5.0, np.float64), (0.0, np.float32),
                                          (255, np.uint8), (7, np.int16)])
def test_a_cross_on_a_uniform_image_differs_from_it(value, dtype):
    uniform = np.full((8, 8), value, dtype=dtype)
    annotated = draw_crosses(uniform, [(4, 4)], (1, 1), 2.0)
    assert annotated.dtype == uniform.dtype and annotated[4, 4] != uniform[4, 4]


@pytest.mark.parametrize("start, end", [((10.0, 5.0), (10.0, 40.0)), ((10.0, 6.0), (10.0, 41.0)),
                                        ((10.3, 5.3), (10.3, 40.3)), ((0.0, 0.0), (35.0, 35.0))])
def test_a_dashed_segment_is_two_pixels_on_four_off_wherever_it_starts(start, end):
    pixels = dashed_segment_pixels(start, end)
    steps = pixels[:, 1] - pixels[0, 1]  # one pixel per step along the longer axis (columns, or the diagonal's)
    assert np.array_equal(pixels[0], np.rint(start)) and steps.tolist() == [0, 1, 6, 7, 12, 13, 18, 19, 24, 25, 30, 31]
    assert dashed_segment_pixels((3.0, 3.0), (3.0, 3.0)).tolist() == [[3, 3]]  # a point: one pixel


def test_between_the_dashes_the_anatomy_under_the_line_stays_in_view():
    image = np.full((20, 40), 100.0)
    image[0, 0], image[19, 39] = 0.0, 500.0
    row = draw_crosses(image, [], (1.0, 1.0), 4.0, segments_rc=[((10.0, 5.0), (10.0, 30.0))])[10, 5:31]
    # each dash white inside black, then two of the image's own pixels: the outline does not close the gap
    assert row[:8].tolist() == [500, 500, 0, 100, 100, 0, 500, 500]


def test_a_line_running_off_the_image_is_clipped_not_wrapped():
    image = np.full((20, 20), 100.0)
    image[5, 5], image[6, 6] = 0.0, 500.0
    annotated = draw_crosses(image, [], (1.0, 1.0), 4.0, segments_rc=[((-10.0, -10.0), (3.0, 3.0))])
    changed = np.argwhere(annotated != image)
    assert changed.size and changed.max() <= 4  # nothing near the far edges, where negative indices would land


def test_a_complex_images_outline_is_zero_whatever_its_values():
    # viewers show a complex image's magnitude: the darkest is 0, not the most negative real part
    image = np.full((12, 12), 3 + 4j, dtype=np.complex64)
    image[0, 0] = -5 + 0j
    annotated = draw_crosses(image, [(6, 6)], (1.0, 1.0), 4.0)
    assert annotated[5, 5] == 0 and abs(annotated[6, 6]) == 5.0


def test_the_lv_length_line_is_drawn_with_an_outline_and_skipped_when_not_finite():
    image = np.full((40, 40), 100.0, dtype=np.float32)
    image[0, 0], image[39, 39] = 0.0, 500.0
    annotated = draw_crosses(image, [], (1.0, 1.0), 4.0, segments_rc=[((5.0, 20.0), (35.0, 20.0))])
    bright = np.argwhere(annotated == 500.0)
    assert set(bright[:, 1]) - {39} == {20} and len(bright) > 10  # on the line (and the image's own peak)
    assert annotated[5, 19] == annotated[5, 21] == 0.0  # its outline
    assert np.array_equal(draw_crosses(image, [], (1.0, 1.0), 4.0, segments_rc=[((np.nan, 1.0), (3.0, 4.0))]), image)


def test_an_estimated_point_is_an_x_not_a_plus():
    image = np.zeros((30, 30), dtype=np.float32)
    image[0, 0] = 1.0
    annotated = draw_crosses(image, [], (1.0, 1.0), 8.0, estimated_rc=[(15, 15)])
    assert all(annotated[15 + k, 15 + k] == 1.0 and annotated[15 + k, 15 - k] == 1.0 for k in range(-4, 5))
    assert annotated[15, 19] == annotated[19, 15] == 0.0  # where a '+' would reach


def test_a_filled_cine_point_is_drawn_as_an_x_on_its_copy():
    # the technologist's only way to tell a point this phase showed from one borrowed from its neighbours
    pixels = np.full((64, 64), 100.0, dtype=np.float32)
    pixels[0, 0] = 900.0
    received = ReceivedImage(raw=b"", image=sax_plane_image(pixels, series_index=3))
    landmarks = {"MV-1": Landmark(20.0, 20.0, 0.9), "MV-2": Landmark(20.0, 44.0, 0.1),
                 "APEX": Landmark(52.0, 32.0, 0.9)}
    result = SliceResult("m", "lax", "cine", (1.0, 1.0), [landmarks], [{}],
                         filled=[{"MV-1": False, "MV-2": True, "APEX": False}])
    copy = annotated_image(received, result, 0, GadgetParameters()).data[0, 0]
    assert copy[20, 23] == 900.0 and copy[23, 20] == 900.0  # MV-1: '+'
    assert copy[23, 47] == 900.0 and copy[20, 47] != 900.0  # MV-2: 'x'
