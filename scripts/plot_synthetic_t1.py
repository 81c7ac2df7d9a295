"""Picture of synthetic MOLLI T1 maps and random-contrast images made from real validation slices.

    python scripts/plot_synthetic_t1.py [--out docs/synthetic_t1.png]
    python scripts/plot_synthetic_t1.py --clinical-contrasts --out docs/clinical_contrasts.png
    python scripts/plot_synthetic_t1.py --rv-wall --out docs/rv_wall.png

Rows: an ACDC cine slice, a MyoPS bSSFP and LGE slice with scar/oedema, an MS-CMRSeg LGE slice. Columns: the
source; native maps at 1.5 T and 3 T and a post-contrast map (T1 colour scale 0-2000 ms native, 0-1000 ms
post-contrast, as maps are usually read); two random-contrast versions. Derived landmarks are drawn on the
source (A-RVI red, P-RVI blue, C-LV yellow): they stay valid for every synthetic image.

``--clinical-contrasts``: the same rows, with the evaluation-only contrasts of
:mod:`cmr_landmark.synth.clinical_contrasts` (T2, T2* and ECV maps, T2-weighted black blood) as columns, each
in grey from its 1st to 99th percentile.

``--rv-wall``: a native T1 map, an ECV map and a random contrast of each row, each without and with the RV free
wall at the myocardium's value (:func:`cmr_landmark.synth.contrast.draw_rv_wall`; the unlabelled wall otherwise
gets the body's value). The wall's draw shifts the draws after it, so the pair's noise and body curve differ too.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from cmr_landmark.config import REPO_ROOT  # noqa: E402
from cmr_landmark.datasets import load_slices  # noqa: E402
from cmr_landmark.synth.clinical_contrasts import CLINICAL_CONTRASTS, render_clinical_contrast  # noqa: E402
from cmr_landmark.synth.contrast import with_random_contrast  # noqa: E402
from cmr_landmark.synth.t1 import draw_t1_scenario, render_t1_map, synthetic_t1_slice  # noqa: E402

CROP_MM = 200.0
POINT_COLOURS = ("red", "dodgerblue", "yellow")
MAPS = ((1.5, False), (3.0, False), (1.5, True))


def _examples() -> list:
    wanted = (("acdc", "cine", False), ("myops", "cine", True), ("myops", "lge", True), ("mscmrseg_lge", "lge", False))
    examples = []
    for dataset, sequence, with_lesion in wanted:
        candidates = [s for s in load_slices(dataset, "val") if s.sequence == sequence and s.has_all_landmarks
                      and (not with_lesion or (s.pathology is not None and (s.pathology == 2).sum() > 300))]
        examples.append(candidates[len(candidates) // 2])
    return examples


def _crop(s) -> tuple[slice, slice]:
    half = (CROP_MM / 2 / np.asarray(s.pixel_spacing_mm)).astype(int)
    centre = np.rint(s.landmarks_rc[2]).astype(int)
    low = np.maximum(centre - half, 0)
    return slice(low[0], centre[0] + half[0]), slice(low[1], centre[1] + half[1])


def _show_source(axis, s, crop: tuple[slice, slice]) -> None:
    axis.imshow(s.image[crop], cmap="gray")
    for (r, c), colour in zip(s.landmarks_rc - [crop[0].start, crop[1].start], POINT_COLOURS, strict=True):
        axis.plot(c, r, "o", color=colour, markersize=3)
    axis.set_title(f"{s.dataset} {s.sequence}", fontsize=8)


def _t1_figure(examples: list):
    columns = 1 + len(MAPS) + 2
    figure, axes = plt.subplots(len(examples), columns, figsize=(2.2 * columns, 2.3 * len(examples)))
    for row, s in enumerate(examples):
        crop = _crop(s)
        _show_source(axes[row, 0], s, crop)
        for column, (field_strength_t, post_contrast) in enumerate(MAPS, start=1):
            rng = np.random.default_rng([row, column])
            scenario = draw_t1_scenario(rng, field_strength_t, post_contrast)
            t1_ms = render_t1_map(s.image, s.mask, scenario, rng, pathology=s.pathology)
            shown = axes[row, column].imshow(t1_ms[crop], cmap="turbo", vmin=0, vmax=1000 if post_contrast else 2000)
            axes[row, column].set_title(f"{field_strength_t:g} T {'post' if post_contrast else 'native'}: myo "
                                        f"{scenario.myocardium_t1_ms:.0f}, blood {scenario.lv_blood_t1_ms:.0f} ms",
                                        fontsize=6)
            if row == len(examples) - 1:
                figure.colorbar(shown, ax=axes[row, column], orientation="horizontal", fraction=0.05, label="ms")
        for column in range(1 + len(MAPS), columns):
            augmented = with_random_contrast(s, np.random.default_rng([row, column]))
            axes[row, column].imshow(augmented.image[crop], cmap="gray")
            axes[row, column].set_title("random tissue contrast", fontsize=7)
    return figure, axes


def _clinical_contrasts_figure(examples: list):
    kinds = list(CLINICAL_CONTRASTS)
    figure, axes = plt.subplots(len(examples), 1 + len(kinds), figsize=(2.2 * (1 + len(kinds)), 2.3 * len(examples)))
    for row, s in enumerate(examples):
        crop = _crop(s)
        _show_source(axes[row, 0], s, crop)
        for column, kind in enumerate(kinds, start=1):
            image = render_clinical_contrast(s.image, s.mask, kind, np.random.default_rng([row, column]),
                                             pathology=s.pathology)[crop]
            axes[row, column].imshow(image, cmap="gray", vmin=np.percentile(image, 1), vmax=np.percentile(image, 99))
            axes[row, column].set_title(f"{kind} ({CLINICAL_CONTRASTS[kind].unit})", fontsize=7)
    return figure, axes


def _rv_wall_figure(examples: list):
    def t1_map(s, rng: np.random.Generator, rv_wall_fraction: float) -> np.ndarray:
        return synthetic_t1_slice(s, rng, field_strength_t=1.5, post_contrast=False,
                                  rv_wall_fraction=rv_wall_fraction).image

    def ecv_map(s, rng: np.random.Generator, rv_wall_fraction: float) -> np.ndarray:
        return render_clinical_contrast(s.image, s.mask, "ecv_map", rng, pathology=s.pathology,
                                        rv_wall_fraction=rv_wall_fraction, pixel_spacing_mm=s.pixel_spacing_mm)

    def random_contrast(s, rng: np.random.Generator, rv_wall_fraction: float) -> np.ndarray:
        return with_random_contrast(s, rng, rv_wall_fraction=rv_wall_fraction).image

    kinds = (("T1 native 1.5 T", t1_map), ("ECV map", ecv_map), ("random contrast", random_contrast))
    columns = 1 + 2 * len(kinds)
    figure, axes = plt.subplots(len(examples), columns, figsize=(2.2 * columns, 2.3 * len(examples)))
    for row, s in enumerate(examples):
        crop = _crop(s)
        _show_source(axes[row, 0], s, crop)
        for index, (title, render) in enumerate(kinds):
            for offset, rv_wall_fraction in enumerate((0.0, 1.0)):
                image = render(s, np.random.default_rng([row, index]), rv_wall_fraction)[crop]
                axis = axes[row, 1 + 2 * index + offset]
                axis.imshow(image, cmap="gray", vmin=np.percentile(image, 1), vmax=np.percentile(image, 99))
                axis.set_title(f"{title}{', RV wall' if rv_wall_fraction else ''}", fontsize=7)
    return figure, axes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "synthetic_t1.png")
    parser.add_argument("--clinical-contrasts", action="store_true",
                        help="the evaluation-only clinical contrasts instead of T1 maps and random contrast")
    parser.add_argument("--rv-wall", action="store_true",
                        help="maps without and with the RV free wall at the myocardium's value")
    args = parser.parse_args()
    if args.clinical_contrasts and args.rv_wall:
        parser.error("--clinical-contrasts and --rv-wall are two different figures: give one")
    examples = _examples()
    if args.rv_wall:
        figure, axes = _rv_wall_figure(examples)
    elif args.clinical_contrasts:
        figure, axes = _clinical_contrasts_figure(examples)
    else:
        figure, axes = _t1_figure(examples)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # 256-colour palette PNG: a third of the size of RGBA, no visible loss on these colour maps
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=72)
    Image.open(buffer).convert("RGB").quantize(256).save(args.out, optimize=True)
    print(f"{args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
