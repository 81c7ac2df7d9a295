"""The one structure every reader returns: a stack of 2-D images (slices x phases) with per-slice geometry.

Geometry is kept as the world position of the centre of pixel (0, 0) of each slice and the world step (mm) of one
row and of one column, which is all any of the three formats carries for a 2-D image plane:

    world_mm = origin_mm[slice] + row * row_step_mm[slice] + col * col_step_mm[slice]

The world frame is the one the file uses (``frame``): a NIfTI affine maps to RAS+ (x towards the patient's
right, y anterior, z superior), DICOM and ISMRMRD use patient LPS (x left, y posterior, z superior).
:meth:`ImageSeries.patient_geometry_lps` converts to LPS for writing ISMRMRD headers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import PLAUSIBLE_PIXEL_MM
from ..geometry import pixel_to_patient_mm

# NIfTI (RAS+) and DICOM/ISMRMRD (LPS) differ by the sign of x and y.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
FRAMES = ("RAS", "LPS")
VOXEL_ORDERS = ("row_col", "col_row")
# File name endings (lower case) read as NIfTI and as ISMRMRD; any other file, and a folder, is read as DICOM.
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ISMRMRD_SUFFIXES = (".h5", ".hdf5", ".mrd")


class ImageReadError(ValueError):
    """An input that cannot be read as an image series: unknown format, damaged file, inconsistent images."""


@dataclass(frozen=True)
class SliceGeometry:
    """World position (mm) of the centre of pixel (0, 0) and the world step (mm) of one row and one column."""

    origin_mm: np.ndarray  # (3,)
    row_step_mm: np.ndarray  # (3,)
    col_step_mm: np.ndarray  # (3,)

    def pixel_to_world_mm(self, points_rc: np.ndarray) -> np.ndarray:
        """(N, 2) (row, col) pixels -> (N, 3) world mm. NaN points stay NaN."""
        points = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
        return self.origin_mm + points[:, :1] * self.row_step_mm + points[:, 1:] * self.col_step_mm

    @staticmethod
    def from_ismrmrd(
        position: np.ndarray,
        read_dir: np.ndarray,
        phase_dir: np.ndarray,
        field_of_view_mm: np.ndarray,
        matrix_size: np.ndarray,
    ) -> SliceGeometry:
        """The plane of an ISMRMRD image header (position = image centre, see :mod:`cmr_landmark.geometry`)."""
        corners = pixel_to_patient_mm(
            np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), position, read_dir, phase_dir, field_of_view_mm, matrix_size
        )
        return SliceGeometry(corners[0], corners[1] - corners[0], corners[2] - corners[0])


@dataclass(frozen=True)
class IsmrmrdPlane:
    """The geometry fields of an ISMRMRD image header for one slice, in patient LPS mm."""

    position: np.ndarray
    read_dir: np.ndarray
    phase_dir: np.ndarray
    slice_dir: np.ndarray
    field_of_view_mm: np.ndarray  # (x, y, z)


@dataclass(frozen=True)
class ImageSeries:
    """Images (slices, phases, rows, cols) of one series with their geometry.

    ``voxel_order`` says how a pixel is written as a "voxel" index in reports: ``row_col`` for NIfTI (the index
    into the array's first two axes, i = row, j = column), ``col_row`` for DICOM and ISMRMRD ([x, y] = [column,
    row], the order of their matrix sizes).
    """

    images: np.ndarray  # (slices, phases, rows, cols), the file's dtype
    pixel_spacing_mm: tuple[float, float]  # (row_mm, col_mm)
    slice_geometry: tuple[SliceGeometry, ...]
    frame: str  # "RAS" (NIfTI world) or "LPS" (DICOM / ISMRMRD patient coordinates)
    voxel_order: str
    source: str
    slice_thickness_mm: float = 0.0
    trigger_times_ms: np.ndarray | None = field(default=None)  # (slices, phases) when the file has them

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or min(self.images.shape) < 1:
            raise ImageReadError(
                f"{self.source}: expected (slices, phases, rows, cols) images, got {self.images.shape}"
            )
        if len(self.slice_geometry) != self.images.shape[0]:
            raise ImageReadError(f"{self.source}: {len(self.slice_geometry)} slice geometries for "
                                 f"{self.images.shape[0]} slices")
        low_mm, high_mm = PLAUSIBLE_PIXEL_MM
        if not all(low_mm <= spacing <= high_mm for spacing in self.pixel_spacing_mm):
            raise ImageReadError(f"{self.source}: pixel size {tuple(self.pixel_spacing_mm)} mm is not an MR image's "
                                 f"({low_mm}-{high_mm} mm; a file in metres without its unit?)")
        if self.frame not in FRAMES or self.voxel_order not in VOXEL_ORDERS:
            raise ValueError(f"frame must be one of {FRAMES} and voxel_order one of {VOXEL_ORDERS}")

    @property
    def n_slices(self) -> int:
        return self.images.shape[0]

    @property
    def n_phases(self) -> int:
        return self.images.shape[1]

    def pixel_to_world_mm(self, slice_index: int, points_rc: np.ndarray) -> np.ndarray:
        """(N, 2) (row, col) pixels of slice ``slice_index`` -> (N, 3) mm in this series' ``frame``.

        The phases of a slice share its plane, so no phase index is needed.
        """
        return self.slice_geometry[slice_index].pixel_to_world_mm(points_rc)

    def voxel(self, row: float, col: float) -> list[float]:
        """A (row, col) pixel written in this format's voxel index order."""
        return [row, col] if self.voxel_order == "row_col" else [col, row]

    def voxel_to_pixel(self, voxel: list[float]) -> tuple[float, float]:
        """The inverse of :meth:`voxel`: a voxel index in this format's order -> (row, col)."""
        return (voxel[0], voxel[1]) if self.voxel_order == "row_col" else (voxel[1], voxel[0])

    def patient_geometry_lps(self, slice_index: int) -> SliceGeometry:
        """The slice's geometry in patient LPS coordinates (what DICOM and ISMRMRD headers carry)."""
        geometry = self.slice_geometry[slice_index]
        if self.frame == "LPS":
            return geometry
        return SliceGeometry(
            RAS_TO_LPS @ geometry.origin_mm, RAS_TO_LPS @ geometry.row_step_mm, RAS_TO_LPS @ geometry.col_step_mm
        )

    def ismrmrd_plane(self, slice_index: int) -> IsmrmrdPlane:
        """ISMRMRD header geometry of a slice: the image centre, unit read (column) / phase (row) / slice directions
        (slice = read x phase, right-handed as DICOM's normal) and the field of view (x, y, z) in mm."""
        geometry = self.patient_geometry_lps(slice_index)
        rows, cols = self.images.shape[2:]
        row_mm, col_mm = np.linalg.norm(geometry.row_step_mm), np.linalg.norm(geometry.col_step_mm)
        if row_mm <= 0 or col_mm <= 0:
            raise ImageReadError(f"{self.source}: slice {slice_index} has a zero pixel size in its geometry")
        read_dir, phase_dir = geometry.col_step_mm / col_mm, geometry.row_step_mm / row_mm
        centre = geometry.origin_mm + (rows - 1) / 2.0 * geometry.row_step_mm + (cols - 1) / 2.0 * geometry.col_step_mm
        return IsmrmrdPlane(
            position=centre,
            read_dir=read_dir,
            phase_dir=phase_dir,
            slice_dir=np.cross(read_dir, phase_dir),
            field_of_view_mm=np.array([cols * col_mm, rows * row_mm, self.slice_thickness_mm or min(row_mm, col_mm)]),
        )
