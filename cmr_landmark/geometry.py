"""ISMRMRD image geometry: pixel spacing, pixel <-> patient coordinates, and where anterior lies in an image.

The ISMRMRD convention (as written by Gadgetron and the MRD format documentation):

- image data is ``(channels, z, y, x)``; ``x`` (the column index) runs along ``read_dir``, ``y`` (the row index)
  along ``phase_dir``;
- ``matrix_size`` is ``(x, y, z)`` pixels and ``field_of_view`` is ``(x, y, z)`` mm, so a pixel is
  ``field_of_view / matrix_size`` mm;
- ``position`` is the centre of the image (of the excited volume), not the first pixel as DICOM's
  ImagePositionPatient is. Pixel centres are laid out symmetrically about it: pixel (row, col) is at
  ``position + (col - (nx - 1) / 2) * dx * read_dir + (row - (ny - 1) / 2) * dy * phase_dir``. So DICOM's
  ImagePositionPatient (centre of pixel (0, 0)) is ``position - (nx - 1) / 2 * dx * read_dir - (ny - 1) / 2 * dy
  * phase_dir``. (Gadgetron's own DICOM writer drops the half pixel and writes the image corner; that is half a
  pixel, well under the landmark accuracy, and we follow the MRD definition.)
- patient coordinates are LPS, in mm: +x towards the patient's left, +y posterior, +z superior (head).

Points are (row, col) pixels, as everywhere in this package.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .config import HEADER_DISPLAY_RV_DIRECTION_DEG

# Direction cosines travel as float32: allow their rounding, refuse anything that is not a direction.
UNIT_LENGTH_TOLERANCE = 1e-2
ORTHOGONALITY_TOLERANCE = 1e-2

# LPS: anterior is -y.
ANTERIOR_LPS = np.array([0.0, -1.0, 0.0])
PATIENT_RIGHT_LPS = np.array([-1.0, 0.0, 0.0])


class GeometryError(ValueError):
    """Image geometry that cannot be used: zero/NaN field of view or matrix, bad direction vectors."""


def _finite_vector(values: Sequence[float] | np.ndarray, length: int, what: str) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float64).reshape(-1)
    if vector.shape[0] < length:
        raise GeometryError(f"{what} needs {length} values, got {vector.shape[0]}: {vector.tolist()}")
    vector = vector[:length]
    if not np.all(np.isfinite(vector)):
        raise GeometryError(f"{what} is not finite: {vector.tolist()}")
    return vector


def distances_mm(predicted_rc: np.ndarray, true_rc: np.ndarray, pixel_spacing_mm: np.ndarray) -> np.ndarray:
    """Euclidean distance in mm of (..., 2) (row, col) points; ``pixel_spacing_mm`` broadcasts as (..., 2)."""
    return np.sqrt((((predicted_rc - true_rc) * pixel_spacing_mm) ** 2).sum(axis=-1))


def checked_pixel_spacing_mm(pixel_spacing_mm: Sequence[float]) -> np.ndarray:
    """(row_mm, col_mm) as an array; ValueError unless two finite positive numbers (a caller's error, not geometry
    the image lacks)."""
    spacing = np.asarray(pixel_spacing_mm, dtype=np.float64).reshape(-1)
    if spacing.shape != (2,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"pixel_spacing_mm must be two positive numbers (row_mm, col_mm), got {pixel_spacing_mm!r}")
    return spacing


def pixel_spacing_mm(field_of_view_mm: Sequence[float], matrix_size: Sequence[int]) -> tuple[float, float]:
    """(row_mm, col_mm) pixel size from ISMRMRD ``field_of_view`` (x, y[, z]) mm and ``matrix_size`` (x, y[, z]).

    Rows run along y (phase encoding), columns along x (readout): row_mm = fov_y / ny, col_mm = fov_x / nx.
    """
    fov = _finite_vector(field_of_view_mm, 2, "field_of_view_mm")
    matrix = _finite_vector(matrix_size, 2, "matrix_size")
    if np.any(fov <= 0):
        raise GeometryError(f"field of view must be positive in x and y, got {fov.tolist()} mm")
    if np.any(matrix < 1) or np.any(matrix != np.round(matrix)):
        raise GeometryError(f"matrix size must be positive whole pixels in x and y, got {matrix.tolist()}")
    return float(fov[1] / matrix[1]), float(fov[0] / matrix[0])


def image_axes(read_dir: Sequence[float], phase_dir: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validated unit (read, phase) direction vectors in patient LPS coordinates."""
    read = _finite_vector(read_dir, 3, "read_dir")
    phase = _finite_vector(phase_dir, 3, "phase_dir")
    for name, vector in (("read_dir", read), ("phase_dir", phase)):
        length = np.linalg.norm(vector)
        if abs(length - 1.0) > UNIT_LENGTH_TOLERANCE:
            raise GeometryError(f"{name} must be a unit direction vector, got {vector.tolist()} (length {length:.4g})")
    read, phase = read / np.linalg.norm(read), phase / np.linalg.norm(phase)
    if abs(float(read @ phase)) > ORTHOGONALITY_TOLERANCE:
        raise GeometryError(f"read_dir {read.tolist()} and phase_dir {phase.tolist()} are not orthogonal")
    return read, phase


