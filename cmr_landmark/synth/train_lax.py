"""Train the long-axis cascade on synthetic slices (cmr_landmark.synth.lax) with the project's training pipeline.

    cache synthetic slices (one npz per variant under cache_dir(); every variant renders the same scenes)
    -> training.train_stage for the coarse, then the fine U-Net -> run folder <out>/<variant>/{coarse,fine}_best.pt
    -> training.load_cascade -> export (cmr_landmark.lax_evaluation measures it on the real M&Ms-2 subject).

Model selection uses held-out synthetic slices only: the one labelled real long-axis subject (M&Ms-2 001) is
kept for the final measurement and never chooses an epoch. ``--real-phases ED`` (or ES) adds that subject's
labelled frame of the phase to the training items, ``--real-repeats`` times per epoch, each copy with its own
augmentation; the other phase stays unseen, so it measures the run (docs/lax.md, "One real frame in training").
The fine stage trains on crops around the true landmarks (jittered), so the two stages are independent and can run
in either order.

    python -m cmr_landmark.synth.train_lax --variants mixed --slices 1600 --epochs-coarse 12 --epochs-fine 10 \
        --out .cache/runs/lax

A second run into an ``--out`` that holds checkpoints is refused unless ``--resume`` continues it, with the settings
it was started with (``<out>/train_lax.json``; a stage it lacks starts afresh); ``--stages ""`` trains nothing and
only exports. ``--export-to`` refuses to replace a ``lax_cine`` already in that folder (the shipped one in models/,
say) unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..augment import sample_on_grid
from ..config import COARSE_GRID, DEFAULT_PROBABILITY_THRESHOLD, FINE_GRID_BY_VIEW, LAX_FINE_SEARCH_RADIUS_MM
from ..datasets import Slice
from ..export import export_cascade
from ..geometry import distances_mm
from ..heatmaps import decode_heatmaps
from ..lax_evaluation import LABELLED_PHASE_NAMES, mnms2_lax_slices
from ..model_store import model_names
from ..output_paths import write_json_atomically
from ..training import (
    DEFAULT_MAX_ROTATION_DEG,
    DEFAULT_WIDTHS,
    HeatmapDataset,
    coarse_predictions,
    load_cascade,
    load_stage_weights,
    mean_distance_mm,
    refuse_changed_resume,
    setup_distributed,
    train_stage,
)
from .lax import ANATOMY_RANGES, VARIANTS, CachedLaxSlice, cache_synthetic_lax, load_synthetic_lax

VALIDATION_FRACTION = 0.08  # of the synthetic slices, held out to choose epochs
RUN_SETTINGS_FILE = "train_lax.json"  # in --out: the settings a --resume is checked against


def fine_validation(model: nn.Module, slices: Sequence[CachedLaxSlice], device: torch.device) -> tuple[float, dict]:
    """Mean distance (mm) of the fine stage alone on crops centred on the true landmarks' mean (no augmentation)."""
    dataset = HeatmapDataset(slices, "lax", "fine", augment=False)
    model.eval()
    errors = []
    with torch.inference_mode():
        for start in range(0, len(dataset), 64):
            indices = range(start, min(start + 64, len(dataset)))
            x = torch.stack([dataset[i][0] for i in indices]).to(device)
            points, _ = decode_heatmaps(torch.softmax(model(x).float(), dim=1).cpu())
            for offset, index in enumerate(indices):
                truth_grid = grid_truth(dataset, index)
                errors.append(distances_mm(points[offset], truth_grid, np.full(2, dataset.grid.pixel_mm)))
    errors = np.stack(errors)
    return float(np.nanmean(errors)), {"per_landmark_mm": np.nanmean(errors, axis=0).tolist()}


def grid_truth(dataset: HeatmapDataset, index: int) -> np.ndarray:
    """The true landmarks of item ``index`` in the fine grid's pixels (as the un-augmented item samples it)."""
    _, points, _ = sample_on_grid(
        dataset.images[index], dataset.spacings[index], dataset.landmarks[index], dataset.grid, "lax",
        centre_rc=dataset.centre_rc(index, None),
    )
    return points


