"""Picture of the derived landmarks on real slices of every cached set, in the standard orientation.

    python scripts/plot_derived_landmarks.py [--out docs/derived_landmarks.png] [--per-set 5]

Each panel is cropped around the heart (mask contours: red LV blood pool, green myocardium, blue RV) with
A-RVI / MV-1 as a red dot, P-RVI / MV-2 blue, C-LV / APEX yellow. In the standard short-axis display the RV is
on the left and A-RVI must be the upper end of its arc.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cmr_landmark.config import LANDMARKS_BY_VIEW, REPO_ROOT  # noqa: E402
from cmr_landmark.datasets import Slice, load_slices  # noqa: E402

POINT_COLOURS = ("red", "dodgerblue", "yellow")
CROP_MARGIN_MM = 40.0


def _examples(per_set: int) -> list[Slice]:
    """Evenly spaced labelled slices with at least one landmark, from each set and sequence/view."""
    chosen = []
    for dataset in ("acdc", "mscmrseg_lge", "myops", "mnms2"):
        slices = [s for s in load_slices(dataset) if s.labelled and np.isfinite(s.landmarks_rc).any()]
        groups: dict[tuple[str, str], list[Slice]] = {}
        for s in slices:
            groups.setdefault((s.view, s.sequence), []).append(s)
        for members in groups.values():
            picks = np.linspace(0, len(members) - 1, min(per_set, len(members))).round().astype(int)
            chosen += [members[i] for i in picks]
    return chosen


def _draw(axis: plt.Axes, sample: Slice) -> None:
    rows, cols = np.nonzero(sample.mask)
    margin = (CROP_MARGIN_MM / np.asarray(sample.pixel_spacing_mm)).astype(int)
    r0, r1 = max(rows.min() - margin[0], 0), min(rows.max() + margin[0], sample.image.shape[0])
    c0, c1 = max(cols.min() - margin[1], 0), min(cols.max() + margin[1], sample.image.shape[1])
    crop = sample.image[r0:r1, c0:c1]
    aspect = sample.pixel_spacing_mm[0] / sample.pixel_spacing_mm[1]
    axis.imshow(crop, cmap="gray", vmax=np.percentile(crop, 99.5), aspect=aspect)
    for code, colour in ((1, "red"), (2, "lime"), (3, "deepskyblue")):
        if np.any(sample.mask[r0:r1, c0:c1] == code):
            axis.contour(sample.mask[r0:r1, c0:c1] == code, [0.5], colors=colour, linewidths=0.6)
    names = LANDMARKS_BY_VIEW[sample.view]
    for point, colour, name in zip(sample.landmarks_rc, POINT_COLOURS, names, strict=True):
        if np.all(np.isfinite(point)):
            axis.plot(point[1] - c0, point[0] - r0, "o", color=colour, markersize=5, markeredgecolor="black")
            axis.annotate(name, (point[1] - c0, point[0] - r0), color=colour, fontsize=6,
                          xytext=(3, 3), textcoords="offset points")
    axis.set_title(f"{sample.dataset} {sample.patient}\n{sample.view} {sample.sequence} z{sample.slice_index} "
                   f"ph{sample.phase}", fontsize=6)
    axis.axis("off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "derived_landmarks.png")
    parser.add_argument("--per-set", type=int, default=5, help="panels per set and view/sequence")
    args = parser.parse_args()
    examples = _examples(args.per_set)
    columns = args.per_set
    figure_rows = int(np.ceil(len(examples) / columns))
    figure, axes = plt.subplots(figure_rows, columns, figsize=(1.9 * columns, 2.1 * figure_rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, sample in zip(axes.flat, examples, strict=False):
        _draw(axis, sample)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=66)
    print(f"wrote {args.out} ({len(examples)} panels)")


if __name__ == "__main__":
    main()