def _plane(
    position: Sequence[float],
    read_dir: Sequence[float],
    phase_dir: Sequence[float],
    field_of_view_mm: Sequence[float],
    matrix_size: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient position of pixel (0, 0) and the patient step (mm) of one row and one column."""
    centre = _finite_vector(position, 3, "position")
    read, phase = image_axes(read_dir, phase_dir)
    row_mm, col_mm = pixel_spacing_mm(field_of_view_mm, matrix_size)
    nx, ny = (int(n) for n in _finite_vector(matrix_size, 2, "matrix_size"))
    row_step, col_step = row_mm * phase, col_mm * read
    origin = centre - (ny - 1) / 2.0 * row_step - (nx - 1) / 2.0 * col_step
    return origin, row_step, col_step


def pixel_to_patient_mm(
    points_rc: np.ndarray,
    position: Sequence[float],
    read_dir: Sequence[float],
    phase_dir: Sequence[float],
    field_of_view_mm: Sequence[float],
    matrix_size: Sequence[int],
) -> np.ndarray:
    """(N, 2) (row, col) pixel points -> (N, 3) patient LPS mm. NaN points stay NaN."""
    points = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
    origin, row_step, col_step = _plane(position, read_dir, phase_dir, field_of_view_mm, matrix_size)
    return origin + points[:, :1] * row_step + points[:, 1:] * col_step


def anterior_direction_in_image(
    read_dir: Sequence[float], phase_dir: Sequence[float], min_in_plane_fraction: float = 0.05
) -> np.ndarray:
    """Unit 2-vector (d_row, d_col): the direction, in the image, towards the patient's anterior (LPS -y).

    Used to tell the anterior RV insertion point from the posterior one. Raises :class:`GeometryError` when the
    image plane is (nearly) perpendicular to the anterior-posterior axis (a coronal plane), where "anterior" has
    no in-plane direction: less than ``min_in_plane_fraction`` of the anterior unit vector lies in the plane.
    """
    read, phase = image_axes(read_dir, phase_dir)
    # Columns advance along read_dir, rows along phase_dir: project anterior onto each.
    direction = np.array([ANTERIOR_LPS @ phase, ANTERIOR_LPS @ read])
    length = float(np.linalg.norm(direction))
    if length < min_in_plane_fraction:
        raise GeometryError(
            f"the image plane (read_dir {read.tolist()}, phase_dir {phase.tolist()}) is nearly coronal: "
            "the anterior direction does not lie in it"
        )
    return direction / length


# The 8 orientations an image can be stored in: quarter turns (np.rot90), each with and without a left-right mirror
ORIENTATIONS: tuple[tuple[int, bool], ...] = tuple((turns, mirror) for turns in range(4) for mirror in (False, True))


def orient_image(image: np.ndarray, quarter_turns: int, mirror: bool) -> np.ndarray:
    """``image`` turned by ``quarter_turns`` x 90 degrees (np.rot90), then mirrored left-right if ``mirror``."""
    turned = np.rot90(image, quarter_turns)
    return np.ascontiguousarray(turned[:, ::-1] if mirror else turned)


def oriented_spacing_mm(pixel_spacing_mm: tuple[float, float], quarter_turns: int) -> tuple[float, float]:
    """The (row, col) pixel spacing of ``orient_image(image, quarter_turns, mirror)``: an odd turn swaps the axes."""
    row_mm, col_mm = pixel_spacing_mm
    return (col_mm, row_mm) if quarter_turns % 2 else (row_mm, col_mm)


def points_to_original(points_rc: np.ndarray, original_shape: tuple[int, int], quarter_turns: int,
                       mirror: bool) -> np.ndarray:
    """(row, col) points found in ``orient_image(image, quarter_turns, mirror)``, in pixels of ``image`` itself."""
    points = np.array(points_rc, dtype=np.float64)
    rows, cols = original_shape
    if quarter_turns % 2:
        rows, cols = cols, rows  # the turned image's shape
    if mirror:
        points[:, 1] = cols - 1 - points[:, 1]
    for _ in range(quarter_turns % 4):
        # undo one np.rot90: its output (r, c) is input (c, W - 1 - r), W the input's width = the output's rows
        points = np.stack([points[:, 1], rows - 1 - points[:, 0]], axis=1)
        rows, cols = cols, rows
    return points


def standard_short_axis_orientation(read_dir: Sequence[float], phase_dir: Sequence[float]) -> tuple[int, bool]:
    """The (quarter_turns, mirror) of ``orient_image`` that shows a short-axis image in the standard display the
    models were trained on: the patient's anterior up and the patient's right on the viewer's left (so the RV on the
    viewer's left; docs/data.md). Of the 8 ORIENTATIONS, the one whose "up" and "left" lie nearest to those
    directions. A scanner writes the pixel matrix in its acquisition orientation (of 22 Kaggle short-axis DICOM
    frames, 15 have the anterior on the left), and the models lose the RV insertion points when it is turned far
    from that display (docs/gadget.md, "Orientation"). Raises :class:`GeometryError` when the plane holds no
    anterior direction (a coronal plane) or the directions are invalid."""
    anterior = anterior_direction_in_image(read_dir, phase_dir)
    read, phase = image_axes(read_dir, phase_dir)
    right = np.array([PATIENT_RIGHT_LPS @ phase, PATIENT_RIGHT_LPS @ read])

    def score(turns: int, mirror: bool) -> float:
        # where the shown image's "up" (row -1) and "left" (col -1) point in the stored image
        centre, up, left = points_to_original(np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]), (3, 3), turns, mirror)
        return float((up - centre) @ anterior + (left - centre) @ right)

    return max(ORIENTATIONS, key=lambda orientation: score(*orientation))


def shown_direction_deg(stored_direction_deg: float, quarter_turns: int, mirror: bool) -> float:
    """A direction in a stored image, as it points in ``geometry.orient_image(image, quarter_turns, mirror)``: each
    np.rot90 turns the picture 90 degrees counter-clockwise, and a left-right mirror takes an angle a to 180 - a."""
    turned = stored_direction_deg + 90.0 * quarter_turns
    return float((180.0 - turned if mirror else turned) % 360.0)


def displayed_angle_deg(vector_mm: Sequence[float] | np.ndarray) -> float:
    """The angle (degrees, -180 to 180) of a (row, col) vector in mm as the image is displayed, rows downwards:
    counter-clockwise from the viewer's right, so 90 is up. NaN for a NaN vector."""
    return float(np.degrees(np.arctan2(-vector_mm[0], vector_mm[1])))


def midpoint_direction_deg(points_rc: np.ndarray, pixel_spacing_mm: Sequence[float]) -> float:
    """The direction (degrees 0-360, as :func:`displayed_angle_deg`) from the third of three (row, col) pixel points
    to the midpoint of the first two, measured in mm; NaN when one is. The RV direction (A-RVI, P-RVI, C-LV) and the
    long axis (MV-1, MV-2, APEX) are both this."""
    points = np.asarray(points_rc, dtype=np.float64)
    return displayed_angle_deg(((points[0] + points[1]) / 2 - points[2]) * np.asarray(pixel_spacing_mm)) % 360.0


def circular_mean_deg(directions_deg: Sequence[float] | np.ndarray) -> float:
    """The circular mean (degrees 0-360) of directions in degrees: 350 and 10 average to 0, not 180."""
    radians = np.radians(np.asarray(directions_deg, dtype=np.float64))
    return float(np.degrees(np.arctan2(np.sin(radians).sum(), np.cos(radians).sum())) % 360.0)


def turn_deg(a: float | np.ndarray, b: float | np.ndarray) -> float | np.ndarray:
    """The signed turn (degrees, in [-180, 180)) from direction ``b`` to direction ``a``: 350 from 10 is -20, and
    opposite directions are -180."""
    return (np.asarray(a, dtype=np.float64) - b + 180.0) % 360.0 - 180.0


def angle_between_deg(a: float, b: float) -> float:
    """The smaller angle (0-180 degrees) between two directions."""
    return float(abs(turn_deg(a, b)))


def model_display_orientation(view: str, read_dir: Sequence[float], phase_dir: Sequence[float],
                              model_rv_direction_deg: float | None = None) -> tuple[int, bool]:
    """How to turn a slice's pixel matrix into the display its model was trained on. A short-axis slice: the
    standard display (:func:`standard_short_axis_orientation`), then, for a model that records where it saw the RV
    most (``model_rv_direction_deg``, manifest ``display_rv_direction_deg``), the quarter turn that brings
    ``config.HEADER_DISPLAY_RV_DIRECTION_DEG`` nearest it: `sax_lge` was trained on sets whose display puts the RV
    a quarter turn from where the standard display does (docs/orientation.md). A long-axis slice (its model was
    trained at every orientation) or a plane without an anterior direction: as written."""
    if view != "sax":
        return (0, False)
    try:
        turns, mirror = standard_short_axis_orientation(read_dir, phase_dir)
    except GeometryError:
        return (0, False)
    if model_rv_direction_deg is None:
        return turns, mirror
    extra = min(range(4), key=lambda quarter_turns: angle_between_deg(
        HEADER_DISPLAY_RV_DIRECTION_DEG + 90.0 * quarter_turns, model_rv_direction_deg))
    # np.rot90 after a mirror turns the other way: mirror . rot(t) then rot(e) is mirror . rot(t - e)
    return ((turns - extra) % 4, True) if mirror else ((turns + extra) % 4, False)
