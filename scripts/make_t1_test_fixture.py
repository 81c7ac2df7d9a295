"""Make tests/fixtures/myops_sax_scar.npz: one real MyoPS bSSFP short-axis slice with scar and oedema labels.

    python scripts/make_t1_test_fixture.py

A 224 mm field of view around the LV, resampled to 1.5 mm pixels (what a T1 map has), so the fixture is small
(~40 KB) yet a whole-heart image the models can run on. Landmarks are derived again from the resampled mask with
the project's rule (cmr_landmark.landmarks). Derived from MyoPS (cite the challenge; research use only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from cmr_landmark.datasets import load_slices
from cmr_landmark.landmarks import derive_sax_landmarks

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "myops_sax_scar.npz"
PATIENT, SLICE_INDEX, SEQUENCE = "Case3008", 2, "cine"
FIELD_OF_VIEW_MM, PIXEL_MM = 224.0, 1.5


def main() -> int:
    source = next(s for s in load_slices("myops", "train")
                  if s.patient == PATIENT and s.slice_index == SLICE_INDEX and s.sequence == SEQUENCE)
    size_px = int(FIELD_OF_VIEW_MM / PIXEL_MM)
    step = np.array([PIXEL_MM, PIXEL_MM]) / np.asarray(source.pixel_spacing_mm)  # source pixels per new pixel
    offset = source.landmarks_rc[2] - step * (size_px - 1) / 2.0  # centred on C-LV
    matrix = np.diag(step)

    def resample(array: np.ndarray, order: int) -> np.ndarray:
        return ndimage.affine_transform(array, matrix, offset=offset, output_shape=(size_px, size_px), order=order)

    image = np.rint(resample(source.image.astype(np.float32), 1)).astype(np.int16)
    mask = resample(source.mask, 0).astype(np.uint8)
    pathology = resample(source.pathology, 0).astype(np.uint8)
    landmarks_rc = derive_sax_landmarks(mask, pixel_spacing_mm=(PIXEL_MM, PIXEL_MM))
    np.savez_compressed(FIXTURE, image=image, mask=mask, pathology=pathology, landmarks_rc=landmarks_rc,
                        pixel_spacing_mm=np.array([PIXEL_MM, PIXEL_MM]), patient=PATIENT, slice_index=SLICE_INDEX)
    print(f"{FIXTURE} ({FIXTURE.stat().st_size} bytes), landmarks {landmarks_rc.round(1).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
