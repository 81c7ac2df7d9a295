"""A synthetic MOLLI T1-map series as a scanner would send it: an ISMRMRD image file of real-valued ms maps.

One subject's short-axis stack (labelled slices) -> one synthetic T1 map per slice, all from one
:class:`~cmr_landmark.synth.t1.T1Scenario` (one scan: one field strength, one contrast state) -> an
:class:`~cmr_landmark.io.ImageSeries` in a short-axis plane whose image "up" is the patient's anterior -> ISMRMRD
images (IMTYPE_REAL, float32 ms, or uint16 ms as scanners store maps) with a header whose protocol name says
short-axis MOLLI T1 map, so the gadget's automatic model choice picks the T1 model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ismrmrd
import numpy as np

from ..config import DATA_ROLE_META
from ..convert import IMAGE_GROUP, build_header, series_to_images
from ..datasets import Slice
from ..io import ImageSeries, SliceGeometry, write_ismrmrd_images
from .t1 import as_scanner_uint16, draw_t1_scenario, render_t1_map

PROTOCOL_NAME = "SAX_MOLLI_T1MAP"
SERIES_DESCRIPTION = "MOLLI T1 map (ms), synthetic from labelled short-axis images"

# A short-axis plane in patient LPS: columns run to the patient's left, rows to posterior, so the image is displayed
# anterior up with the patient's right (the RV) on the viewer's left, tilted 30 degrees about the
# left-right axis as a short axis is against the axial plane.
_TILT_RAD = np.deg2rad(30.0)
COLUMN_DIRECTION_LPS = np.array([1.0, 0.0, 0.0])
ROW_DIRECTION_LPS = np.array([0.0, np.cos(_TILT_RAD), np.sin(_TILT_RAD)])
SLICE_DIRECTION_LPS = np.cross(COLUMN_DIRECTION_LPS, ROW_DIRECTION_LPS)


def synthetic_t1_series(
    slices: Sequence[Slice],
    seed: int,
    slice_spacing_mm: float = 10.0,
    field_strength_t: float | None = None,
    post_contrast: bool | None = None,
    as_uint16: bool = False,
) -> ImageSeries:
    """T1 maps (slices, 1 phase, rows, cols) of labelled SAX ``slices`` of one shape and spacing, base to apex."""
    if not slices:
        raise ValueError("no slices to make a T1 map series from")
    shapes = {s.image.shape for s in slices}
    spacings = {tuple(float(v) for v in s.pixel_spacing_mm) for s in slices}
    if len(shapes) != 1 or len(spacings) != 1:
        raise ValueError(f"the slices of one series need one shape and spacing, got {shapes} and {spacings}")
    if any(s.mask is None for s in slices):
        raise ValueError("every slice needs a label mask to synthesise its T1 map")
    rng = np.random.default_rng(seed)
    scenario = draw_t1_scenario(rng, field_strength_t, post_contrast)
    maps = np.stack([render_t1_map(s.image, s.mask, scenario, rng, pathology=s.pathology) for s in slices])
    maps = as_scanner_uint16(maps) if as_uint16 else maps
    row_mm, col_mm = spacings.pop()
    rows, cols = shapes.pop()
    geometry = []
    for index in range(len(slices)):
        centre = -SLICE_DIRECTION_LPS * index * slice_spacing_mm  # base to apex: towards the feet
        row_step, col_step = row_mm * ROW_DIRECTION_LPS, col_mm * COLUMN_DIRECTION_LPS
        origin = centre - (rows - 1) / 2.0 * row_step - (cols - 1) / 2.0 * col_step
        geometry.append(SliceGeometry(origin, row_step, col_step))
    return ImageSeries(
        images=maps[:, None],
        pixel_spacing_mm=(row_mm, col_mm),
        slice_geometry=tuple(geometry),
        frame="LPS",
        voxel_order="col_row",
        source=f"synthetic MOLLI T1 map of {slices[0].dataset} {slices[0].patient} ({scenario.field_strength_t:g} T, "
        f"{'post-contrast' if scenario.post_contrast else 'native'})",
        slice_thickness_mm=slice_spacing_mm,
    )


def write_t1_map_ismrmrd(series: ImageSeries, path: Path, compress: bool = False) -> None:
    """``series`` as ISMRMRD real-valued T1 map images (the converter's geometry and header, MOLLI naming);
    ``compress``: the pixel data gzipped."""
    header = build_header(series, "sax", "t1")
    header.measurementInformation.protocolName = PROTOCOL_NAME
    header.measurementInformation.seriesDescription = SERIES_DESCRIPTION
    images = series_to_images(series)
    for image in images:
        image.image_type = ismrmrd.IMTYPE_REAL
        image.meta["SequenceDescription"] = PROTOCOL_NAME
        image.meta["ImageComment"] = "T1 map, ms"
        image.meta[DATA_ROLE_META] = "T1"  # as Gadgetron's map fitting marks its maps (the MOLLI chain's data_roles)
    write_ismrmrd_images(path, header, {IMAGE_GROUP: images}, compress=compress)
