"""Where a short-axis model's misses and false positives lie in the stack, and whether the neighbouring slices'
detections would decide presence better than the slice's own peak probability.

    python scripts/presence_analysis.py --model sax_cine --out reports/sax_cine_presence.md

Part 1, at the model's own probability threshold, every landmark of every slice of the training and validation
splits: whether its slice is the first or last stored slice of its stack (same set, patient and phase) or an
inner one, and whether it lies at an end of the labelled run (a neighbouring slice has the landmark's other state:
labelled next to unlabelled) or inside it.

Part 2, a stack-context presence score: per landmark a logistic regression on the slice's own mirror-pooled peak
probabilities (all three landmarks, as logits), those of the slices before and after it (0 where there is none),
whether it is the first or last slice, its relative position and the stack's length; fitted on the training split
and judged on the validation split by ROC AUC and by detection / false positives at thresholds that give set
false-positive rates on the training split, against the peak probability judged the same way.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cmr_landmark.datasets import dataset_names
from cmr_landmark.detector import Detector
from cmr_landmark.evaluation import evaluate_slices, markdown_table
from cmr_landmark.model_store import find_model
from cmr_landmark.training import load_labelled_slices

TRAIN_FALSE_POSITIVE_RATES = (0.05, 0.10, 0.15, 0.20)
L2_WEIGHT = 1.0  # per sample: 13 inputs against ~1300 samples need little; it keeps separable fits finite


def stacks(slices: Sequence) -> list[list[int]]:
    """Indices of each stack's slices (same set, patient and phase), in stored slice order."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, slice_ in enumerate(slices):
        groups[(slice_.dataset, slice_.patient, slice_.phase)].append(index)
    return [sorted(indices, key=lambda i: slices[i].slice_index) for indices in groups.values()]


def error_location_rows(split: str, landmarks: Sequence[str], probability: np.ndarray, labelled: np.ndarray,
                        threshold: float, stack_list: list[list[int]]) -> list[dict]:
    rows = []
    for k, name in enumerate(landmarks):
        counts: Counter = Counter()
        for stack in stack_list:
            for position, index in enumerate(stack):
                place = "first" if position == 0 else "last" if position == len(stack) - 1 else "inner"
                neighbours = [stack[j] for j in (position - 1, position + 1) if 0 <= j < len(stack)]
                at_run_end = any(labelled[j, k] != labelled[index, k] for j in neighbours)
                counts[f"{place} slices"] += 1
                counts[f"{place} labelled"] += int(labelled[index, k])
                found = probability[index, k] >= threshold
                if found != labelled[index, k]:
                    kind = "misses" if labelled[index, k] else "false positives"
                    counts[f"{kind} at run end" if at_run_end else f"{kind} inside run"] += 1
                    counts[f"{kind} first/last slice"] += int(place != "inner")
        rows.append({"split": split, "landmark": name, **{key: counts[key] for key in (
            "first slices", "first labelled", "last slices", "last labelled", "inner slices", "inner labelled",
            "misses at run end", "misses inside run", "misses first/last slice",
            "false positives at run end", "false positives inside run", "false positives first/last slice")}})
    return rows


def context_features(probability: np.ndarray, stack_list: list[list[int]]) -> torch.Tensor:
    """(N, 13) features: own / previous / next slice's peak logits (3 each, 0 where there is no such slice),
    first / last slice flags, relative position in the stack and the stack's length."""
    clipped = np.clip(probability, 1e-4, 1 - 1e-4)
    logits = np.log(clipped / (1 - clipped))
    features = np.zeros((len(probability), 13), np.float32)
    for stack in stack_list:
        for position, index in enumerate(stack):
            features[index, 0:3] = logits[index]
            if position > 0:
                features[index, 3:6] = logits[stack[position - 1]]
            if position < len(stack) - 1:
                features[index, 6:9] = logits[stack[position + 1]]
            features[index, 9] = position == 0
            features[index, 10] = position == len(stack) - 1
            features[index, 11] = position / max(len(stack) - 1, 1)
            features[index, 12] = len(stack)
    return torch.from_numpy(features)


def fit_logistic(x: torch.Tensor, y: torch.Tensor) -> torch.nn.Linear:
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], 1)
    optimiser = torch.optim.LBFGS(model.parameters(), max_iter=300)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y)
                + L2_WEIGHT * model.weight.pow(2).sum() / len(x))
        loss.backward()
        return loss

    optimiser.step(closure)
    return model


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = score[positive], score[~positive]
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def operating_points(train_score: np.ndarray, train_positive: np.ndarray, val_score: np.ndarray,
                     val_positive: np.ndarray) -> list[str]:
    """'detection / false positives' (%) on validation at thresholds set on the training split's negatives."""
    cells = []
    for rate in TRAIN_FALSE_POSITIVE_RATES:
        threshold = np.quantile(train_score[~train_positive], 1 - rate)
        cells.append(f"{100 * (val_score[val_positive] > threshold).mean():.1f} / "
                     f"{100 * (val_score[~val_positive] > threshold).mean():.1f}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sax_cine")
    parser.add_argument("--sequence", default="cine")
    parser.add_argument("--datasets", default="acdc,myops")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    detector = Detector(find_model("sax", args.sequence, args.model), use_bf16=False)
    landmarks = detector.spec.landmarks
    splits = {}
    for split in ("train", "val"):
        slices = load_labelled_slices(dataset_names(args.datasets), split, "sax", args.sequence)
        evaluation = evaluate_slices(detector, slices)
        splits[split] = (evaluation.probability, evaluation.labelled, stacks(slices))

    lines = [f"# Presence of {args.model}'s landmarks by stack position ({args.datasets}, {args.sequence})", "",
             f"Threshold {detector.spec.probability_threshold} (the manifest's). Run end: a neighbouring slice has "
             "the landmark's other state.", ""]
    lines.append(markdown_table([row for split, (probability, labelled, stack_list) in splits.items()
                                 for row in error_location_rows(split, landmarks, probability, labelled,
                                                                detector.spec.probability_threshold, stack_list)]))
    train_x, val_x = (context_features(probability, stack_list)
                      for probability, _, stack_list in (splits["train"], splits["val"]))
    mean, sd = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, val_x = (train_x - mean) / sd, (val_x - mean) / sd
    header = ["landmark", "score", "AUC train", "AUC val"] + [
        f"val det / FP % at train FP {rate:.0%}" for rate in TRAIN_FALSE_POSITIVE_RATES]
    (train_p, train_l, _), (val_p, val_l, _) = splits["train"], splits["val"]
    rows = []
    for k, name in enumerate(landmarks):
        model = fit_logistic(train_x, torch.from_numpy(train_l[:, k].astype(np.float32)))
        with torch.no_grad():
            train_score, val_score = (model(x)[:, 0].numpy() for x in (train_x, val_x))
        for score_name, train_s, val_s in (("peak probability", train_p[:, k], val_p[:, k]),
                                           ("stack context", train_score, val_score)):
            rows.append(dict(zip(header, [name, score_name, f"{roc_auc(train_s, train_l[:, k]):.3f}",
                                          f"{roc_auc(val_s, val_l[:, k]):.3f}",
                                          *operating_points(train_s, train_l[:, k], val_s, val_l[:, k])],
                                 strict=True)))
    lines += ["## Stack-context presence score against the peak probability", "", markdown_table(rows)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
