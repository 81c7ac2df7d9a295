"""Test-time BatchNorm statistics from the series itself (docs/t1.md, "Normalisation statistics from the series
itself"; Schneider et al., NeurIPS 2020).

A shipped model's BatchNorms normalise by the statistics of its training images. Here each BatchNorm normalises
a series (one patient's stack of one phase and one contrast, ``datasets.stack_indices``) with ``N/(N+n)`` training
+ ``n/(N+n)`` series statistics (n images in the series, prior strength N in images). Two forms: by default two
passes, the first collecting every BatchNorm's per-channel input mean and variance over the series under the
training statistics, the second normalising with the blend and giving the points; ``--online`` one pass, each
BatchNorm measuring the series as it arrives there (Schneider et al.'s form). The control is the same network (the
weights embedded in the model file) without adaptation. fp32, 2 threads; about 3 min per arm over the sets:

    CMR_LANDMARK_BF16=0 python scripts/series_normalisation_experiment.py sax_any --prior-images 16 4 \\
        --out /tmp/series_norm
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from compare_sax_models import evaluation_sets  # a sibling script (scripts/ is on sys.path when run)
from torch import nn

from cmr_landmark.datasets import stack_indices
from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import Evaluation, paired_difference, predict
from cmr_landmark.model_store import find_model
from cmr_landmark.network import LandmarkCascade
from cmr_landmark.training import load_stage

SELECTION_SETS = ("t1_synthetic", "random_contrast_uneven_blood")
JUDGING_SETS = ("t2_map", "t2star_map", "ecv_map", "t2w_black_blood")
REAL_SETS = ("cine", "lge", "mnms2_cine")


class SeriesBatchNorm(nn.Module):
    """A frozen BatchNorm2d that can collect its input's statistics over a series and then normalise with a blend
    of them and its training statistics."""

    def __init__(self, batch_norm: nn.BatchNorm2d) -> None:
        super().__init__()
        self.eps = batch_norm.eps
        for name, value in (("weight", batch_norm.weight), ("bias", batch_norm.bias),
                            ("training_mean", batch_norm.running_mean), ("training_var", batch_norm.running_var)):
            self.register_buffer(name, value.detach().clone())
        self.register_buffer("sums", torch.zeros(3, len(self.training_mean), dtype=torch.float64))  # n, x, x^2
        self.reset()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.online_training_share is not None:  # the batch (the series) is measured as it passes, layer by layer
            share = self.online_training_share
            batch_var, batch_mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            self.mean = share * self.training_mean + (1 - share) * batch_mean
            self.var = share * self.training_var + (1 - share) * batch_var
        if self.collecting:
            values = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)
            self.sums += torch.stack([torch.full((x.shape[1],), float(values.shape[1]), dtype=torch.float64),
                                      values.sum(1), (values ** 2).sum(1)])
        scale = self.weight / torch.sqrt(self.var + self.eps)
        return x * scale[None, :, None, None] + (self.bias - self.mean * scale)[None, :, None, None]

    def reset(self, online_training_share: float | None = None) -> None:
        """Back to the training statistics with nothing collected; ``online_training_share``: from now on each
        batch is normalised with this share of them and the rest of its own."""
        self.mean, self.var, self.collecting = self.training_mean, self.training_var, False
        self.online_training_share = online_training_share
        self.sums.zero_()

    def adapt(self, training_share: float) -> None:
        """Normalise with ``training_share`` of the training statistics and the rest of the collected ones."""
        count, total, squares = self.sums
        series_mean = total / count
        series_var = squares / count - series_mean ** 2
        self.mean = (training_share * self.training_mean + (1 - training_share) * series_mean.float())
        self.var = (training_share * self.training_var + (1 - training_share) * series_var.float())
        self.collecting = False


def with_series_batch_norms(module: nn.Module) -> list[SeriesBatchNorm]:
    """Replace every BatchNorm2d under ``module`` in place; the replacements, in order."""
    replaced = []
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            replacement = SeriesBatchNorm(child)
            setattr(module, name, replacement)
            replaced.append(replacement)
        else:
            replaced.extend(with_series_batch_norms(child))
    return replaced


class SeriesAdaptedDetector:
    """A Detector whose network's BatchNorms take ``prior_images``-weighted training statistics and the rest from
    the images of each ``detect`` call (one series); ``prior_images`` None: no adaptation (the control).

    ``online`` False: two passes, the first collecting every layer's series statistics under the training
    statistics; True: one pass, each layer measuring the series as it arrives there, so that a layer's statistics
    are those of its input after the layers before it were adapted (Schneider et al.'s implementation)."""

    def __init__(self, detector: Detector, cascade: LandmarkCascade, prior_images: float | None,
                 online: bool = False) -> None:
        self.detector, self.spec, self.prior_images, self.online = detector, detector.spec, prior_images, online
        self.batch_norms = with_series_batch_norms(cascade)
        detector.model = cascade

    def detect(self, images, pixel_spacing_mm, same_slice=False, probability_threshold=None):
        share = None if self.prior_images is None else self.prior_images / (self.prior_images + len(images))
        for batch_norm in self.batch_norms:
            batch_norm.reset(share if self.online else None)
        if share is not None and not self.online:  # pass 1 collects under the training statistics
            for batch_norm in self.batch_norms:
                batch_norm.collecting = True
            self.detector.detect(images, pixel_spacing_mm, same_slice, probability_threshold=0.0)
            for batch_norm in self.batch_norms:
                batch_norm.adapt(share)
        return self.detector.detect(images, pixel_spacing_mm, same_slice, probability_threshold)


def evaluate_by_series(detector: SeriesAdaptedDetector, slices: Sequence, threshold: float) -> Evaluation:
    points = np.full((len(slices), len(detector.spec.landmarks), 2), np.nan)
    probability = np.zeros((len(slices), len(detector.spec.landmarks)))
    for indices in stack_indices(slices):
        # predict passes a series of one shape and spacing to detect whole up to 32 images (the sets' stacks have
        # at most 18): a series split there would be adapted in parts
        if len(indices) > 32 or len({(slices[i].image.shape, tuple(slices[i].pixel_spacing_mm)) for i in indices}) > 1:
            raise ValueError(f"a series of {len(indices)} images of more than one shape or spacing, or over 32")
        points[indices], probability[indices] = predict(detector, [slices[i] for i in indices])
    return Evaluation(view="sax", probability_threshold=threshold, predicted_rc=points, probability=probability,
                      truth_rc=np.stack([np.asarray(s.landmarks_rc, dtype=np.float64) for s in slices]),
                      spacing_mm=np.stack([np.asarray(s.pixel_spacing_mm, dtype=np.float64) for s in slices]))


def pooled(evaluations: Sequence[Evaluation]) -> dict:
    labelled = np.concatenate([e.labelled.ravel() for e in evaluations])
    detected = np.concatenate([e.detected.ravel() for e in evaluations])
    distances = np.concatenate([e.distances_mm.ravel() for e in evaluations])
    detection = 100 * (labelled & detected).sum() / labelled.sum()
    false_positives = 100 * (~labelled & detected).sum() / max(1, (~labelled).sum())
    return {"detection_pct": detection, "false_positive_pct": false_positives, "j": detection - false_positives,
            "mean_mm": float(np.nanmean(np.where(labelled, distances, np.nan))), "distances_mm": distances}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a short-axis model in the manifest whose file carries its training state")
    parser.add_argument("--prior-images", type=float, nargs="+", default=[16.0, 4.0])
    parser.add_argument("--online", action="store_true", help="one pass, each layer measuring the series as it "
                        "arrives (default: two passes, statistics collected under the training ones)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the per-arm results (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    spec = find_model("sax", "any", name=args.model)
    sets = evaluation_sets(SELECTION_SETS + JUDGING_SETS + REAL_SETS)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Evaluation]] = {}
    for prior in [None, *args.prior_images]:
        arm = "control" if prior is None else f"N={prior:g}"
        cascade = LandmarkCascade(load_stage(spec.file, "coarse", "sax"), load_stage(spec.file, "fine", "sax")).eval()
        detector = SeriesAdaptedDetector(Detector(spec, use_bf16=False), cascade, prior, args.online)
        results[arm] = {name: evaluate_by_series(detector, slices, spec.probability_threshold)
                        for name, slices in sets.items()}
        summary = {}
        for group, names in (("selection", SELECTION_SETS), ("judging", JUDGING_SETS),
                             *((name, (name,)) for name in (*JUDGING_SETS, *REAL_SETS))):
            figures = pooled([results[arm][name] for name in names])
            control = pooled([results["control"][name] for name in names])
            difference, half_width = paired_difference(figures["distances_mm"], control["distances_mm"])
            summary[group] = {key: value for key, value in figures.items() if key != "distances_mm"}
            summary[group].update(paired_mm=difference, paired_half_width_mm=half_width)
            print(f"{arm:>8} {group:>28}: det {figures['detection_pct']:5.1f} FP {figures['false_positive_pct']:5.1f}"
                  f" J {figures['j']:5.1f}  {figures['mean_mm']:.2f} mm ({difference:+.2f} +- {half_width:.2f})",
                  flush=True)
        (args.out / f"{arm}.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
