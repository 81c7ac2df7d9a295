"""Make tests/fixtures/myops_sax_stack.npz: a real MyoPS bSSFP short-axis stack (3 slices) with scar and oedema.

    python scripts/make_t1_test_fixture.py [--out tests/fixtures/myops_sax_stack.npz]

A 224 mm field of view around the LV of the middle slice, resampled to 1.5 mm pixels (what a T1 map has), so the
fixture is small (~100 KB) yet whole-heart images the models can run on. Landmarks are derived again from the
resampled masks with the project's rule (cmr_landmark.landmarks). Derived from MyoPS (cite the challenge; research
use only).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from cmr_landmark.datasets import load_slices
from cmr_landmark.landmarks import derive_sax_landmarks

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "myops_sax_stack.npz"
PATIENT, SLICE_INDICES, SEQUENCE = "Case3008", (0, 1, 2), "cine"
FIELD_OF_VIEW_MM, PIXEL_MM = 224.0, 1.5


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURE, help="the .npz to write (default: the test fixture)")
    out = parser.parse_args(argv).out
    by_index = {s.slice_index: s for s in load_slices("myops", "train")
                if s.patient == PATIENT and s.sequence == SEQUENCE}
    sources = [by_index[index] for index in SLICE_INDICES]
    size_px = int(FIELD_OF_VIEW_MM / PIXEL_MM)
    step = np.array([PIXEL_MM, PIXEL_MM]) / np.asarray(sources[0].pixel_spacing_mm)  # source pixels per new pixel
    offset = sources[len(sources) // 2].landmarks_rc[2] - step * (size_px - 1) / 2.0  # centred on the middle C-LV
    matrix = np.diag(step)

    def resample(array: np.ndarray, order: int) -> np.ndarray:
        return ndimage.affine_transform(array, matrix, offset=offset, output_shape=(size_px, size_px), order=order)

    images = np.stack([np.rint(resample(s.image.astype(np.float32), 1)).astype(np.int16) for s in sources])
    masks = np.stack([resample(s.mask, 0).astype(np.uint8) for s in sources])
    pathology = np.stack([resample(s.pathology, 0).astype(np.uint8) for s in sources])
    landmarks_rc = np.stack([derive_sax_landmarks(mask, pixel_spacing_mm=(PIXEL_MM, PIXEL_MM)) for mask in masks])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, image=images, mask=masks, pathology=pathology, landmarks_rc=landmarks_rc,
                        pixel_spacing_mm=np.array([PIXEL_MM, PIXEL_MM]), patient=PATIENT,
                        slice_index=np.array(SLICE_INDICES))
    print(f"{out} ({out.stat().st_size} bytes), landmarks {landmarks_rc.round(1).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
