"""Regenerate the shipped sample (samples/*.h5) from the M&Ms-2 subject 001 in the public data folder.

    python scripts/make_sample.py [--data DIR] [--out samples]

Writes three ISMRMRD image files (one series each, as a scanner would send them):

- ``mnms2_001_sax.h5``: the short-axis stack, 12 slices x 2 phases (0 = end-diastole, 1 = end-systole),
  protocolName CMR_LANDMARK_SAX_CINE;
- ``mnms2_001_lax_4ch_cine.h5``: the 25-phase 4-chamber cine, protocolName CMR_LANDMARK_LAX_CINE;
- ``mnms2_001_sax_t1map_synthetic.h5``: a synthetic native 1.5 T MOLLI T1 map (uint16 ms, as scanners store
  them) of the end-diastolic stack, made from its label maps (synth.t1_series, seed 1), in the short-axis
  stack's planes, protocolName SAX_MOLLI_T1MAP: for trying the MOLLI chain. It is no real T1 map.

The arrays keep the orientation the training code uses for M&Ms-2 (``datasets.ORIENTATION_BY_DATASET``: as
stored, which is the standard short-axis display: anterior up, RV on the viewer's left). The NIfTI affines of
the set do not agree with the anatomy in the images (their row axis points anterior while the RV, an anterior
structure, lies at smaller rows), so the geometry is synthesised instead: a typical LV long axis (towards the
patient's left, anterior and inferior), short-axis planes perpendicular to it with image rows running
posterior and columns to the patient's left (so anterior is up and the RV on the left, as in the images),
slices 10 mm apart from base (slice 0) to apex, and a 4-chamber plane through the long axis with the apex
where it lies in the images. Pixel spacing is the files' own.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np

from cmr_landmark.config import data_root
from cmr_landmark.convert import convert
from cmr_landmark.datasets import MNMS2_LABELS, ORIENTATION_BY_DATASET, load_slices
from cmr_landmark.geometry import orient_image
from cmr_landmark.io import ImageSeries, SliceGeometry, read_nifti
from cmr_landmark.landmarks import derive_lax_landmarks
from cmr_landmark.synth.t1_series import synthetic_t1_series, write_t1_map_ismrmrd

SUBJECT = "001"
T1_MAP_SEED = 1  # the draw of tissue values, noise and map look of the synthetic T1 map sample
# Patient LPS (x left, y posterior, z head). A typical LV long axis, base to apex: left, anterior, inferior.
LONG_AXIS_LPS = np.array([0.55, -0.45, -0.70]) / np.linalg.norm([0.55, -0.45, -0.70])
HEART_CENTRE_LPS = np.array([25.0, 10.0, -20.0])  # mid-ventricle, mm from the magnet isocentre
PATIENT_LEFT, PATIENT_POSTERIOR = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])


def _perpendicular(vector: np.ndarray, *axes: np.ndarray) -> np.ndarray:
    for axis in axes:
        vector = vector - (vector @ axis) * axis
    return vector / np.linalg.norm(vector)


def sax_geometry(series: ImageSeries, slice_gap_mm: float) -> tuple[SliceGeometry, ...]:
    """Short-axis planes: columns to the patient's left, rows posterior, slice 0 basal, stepping to the apex."""
    read = _perpendicular(PATIENT_LEFT, LONG_AXIS_LPS)
    phase = _perpendicular(PATIENT_POSTERIOR, LONG_AXIS_LPS, read)
    row_mm, col_mm = series.pixel_spacing_mm
    rows, cols = series.images.shape[2:]
    geometries = []
    for k in range(series.n_slices):
        centre = HEART_CENTRE_LPS + (k - (series.n_slices - 1) / 2) * slice_gap_mm * LONG_AXIS_LPS
        origin = centre - (rows - 1) / 2 * row_mm * phase - (cols - 1) / 2 * col_mm * read
        geometries.append(SliceGeometry(origin, row_mm * phase, col_mm * read))
    return tuple(geometries)


