"""NIfTI reader: 2-D (one image), 3-D (slices) or 4-D (slices x phases) arrays via nibabel.

The array is used as stored: rows are the first axis (i), columns the second (j), and world coordinates come
from the file's affine (RAS+). Nothing is reoriented: public NIfTI sets do not agree on how they store the
heart, so a model trained on them was shown each set in a standard orientation by the training code, and user
files are taken as they are.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from .image_series import ImageReadError, ImageSeries, SliceGeometry

log = logging.getLogger(__name__)

MM_PER_NIFTI_UNIT = {"mm": 1.0, "unknown": 1.0, "meter": 1000.0, "micron": 0.001}


NIFTI_THIRD_AXES = ("slices", "phases")


def read_nifti(path: Path, third_axis: str = "slices") -> ImageSeries:
    """Read a .nii / .nii.gz file into an :class:`ImageSeries` (frame RAS, voxel order row_col).

    A 4-D file is rows x cols x slices x phases. A 3-D file is rows x cols x slices, or with ``third_axis="phases"``
    the phases of one slice: a cine of one plane (a long-axis view) that a converter stored without its
    slice axis."""
    path = Path(path)
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as error:  # zlib: a corrupt .nii.gz body
        raise ImageReadError(f"{path}: not a readable NIfTI file ({error})") from error
    if third_axis not in NIFTI_THIRD_AXES:
        raise ValueError(f"third_axis must be one of {NIFTI_THIRD_AXES}, got {third_axis!r}")
    if third_axis == "phases":
        while data.ndim > 3 and data.shape[-1] == 1:  # rows x cols x N x 1 (x 1): a 3-D image with empty axes
            data = data[..., 0]
        if data.ndim != 3:
            raise ImageReadError(f"{path}: --nifti-3d phases reads a 3-D file (rows x cols x phases); this one is "
                                 f"{data.shape}, whose axes say what they hold")
        data = data[:, :, None, :]
    if data.ndim == 2:
        data = data[:, :, None, None]
    elif data.ndim == 3:
        data = data[:, :, :, None]
    elif data.ndim == 5 and data.shape[4] == 1:
        data = data[..., 0]
    if data.ndim != 4 or min(data.shape) < 1 or min(data.shape[:2]) < 2:
        raise ImageReadError(f"{path}: expected a 2-D, 3-D or 4-D image of at least 2 x 2 pixels, got {data.shape}")
    if np.iscomplexobj(data):  # the magnitude is what the models see, as for complex ISMRMRD images
        log.warning("%s: complex images: their magnitude is used", path)
        data = np.abs(data)
    if data.dtype.kind not in "iuf":
        raise ImageReadError(f"{path}: unsupported NIfTI data type {data.dtype}")
    if int(image.header["qform_code"]) == 0 and int(image.header["sform_code"]) == 0:
        log.warning("%s: neither qform nor sform is set: world_mm comes from the voxel sizes alone, not from where "
                    "the image lay in the patient", path)
    spatial_unit = image.header.get_xyzt_units()[0]
    if spatial_unit not in MM_PER_NIFTI_UNIT:
        raise ImageReadError(f"{path}: the header's spatial unit {spatial_unit!r} is not a length")
    # the affine is in the header's unit (nibabel leaves it so); ImageSeries is in mm. 'unknown' is taken as mm,
    # what the NIfTI standard's readers assume and the public sets without a unit use
    affine = np.array(image.affine, dtype=np.float64)
    affine[:3] *= MM_PER_NIFTI_UNIT[spatial_unit]
    if not np.all(np.isfinite(affine)):
        raise ImageReadError(f"{path}: the affine is not finite")
    row_step, col_step, slice_step, origin = affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3]
    pixel_spacing_mm = (float(np.linalg.norm(row_step)), float(np.linalg.norm(col_step)))
    images = np.ascontiguousarray(np.transpose(data, (2, 3, 0, 1)))
    geometry = tuple(SliceGeometry(origin + k * slice_step, row_step, col_step) for k in range(images.shape[0]))
    return ImageSeries(
        images=images,
        pixel_spacing_mm=pixel_spacing_mm,
        slice_geometry=geometry,
        frame="RAS",
        voxel_order="row_col",
        source=str(path),
        slice_thickness_mm=float(np.linalg.norm(slice_step)),
    )
