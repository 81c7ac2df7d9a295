"""How far the derived RV insertion points move between two readings of the contact rule, per public set.

    python scripts/compare_label_rules.py                      # the shipped 1.5 px against 1 px and 2 px
    python scripts/compare_label_rules.py --margins 1.5,2,3    # any margins in pixels

The data README says the RV "touches, after a 1-2 pixel dilation" the myocardium; docs/data.md ("Derivation rule")
quotes these figures for its choice of 1.5 pixels. For each pair of margins and each set: the mean distance in mm
between the two readings' A-RVI and P-RVI where both find them, and the slices where only one finds them. Reads
../shared/data (CMR_LANDMARK_DATA), about a minute for all sets.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence

import numpy as np

from cmr_landmark.datasets import iter_slices
from cmr_landmark.landmarks import STANDARD_LABELS, derive_sax_landmarks

SAX_SETS = ("acdc", "mscmrseg_lge", "myops", "mnms2")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--margins", default="1,1.5,2", help="contact margins in pixels, comma-separated")
    parser.add_argument("--sets", default=",".join(SAX_SETS))
    args = parser.parse_args(argv)
    margins = [float(text) for text in args.margins.split(",")]
    pairs = list(itertools.combinations(margins, 2))
    for dataset in args.sets.split(","):
        apart_mm = {pair: ([], []) for pair in pairs}  # per pair: A-RVI and P-RVI distances where both find them
        found_by_one = dict.fromkeys(pairs, 0)
        slices = [s for s in iter_slices(dataset) if s.view == "sax" and s.labelled]
        for s in slices:
            points = {margin: derive_sax_landmarks(s.mask, STANDARD_LABELS, s.pixel_spacing_mm, contact_px=margin)
                      for margin in margins}
            found = {margin: np.isfinite(points[margin][:2]).all(axis=1) for margin in margins}
            for a, b in pairs:
                for landmark in (0, 1):
                    if found[a][landmark] and found[b][landmark]:
                        offset_mm = (points[a][landmark] - points[b][landmark]) * s.pixel_spacing_mm
                        apart_mm[(a, b)][landmark].append(float(np.linalg.norm(offset_mm)))
                found_by_one[(a, b)] += int(found[a][0] != found[b][0])
        for a, b in pairs:
            anterior, posterior = apart_mm[(a, b)]
            print(f"{dataset} ({len(slices)} slices): {a:g} px vs {b:g} px: A-RVI {np.mean(anterior):.2f} mm, "
                  f"P-RVI {np.mean(posterior):.2f} mm apart; insertion points found by one reading only: "
                  f"{found_by_one[(a, b)]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
