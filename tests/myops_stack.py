"""The real MyoPS short-axis stack with scar and oedema in tests/fixtures (made by scripts/make_t1_test_fixture.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmr_landmark.datasets import Slice

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "myops_sax_stack.npz"
SLICE_SPACING_MM = 15.0  # MyoPS slices lie 12-23 mm apart


def load_myops_stack() -> list[Slice]:
    """The fixture's slices, base first, as :class:`cmr_landmark.datasets.Slice` (bSSFP, with label masks)."""
    data = np.load(FIXTURE)
    return [
        Slice(
            image=data["image"][i].astype(np.float32),
            pixel_spacing_mm=tuple(float(v) for v in data["pixel_spacing_mm"]),
            landmarks_rc=data["landmarks_rc"][i],
            view="sax",
            sequence="cine",
            dataset="myops",
            patient=str(data["patient"]),
            slice_index=int(data["slice_index"][i]),
            phase=0,
            mask=data["mask"][i],
            pathology=data["pathology"][i],
        )
        for i in range(len(data["image"]))
    ]
