"""Reading image series from NIfTI, DICOM and ISMRMRD files, and writing ISMRMRD files."""

from __future__ import annotations

from pathlib import Path

from .dicom import read_dicom
from .image_series import ISMRMRD_SUFFIXES, NIFTI_SUFFIXES, ImageReadError, ImageSeries, IsmrmrdPlane, SliceGeometry
from .ismrmrd_file import list_image_groups, read_ismrmrd, read_ismrmrd_images, write_ismrmrd_images
from .nifti import read_nifti

__all__ = [
    "ImageReadError",
    "ImageSeries",
    "IsmrmrdPlane",
    "SliceGeometry",
    "list_image_groups",
    "read_dicom",
    "read_ismrmrd",
    "read_ismrmrd_images",
    "read_nifti",
    "read_series",
    "write_ismrmrd_images",
]


def read_series(path: Path, image_group: str | None = None, nifti_third_axis: str = "slices") -> ImageSeries:
    """Read NIfTI (.nii, .nii.gz), ISMRMRD (.h5, .mrd) or DICOM (a file or a folder of one series).
    ``image_group`` chooses among an ISMRMRD file's image groups; given with another format it is refused, since
    the images read would not be the ones it names. ``nifti_third_axis``: what the third axis of a 3-D NIfTI
    holds, "slices" or "phases" (:func:`read_nifti`)."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    is_ismrmrd = path.is_file() and path.name.lower().endswith(ISMRMRD_SUFFIXES)
    if image_group and not is_ismrmrd:
        raise ImageReadError(f"{path}: an image group ({image_group}) is chosen only in an ISMRMRD file "
                             f"({', '.join(ISMRMRD_SUFFIXES)}); this one holds a single series")
    is_nifti = path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)
    if nifti_third_axis != "slices" and not is_nifti:
        raise ImageReadError(f"{path}: the third axis is chosen ({nifti_third_axis}) only for a 3-D NIfTI file; "
                             "DICOM and ISMRMRD files say which images are slices and which phases")
    if is_ismrmrd:
        return read_ismrmrd(path, image_group)
    if is_nifti:
        return read_nifti(path, nifti_third_axis)
    return read_dicom(path)