def real_training_frames(phases: Sequence[str]) -> list[Slice]:
    """The labelled real long-axis frames (M&Ms-2 4CH) of ``phases`` ('ED', 'ES'), for training beside the synthetic
    slices; a phase the data lacks is an error rather than a silently synthetic-only run."""
    labelled, _ = mnms2_lax_slices()
    by_phase = {LABELLED_PHASE_NAMES[s.phase]: s for s in labelled}
    missing = sorted(set(phases) - set(by_phase))
    if missing:
        raise ValueError(f"no labelled real long-axis frame for phase(s) {missing}; have {sorted(by_phase)}")
    return [by_phase[phase] for phase in phases]


def train_synthetic_stage(
    variant: str,
    stage: str,
    n_slices: int,
    seeds: Sequence[int],
    epochs: int,
    out_dir: Path,
    batch_size: int = 24,
    widths: tuple[int, ...] = DEFAULT_WIDTHS,
    max_steps_per_epoch: int | None = None,
    family: str = "broad",
    init_from: Path | None = None,
    distance_weight: float = 0.0,
    train_seed: int | None = None,
    lr_hold_epochs: int = 0,
    real_frames: Sequence[Slice] = (),
    real_repeats: int = 0,
    random_convolution_fraction: float = 0.0,
    max_rotation_deg: float = DEFAULT_MAX_ROTATION_DEG,
    resume: bool = False,
) -> dict:
    """Train one stage on the cached synthetic sets (one per seed; ``variant``, anatomy ``family``); metrics of its
    best epoch. The first ``VALIDATION_FRACTION`` of each set is held out.

    ``init_from``: a run folder, checkpoint or shipped model whose ``stage`` weights start the training
    (fine-tuning; the network takes their widths). ``distance_weight``: the fine stage's distance term
    (``training.train_stage``); ignored for the coarse stage, which the term does not apply to. ``train_seed``
    (default: the first set seed) seeds the initial weights, the augmentation and the shuffle, so runs on the same
    synthetic sets can differ only by it (docs/lax.md, "How much a rerun moves the real figures").
    ``lr_hold_epochs``: no learning-rate halving in that many first epochs (``training.train_stage``).
    ``real_frames``: real labelled slices added to the training items ``real_repeats`` times each (never to the
    validation, which stays synthetic). ``random_convolution_fraction``: that share of the training items also
    goes through random convolutions (``augment.RandomConvolutions``; docs/lax.md). ``max_rotation_deg``: the
    augmentation turns every training item by up to that (docs/lax.md, "The real frames at every orientation").
    ``resume``: continue ``out_dir``'s ``<stage>_last.pt`` if there is one; otherwise the stage starts afresh and
    replaces any checkpoints there."""
    train, val = [], []
    for set_seed in seeds:
        slices = load_synthetic_lax(cache_synthetic_lax(n_slices, set_seed, (variant,), family)[0])
        n_val = max(1, int(VALIDATION_FRACTION * len(slices)))
        train += slices[n_val:]
        val += slices[:n_val]
    train += list(real_frames) * real_repeats
    device = setup_distributed()
    if stage == "coarse":
        def validate(model: nn.Module) -> tuple[float, dict]:
            mean_mm, per_landmark = mean_distance_mm(coarse_predictions(model, val, device), val)
            return mean_mm, {"per_landmark_mm": per_landmark}
    else:
        def validate(model: nn.Module) -> tuple[float, dict]:
            return fine_validation(model, val, device)
    init_state = load_stage_weights(init_from, stage) if init_from else None
    _, metrics = train_stage(stage, train, val, "lax", out_dir, epochs, validate, init_state=init_state,
                             batch_size=batch_size, seed=seeds[0] if train_seed is None else train_seed,
                             widths=widths,
                             max_steps_per_epoch=max_steps_per_epoch,
                             distance_weight=distance_weight if stage == "fine" else 0.0,
                             lr_hold_epochs=lr_hold_epochs,
                             random_convolution_fraction=random_convolution_fraction,
                             max_rotation_deg=max_rotation_deg, resume=resume)
    return {"variant": variant, "stage": stage, **metrics}


