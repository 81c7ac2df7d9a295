"""The hold-out's path: ``cmr-landmark detect`` on each validation patient's own NIfTI files of the public sets,
its voxels compared with the labels' landmarks mapped into those files (docs/replay.md).

``cmr-landmark evaluate`` measures the models on the cached slices, which are already in the standard display. A
hidden hold-out of the same sets is more likely to call ``detect`` on the files as the sets store them. This checks
that both paths give the same figures: mean distance (mm) per landmark over the labelled landmarks detected.

    python scripts/detect_on_public_files.py --out reports/detect_on_public_files.md

``--neutral-names`` gives ``detect`` each file under a name that is no public set's (a symbolic link,
``image.nii.gz``), so that only the file's anatomy can tell how to show it to the model (docs/orientation.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from cmr_landmark.config import LANDMARKS_BY_VIEW, data_root
from cmr_landmark.datasets import ORIENTATION_BY_DATASET, load_slices, read_splits
from cmr_landmark.geometry import points_to_original

# (set, sequence) -> the image file of a patient and phase, as the set stores it
FILES = {
    ("acdc", "cine"): lambda p, phase: f"acdc/{p}/{p}_frame0{phase + 1}.nii.gz",
    ("myops", "cine"): lambda p, phase: f"myops/{p}/{p}_C0.nii.gz",
    ("mscmrseg_lge", "lge"): lambda p, phase: f"mscmrseg_lge/{p}/{p}_DE.nii.gz",
    ("myops", "lge"): lambda p, phase: f"myops/{p}/{p}_LGE.nii.gz",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="markdown report (a .json beside it)")
    parser.add_argument("--neutral-names", action="store_true", help="hide the files' public-set names from detect")
    args = parser.parse_args(argv)
    names = LANDMARKS_BY_VIEW["sax"]
    lines = ["| set, sequence | files shown as decided for the set | images | "
             + " | ".join(f"{n} mm (n)" for n in names) + " |", "|---|---|---|---|---|---|"]
    results = {}
    for (dataset, sequence), file_of in FILES.items():
        orientation = ORIENTATION_BY_DATASET[dataset]
        slices = [s for s in load_slices(dataset, "val") if s.sequence == sequence and s.labelled]
        errors = {n: [] for n in names}
        images, files, shown_as_decided = 0, 0, 0
        for patient in read_splits()[dataset]["val"]:
            for phase in sorted({s.phase for s in slices if s.patient == patient}):
                path = data_root() / file_of(patient, phase)
                with tempfile.TemporaryDirectory() as folder:
                    out = Path(folder) / "d.json"
                    given = path
                    if args.neutral_names:
                        given = Path(folder) / "image.nii.gz"
                        given.symlink_to(path.resolve())
                    subprocess.run([sys.executable, "-m", "cmr_landmark.cli", "detect", str(given), "--view", "sax",
                                    "--sequence", sequence, "--out", str(out)], check=True, capture_output=True)
                    result = json.loads(out.read_text())
                records = result["images"]
                shown = result["display_orientation"]
                files += 1
                shown_as_decided += (shown["quarter_turns"], shown["mirror"]) == orientation
                raw_shape = nib.load(str(path)).shape[:2]
                for s in (s for s in slices if s.patient == patient and s.phase == phase):
                    record = next(r for r in records if r["slice"] == s.slice_index and r["phase"] == 0)
                    images += 1
                    labels = points_to_original(s.landmarks_rc, raw_shape, *orientation)
                    for name, label in zip(names, labels, strict=True):
                        found = record["landmarks"][name]
                        if found is not None and np.all(np.isfinite(label)):
                            errors[name].append(float(np.linalg.norm((np.array(found["voxel"]) - label)
                                                                     * s.pixel_spacing_mm)))
        results[f"{dataset} {sequence}"] = {"files": files, "shown_as_decided": shown_as_decided, **errors}
        lines.append(f"| {dataset}, {sequence} | {shown_as_decided} of {files} | {images} | "
                     + " | ".join(f"{np.mean(v):.2f} ({len(v)})" if v else "-" for v in errors.values()) + " |")
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
