"""A uniform weight soup of training runs of one network (docs/t1.md, arm S): each stage's weights averaged key by
key over the runs (BatchNorm statistics included; integer buffers from the first run), written as a run folder that
`compare_sax_models.py --model NAME=RUN` measures and `--ship` exports like a training run of
scripts/train_sax_synthetic.py (it has no metrics.json: `cmr-landmark export` does not take it).

Runs fine-tuned from one start with different seeds usually lie in one basin, where their average is about as good
as each and carries less of either run's draw (Wortsman et al. 2022, "Model soups"). Runs from different starts do
not: their average is no model. The soup has no epoch of its own; its run.json is the first run's recipe, without
its metrics, with the runs' training time summed and ``soup_of`` naming the runs.

    python scripts/weight_soup.py runs/sax_any_consistency_all_random runs/sax_any_pairs_replicate \\
        --out runs/sax_any_soup
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from cmr_landmark.output_paths import write_json_atomically
from cmr_landmark.training import KEPT_AS_GIVEN, STAGES, save_checkpoint


def soup_weights(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The key-by-key mean of ``states`` (floating-point tensors; other buffers from the first); a ValueError where
    their keys or shapes differ, i.e. they are not one network."""
    first = states[0]
    for state in states[1:]:
        if state.keys() != first.keys() or any(state[key].shape != first[key].shape for key in first):
            raise ValueError("the runs are not one network: their weights' names or shapes differ")
    return {key: torch.stack([state[key] for state in states]).mean(dim=0) if value.is_floating_point() else value
            for key, value in first.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (two or more) with <stage>_best.pt each")
    parser.add_argument("--out", type=Path, required=True, help="the soup's run folder (made)")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("a soup needs two or more runs")
    missing = [str(run / f"{stage}_best.pt") for run in args.runs for stage in STAGES
               if not (run / f"{stage}_best.pt").is_file()]
    missing += [str(run / "run.json") for run in args.runs if not (run / "run.json").is_file()]
    if missing:
        parser.error(f"not finished run folders: missing {', '.join(missing)}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        # a run's own folder, or an old one whose other files would pass for the soup's
        parser.error(f"--out {args.out} exists and is not an empty folder")
    runs = [json.loads((run / "run.json").read_text()) for run in args.runs]
    if len({run.get("kind") for run in runs}) > 1:
        parser.error(f"the runs were trained for different kinds {[run.get('kind') for run in runs]}: no one model")
    souped = {}
    for stage in STAGES:
        checkpoints = [torch.load(run / f"{stage}_best.pt", map_location="cpu", weights_only=False)
                       for run in args.runs]
        try:
            # no epoch chosen and none validated: the soup's figures come from measuring it
            souped[stage] = {**checkpoints[0], "model": soup_weights([c["model"] for c in checkpoints]),
                             "epoch": KEPT_AS_GIVEN, "val_mean_mm": math.nan, "metrics": {}}
        except ValueError as error:
            parser.error(f"{stage} stage: {error}")
    args.out.mkdir(parents=True, exist_ok=True)
    for stage, checkpoint in souped.items():
        save_checkpoint(args.out / f"{stage}_best.pt", **checkpoint)
    # the first run's recipe; its metrics were its own epoch's, and the soup cost all the runs' training
    soup = {**{key: value for key, value in runs[0].items() if key != "metrics"},
            "wall_s": sum(run.get("wall_s", 0.0) for run in runs), "soup_of": [str(run) for run in args.runs]}
    write_json_atomically(args.out / "run.json", soup)
    print(f"soup of {len(args.runs)} runs -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
