"""ISMRMRD image geometry on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cmr_landmark.geometry import (
    ORIENTATIONS,
    GeometryError,
    anterior_direction_in_image,
    model_display_orientation,
    orient_image,
    oriented_spacing_mm,
    pixel_spacing_mm,
    pixel_to_patient_mm,
    points_to_original,
    standard_short_axis_orientation,
    turn_deg,
)

# An axial-like plane: columns run to the patient's left (+x), rows to posterior (+y); 10 mm pixels, 10 x 8.
AXIAL = dict(position=(10.0, 20.0, 30.0), read_dir=(1, 0, 0), phase_dir=(0, 1, 0), field_of_view_mm=(100, 80, 8),
             matrix_size=(10, 8, 1))


def test_pixel_spacing_is_row_phase_then_col_read():
    assert pixel_spacing_mm((360.0, 270.0, 8.0), (192, 144, 1)) == (1.875, 1.875)
    # x (read, columns) 300 mm over 100 px = 3 mm; y (phase, rows) 200 mm over 50 px = 4 mm.
    assert pixel_spacing_mm((300.0, 200.0), (100, 50)) == (4.0, 3.0)


@pytest.mark.parametrize(
    "fov, matrix",
    [((0.0, 200.0), (100, 50)), ((np.nan, 200.0), (100, 50)), ((300.0, 200.0), (0, 50)), ((300.0,), (100,)),
     ((300.0, -1.0), (100, 50)), ((300.0, 200.0), (100.5, 50))],
)
def test_pixel_spacing_rejects_bad_geometry(fov, matrix):
    with pytest.raises(GeometryError):
        pixel_spacing_mm(fov, matrix)


def test_pixel_to_patient_hand_computed():
    # Pixel (0, 0) lies (8-1)/2 rows and (10-1)/2 columns of 10 mm before the centre.
    points = np.array([[0.0, 0.0], [3.5, 4.5], [1.0, 2.0]])
    patient = pixel_to_patient_mm(points, **AXIAL)
    np.testing.assert_allclose(patient, [[-35.0, -15.0, 30.0], [10.0, 20.0, 30.0], [-15.0, -5.0, 30.0]])


def test_pixel_to_patient_with_non_square_pixels_hand_computed():
    # x (read, columns): 300 mm over 100 px = 3 mm; y (phase, rows): 200 mm over 50 px = 4 mm. Rows step along
    # phase_dir (+y here) by the row size, columns along read_dir (+x) by the column size.
    geometry = dict(position=(10.0, 20.0, 30.0), read_dir=(1, 0, 0), phase_dir=(0, 1, 0),
                    field_of_view_mm=(300, 200, 8), matrix_size=(100, 50, 1))
    points = np.array([[0.0, 0.0], [24.5, 49.5], [25.5, 49.5], [24.5, 50.5], [10.0, 20.0]])
    patient = pixel_to_patient_mm(points, **geometry)
    np.testing.assert_allclose(patient, [
        [10.0 - 49.5 * 3.0, 20.0 - 24.5 * 4.0, 30.0],
        [10.0, 20.0, 30.0],               # the centre of the pixel grid is the position
        [10.0, 24.0, 30.0],               # one row further: 4 mm along phase_dir
        [13.0, 20.0, 30.0],               # one column further: 3 mm along read_dir
        [10.0 - 29.5 * 3.0, 20.0 - 14.5 * 4.0, 30.0]])


def test_oblique_plane():
    angle = np.deg2rad(30.0)
    geometry = dict(position=(-5.0, 12.0, 40.0), read_dir=(np.cos(angle), np.sin(angle), 0.0),
                    phase_dir=(0.0, 0.0, -1.0), field_of_view_mm=(256.0, 192.0), matrix_size=(128, 96))
    points = np.array([[0.0, 0.0], [47.5, 63.5], [10.25, 100.75], [95.0, 127.0]])
    patient = pixel_to_patient_mm(points, **geometry)
    # The centre of the pixel grid is the ISMRMRD position; one column step is 2 mm along read_dir.
    np.testing.assert_allclose(patient[1], geometry["position"], atol=1e-9)
    step = pixel_to_patient_mm(np.array([[47.5, 64.5]]), **geometry)[0] - patient[1]
    np.testing.assert_allclose(step, 2.0 * np.array(geometry["read_dir"]), atol=1e-9)


def test_nan_points_stay_nan():
    patient = pixel_to_patient_mm(np.array([[np.nan, np.nan]]), **AXIAL)
    assert np.all(np.isnan(patient))


@pytest.mark.parametrize(
    "read_dir, phase_dir",
    [((0, 0, 0), (0, 1, 0)), ((1, 0, 0), (0.7, 0.7, 0)), ((2, 0, 0), (0, 1, 0)), ((1, 0, np.nan), (0, 1, 0))],
)
def test_bad_direction_vectors_are_refused(read_dir, phase_dir):
    with pytest.raises(GeometryError):
        pixel_to_patient_mm(np.zeros((1, 2)), (0, 0, 0), read_dir, phase_dir, (100, 100), (10, 10))
    with pytest.raises(GeometryError):
        anterior_direction_in_image(read_dir, phase_dir)


def test_anterior_direction_hand_computed():
    # Rows run posterior: anterior is up (-row).
    np.testing.assert_allclose(anterior_direction_in_image((1, 0, 0), (0, 1, 0)), [-1.0, 0.0])
    # Columns run anterior (read_dir = -y): anterior is +col.
    np.testing.assert_allclose(anterior_direction_in_image((0, -1, 0), (0, 0, 1)), [0.0, 1.0])
    # A double-oblique short-axis-like plane: anterior has parts along both axes.
    read = np.array([0.6, -0.8, 0.0])
    phase = np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(anterior_direction_in_image(read, phase), [0.0, 1.0], atol=1e-12)
    phase = np.array([0.48, 0.36, 0.8])  # orthogonal to read, partly posterior
    expected = np.array([-0.36, 0.8]) / np.hypot(0.36, 0.8)
    np.testing.assert_allclose(anterior_direction_in_image(read, phase), expected)


def test_coronal_plane_has_no_anterior_direction():
    with pytest.raises(GeometryError, match="coronal"):
        anterior_direction_in_image((1, 0, 0), (0, 0, 1))


@pytest.mark.parametrize("turns", range(4))
@pytest.mark.parametrize("mirror", [False, True])
def test_points_found_in_a_turned_image_map_back_to_the_original_pixels(turns, mirror) -> None:
    image = np.zeros((7, 11))
    marks = np.array([[1, 2], [5, 9], [0, 10]])
    for value, (row, col) in enumerate(marks, start=1):
        image[row, col] = value
    turned = orient_image(image, turns, mirror)
    found = np.array([np.argwhere(turned == value)[0] for value in range(1, len(marks) + 1)], dtype=float)
    np.testing.assert_allclose(points_to_original(found, image.shape, turns, mirror), marks)
    # sub-pixel points follow the same affine map: the midpoint of two marks maps to their midpoint
    middle = points_to_original(found[:2].mean(axis=0, keepdims=True), image.shape, turns, mirror)
    np.testing.assert_allclose(middle[0], marks[:2].mean(axis=0))


@pytest.mark.parametrize(("turns", "mirror"), ORIENTATIONS)
def test_the_standard_short_axis_display_is_found_from_the_stored_images_directions(turns, mirror):
    # The standard display: columns run to the patient's left (+x), rows to posterior (+y): anterior up, the
    # patient's right on the viewer's left. Store it turned/mirrored and derive the stored image's directions.
    standard = np.arange(12.0).reshape(3, 4)
    stored = orient_image(standard, turns, mirror)
    read_std, phase_std = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    origin, next_col, next_row = points_to_original(np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
                                                    standard.shape, turns, mirror)
    read_dir = (next_col - origin) @ np.stack([phase_std, read_std])   # (d_row, d_col) in standard -> world
    phase_dir = (next_row - origin) @ np.stack([phase_std, read_std])
    found = standard_short_axis_orientation(read_dir, phase_dir)
    np.testing.assert_array_equal(orient_image(stored, *found), standard)


@pytest.mark.parametrize(("turns", "mirror"), ORIENTATIONS)
@pytest.mark.parametrize(("model_direction", "extra_turns"), [(None, 0), (109.5, 0), (124.9, 0), (194.4, 1),
                                                              (300.0, 2), (20.0, 3)])
def test_a_model_trained_at_another_rv_direction_is_shown_the_standard_display_turned_toward_it(
        turns, mirror, model_direction, extra_turns):
    # HEADER_DISPLAY_RV_DIRECTION_DEG (120) is where the RV lies in the standard display; sax_lge saw it at 194.4,
    # so it gets the standard display turned one more quarter counter-clockwise (np.rot90), whatever the storage.
    standard = np.arange(12.0).reshape(3, 4)
    stored = orient_image(standard, turns, mirror)
    read_std, phase_std = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    origin, next_col, next_row = points_to_original(np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
                                                    standard.shape, turns, mirror)
    read_dir = (next_col - origin) @ np.stack([phase_std, read_std])
    phase_dir = (next_row - origin) @ np.stack([phase_std, read_std])
    shown = model_display_orientation("sax", read_dir, phase_dir, model_direction)
    np.testing.assert_array_equal(orient_image(stored, *shown), np.rot90(standard, extra_turns))
    assert model_display_orientation("lax", read_dir, phase_dir, model_direction) == (0, False)


def test_a_coronal_plane_has_no_standard_short_axis_display():
    with pytest.raises(GeometryError):
        standard_short_axis_orientation((1.0, 0.0, 0.0), (0.0, 0.0, 1.0))


class RecordingDetector:
    """Finds one mark (the brightest pixel) as "C-LV", with a None landmark beside it, and records the spacing."""

    def __init__(self) -> None:
        self.spacings: list[tuple[float, float]] = []

    def detect(self, images, pixel_spacing_mm, **options):
        self.spacings.append(tuple(pixel_spacing_mm))
        from cmr_landmark.detector import Landmark

        found = []
        for image in images:
            row, col = np.unravel_index(np.argmax(image), image.shape)
            found.append({"C-LV": Landmark(float(row), float(col), 1.0), "A-RVI": None})
        return found


@pytest.mark.parametrize(("turns", "mirror"), ORIENTATIONS)
def test_detection_in_another_orientation_comes_back_in_the_images_own_pixels(turns, mirror):
    from cmr_landmark.detector import detect_in_orientation

    images = np.zeros((2, 7, 11))
    images[0, 1, 9] = images[1, 5, 2] = 1.0  # non-square, a different mark per phase
    detector = RecordingDetector()
    found = detect_in_orientation(detector, images, (2.0, 1.0), turns, mirror)
    assert [(f["C-LV"].row, f["C-LV"].col) for f in found] == [(1.0, 9.0), (5.0, 2.0)]
    assert all(f["A-RVI"] is None for f in found)
    # the model sees (row, col) spacing of the shown image: swapped by an odd quarter turn
    assert detector.spacings == [(1.0, 2.0) if turns % 2 else (2.0, 1.0)]


def test_an_odd_quarter_turn_swaps_the_row_and_column_spacing():
    assert oriented_spacing_mm((0.7, 1.4), 0) == (0.7, 1.4)
    assert oriented_spacing_mm((0.7, 1.4), 1) == (1.4, 0.7)
    assert oriented_spacing_mm((0.7, 1.4), 2) == (0.7, 1.4)
    assert oriented_spacing_mm((0.7, 1.4), 3) == (1.4, 0.7)


def test_turn_is_signed_and_wraps() -> None:
    assert turn_deg(350.0, 10.0) == -20.0 and turn_deg(10.0, 350.0) == 20.0
    assert turn_deg(190.0, 10.0) == -180.0  # opposite directions: the interval's closed end
    np.testing.assert_allclose(turn_deg(np.array([0.0, 725.0]), np.array([359.0, 0.0])), [1.0, 5.0])