def lax_geometry(series: ImageSeries, apex_to_base_rc: np.ndarray) -> tuple[SliceGeometry, ...]:
    """A 4-chamber plane through the long axis: the image direction ``apex_to_base_rc`` (row, col, in mm) points
    from apex to base, the perpendicular image direction with positive columns to the patient's left (LV)."""
    along = apex_to_base_rc / np.linalg.norm(apex_to_base_rc)
    across = np.array([-along[1], along[0]])
    if across[1] < 0:
        across = -across
    base_direction = -LONG_AXIS_LPS
    left_direction = _perpendicular(PATIENT_LEFT, LONG_AXIS_LPS)
    # Patient direction of one mm along image rows / columns: [along across] is orthonormal, so invert by transpose.
    row_direction = along[0] * base_direction + across[0] * left_direction
    col_direction = along[1] * base_direction + across[1] * left_direction
    row_mm, col_mm = series.pixel_spacing_mm
    rows, cols = series.images.shape[2:]
    origin = HEART_CENTRE_LPS - (rows - 1) / 2 * row_mm * row_direction - (cols - 1) / 2 * col_mm * col_direction
    return (SliceGeometry(origin, row_mm * row_direction, col_mm * col_direction),)


def _standard(series: ImageSeries) -> np.ndarray:
    orientation = ORIENTATION_BY_DATASET["mnms2"]
    return np.stack([np.stack([orient_image(image, *orientation) for image in phases]) for phases in series.images])


def make_samples(data: Path, out: Path) -> list[Path]:
    folder = data / "mnms2" / SUBJECT
    ed, es = (read_nifti(folder / f"{SUBJECT}_SA_{name}.nii.gz") for name in ("ED", "ES"))
    sax_images = np.concatenate([_standard(ed), _standard(es)], axis=1)
    if not np.array_equal(sax_images, np.rint(sax_images)) or sax_images.max() >= 2**15:
        raise ValueError("the M&Ms-2 SAX images were expected to hold whole numbers below 32768")
    sax = dataclasses.replace(ed, images=sax_images.astype(np.int16), frame="LPS", voxel_order="col_row")
    sax = dataclasses.replace(sax, slice_geometry=sax_geometry(sax, ed.slice_thickness_mm))

    cine = read_nifti(folder / f"{SUBJECT}_LA_CINE.nii.gz")
    cine = dataclasses.replace(cine, images=_standard(cine), frame="LPS", voxel_order="col_row")
    mask = orient_image(
        np.rint(nib.load(str(folder / f"{SUBJECT}_LA_ED_gt.nii.gz")).get_fdata()[:, :, 0]).astype(np.int16),
        *ORIENTATION_BY_DATASET["mnms2"])
    mv1, mv2, apex = derive_lax_landmarks(mask, MNMS2_LABELS, cine.pixel_spacing_mm)
    apex_to_base_rc = ((mv1 + mv2) / 2 - apex) * np.asarray(cine.pixel_spacing_mm)
    cine = dataclasses.replace(cine, slice_geometry=lax_geometry(cine, apex_to_base_rc), slice_thickness_mm=8.0)

    # the end-diastolic short-axis slices with their label maps, base to apex, which the T1 map is drawn from
    labelled = sorted((s for s in load_slices("mnms2", root=data) if s.view == "sax" and s.labelled
                       and s.patient == SUBJECT and s.phase == 0), key=lambda s: s.slice_index)
    t1_map = synthetic_t1_series(labelled, T1_MAP_SEED, field_strength_t=1.5, post_contrast=False, as_uint16=True)
    # in the planes of the cine stack, so that the two files of one subject agree (their AHA orientations too)
    t1_map = dataclasses.replace(t1_map, slice_geometry=sax_geometry(t1_map, ed.slice_thickness_mm))

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"mnms2_{SUBJECT}_sax.h5", out / f"mnms2_{SUBJECT}_lax_4ch_cine.h5",
             out / f"mnms2_{SUBJECT}_sax_t1map_synthetic.h5"]
    convert(sax, paths[0], "sax", "cine", compress=True)
    convert(cine, paths[1], "lax", "cine", compress=True)
    write_t1_map_ismrmrd(t1_map, paths[2], compress=True)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=data_root(), help="the public data folder (../shared/data)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "samples")
    args = parser.parse_args()
    for path in make_samples(args.data, args.out):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