def export_lax_cascade(run_dir: Path, folder: Path, card: str = "", extra: dict | None = None,
                       fine_search_radius_mm: float | None = None) -> Path:
    """The best coarse and fine stages of ``run_dir`` as the shipped ``lax_cine`` model in ``folder``, with their
    unfrozen weights embedded so a later run can start from (or recombine) either stage."""
    cascade = load_cascade(run_dir, "lax")
    return export_cascade(cascade, "lax_cine", "lax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["lax"],
                          DEFAULT_PROBABILITY_THRESHOLD, folder, card=card, extra=extra, embed_training_state=True,
                          fine_search_radius_mm=fine_search_radius_mm)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmr_landmark.synth.train_lax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="mixed", help=f"comma-separated, of {sorted(VARIANTS)}")
    parser.add_argument("--slices", type=int, default=1600, help="synthetic slices per variant (8%% held out)")
    parser.add_argument("--seed", default="0", help="synthetic set seed; comma-separated seeds train on their union")
    parser.add_argument("--anatomy", default="broad", choices=sorted(ANATOMY_RANGES), help="anatomy family")
    parser.add_argument("--init-from", type=Path, default=None, help="run folder to fine-tune from")
    parser.add_argument("--stages", default="coarse,fine", help="stages to train (none: only export)")
    parser.add_argument("--epochs-coarse", type=int, default=12)
    parser.add_argument("--epochs-fine", type=int, default=10)
    parser.add_argument("--max-steps-per-epoch", type=int, default=None)
    parser.add_argument("--widths", default=",".join(map(str, DEFAULT_WIDTHS)), help="U-Net widths, e.g. 16,32,64,128")
    parser.add_argument("--distance-loss-weight", type=float, default=0.0,
                        help="fine stage: weight (per mm) of the reported point's distance to its label "
                             "(training.point_distance_loss)")
    parser.add_argument("--train-seed", type=int, default=None,
                        help="seed of the initial weights, augmentation and shuffle (default: the first --seed)")
    parser.add_argument("--lr-hold-epochs", type=int, default=0,
                        help="no learning-rate halving in this many first epochs of each stage")
    parser.add_argument("--real-phases", default="",
                        help="comma-separated labelled real M&Ms-2 4CH phases (ED, ES) to train on beside the "
                             "synthetic slices")
    parser.add_argument("--real-repeats", type=int, default=0,
                        help="with --real-phases: each real frame this many times per epoch")
    parser.add_argument("--random-convolution-fraction", type=float, default=0.0,
                        help="share of the training items also put through random convolutions (docs/lax.md)")
    parser.add_argument("--max-rotation-deg", type=float, default=DEFAULT_MAX_ROTATION_DEG,
                        help="augmentation: every training item turned by a uniform angle within +- this (180: any "
                             "orientation)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoints (<variant>/<stage>_last.pt); without it "
                             "an --out holding checkpoints is refused")
    parser.add_argument("--export-to", type=Path, default=None,
                        help="after training, export <out>/<first variant> as lax_cine into this models folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --export-to: replace a lax_cine model already there (e.g. the shipped one in "
                             "models/)")
    parser.add_argument("--card", type=Path, default=None, help="markdown model card to ship with the export")
    parser.add_argument("--fine-search-radius-mm", type=float, default=LAX_FINE_SEARCH_RADIUS_MM,
                        help="exported model: the fine stage looks for each landmark only this near its coarse point "
                             f"(default {LAX_FINE_SEARCH_RADIUS_MM:g}, as lax_cine and export)")
    parser.add_argument("--measured", type=Path, default=None,
                        help="JSON of measured figures (lax_evaluation's lax_measured.json) for the manifest entry")
    args = parser.parse_args(argv)
    real_phases = [phase for phase in args.real_phases.split(",") if phase]
    if bool(real_phases) != (args.real_repeats > 0):
        parser.error("--real-phases and a positive --real-repeats go together")
    if not set(real_phases) <= set(LABELLED_PHASE_NAMES.values()):
        parser.error(f"--real-phases: of {sorted(LABELLED_PHASE_NAMES.values())}, got {real_phases}")
    variants = [v for v in args.variants.split(",") if v]
    stages = [stage for stage in args.stages.split(",") if stage]
    seeds = [int(seed) for seed in args.seed.split(",")]
    widths = tuple(int(w) for w in args.widths.split(","))
    # train_stage would continue any <stage>_last.pt it finds, whatever this call's settings: a run with other widths
    # then fails on the state_dict, one with other data re-exports the old weights under this call's description
    earlier = [str(path) for variant in variants for stage in ("coarse", "fine")
               if (path := args.out / variant / f"{stage}_last.pt").exists()]
    if stages and earlier and not args.resume:
        parser.error(f"--out {args.out} holds an earlier run's checkpoints ({', '.join(earlier)}): --resume continues "
                     "it, another --out starts afresh")
    settings = {  # what a run is: a resume must not change it (epochs, stages, variants and threads may)
        "slices": args.slices, "seeds": seeds, "anatomy": args.anatomy,
        "init_from": str(args.init_from.resolve()) if args.init_from else "", "widths": list(widths),
        "batch_size": args.batch_size, "max_steps_per_epoch": args.max_steps_per_epoch,
        "distance_loss_weight": args.distance_loss_weight, "train_seed": args.train_seed,
        "lr_hold_epochs": args.lr_hold_epochs, "real_phases": real_phases, "real_repeats": args.real_repeats,
        "random_convolution_fraction": args.random_convolution_fraction, "max_rotation_deg": args.max_rotation_deg,
    }
    settings_path = args.out / RUN_SETTINGS_FILE
    # a resume, or an export of a run (whose manifest entry describes the run from these flags), must be the run it
    # continues or exports; a run from before the file existed is not checked
    if (args.resume or not stages) and settings_path.exists():
        refuse_changed_resume(parser, args.out, json.loads(settings_path.read_text()), settings)
    if args.export_to and not args.overwrite and "lax_cine" in model_names(args.export_to):
        parser.error(f"{args.export_to} already has a model 'lax_cine': give --export-to a folder of your own, or "
                     "--overwrite to replace it")
    real_frames = real_training_frames(real_phases) if real_phases else []
    torch.set_num_threads(args.threads)
    if stages:  # written before training: a resume of an interrupted run is checked against it
        args.out.mkdir(parents=True, exist_ok=True)
        write_json_atomically(settings_path, settings)
    for seed in seeds if stages else ():  # an export-only call needs no synthetic slices
        cache_synthetic_lax(args.slices, seed, variants, args.anatomy)
    epochs = {"coarse": args.epochs_coarse, "fine": args.epochs_fine}
    results = [
        train_synthetic_stage(variant, stage, args.slices, seeds, epochs[stage], args.out / variant,
                              args.batch_size, widths, args.max_steps_per_epoch, args.anatomy, args.init_from,
                              args.distance_loss_weight, args.train_seed, args.lr_hold_epochs, real_frames,
                              args.real_repeats, args.random_convolution_fraction, args.max_rotation_deg,
                              args.resume)
        for variant in variants
        for stage in stages
    ]
    if results:  # an export-only call (no stage) keeps the record of the run that trained the stages
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "synthetic_validation.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
        print(json.dumps(results, default=float), flush=True)
    if args.export_to:
        start = f", fine-tuned from {args.init_from}" if args.init_from else ""
        real = (f" and the real M&Ms-2 001 4CH {'+'.join(real_phases)} frame(s), {args.real_repeats} times per "
                "epoch" if real_phases else " only")
        extra = {"trained_on": f"synthetic long-axis slices{real} ({args.slices} per seed, anatomy {args.anatomy}, "
                               f"variant {variants[0]}, seeds {args.seed}{start}"
                               + (f", training seed {args.train_seed}" if args.train_seed is not None else "")
                               + (f", fine stage with the distance term, weight {args.distance_loss_weight} per mm"
                                  if args.distance_loss_weight else "")
                               + (f", random convolutions on {args.random_convolution_fraction:.0%} of the items"
                                  if args.random_convolution_fraction else "")
                               + (f", rotations within +-{args.max_rotation_deg:g} degrees"
                                  if args.max_rotation_deg != DEFAULT_MAX_ROTATION_DEG else "") + ")"}
        if real_phases:
            extra["training_patients"] = sorted({f"{frame.dataset}/{frame.patient}" for frame in real_frames})
        if args.measured:
            extra["measured"] = json.loads(args.measured.read_text())
        card = args.card.read_text() if args.card else ""
        print(export_lax_cascade(args.out / variants[0], args.export_to, card, extra, args.fine_search_radius_mm),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
