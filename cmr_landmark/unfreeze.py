"""Fine-tunable weights of a shipped model that was frozen without its training state.

Freezing (``export.export_cascade``) folds each BatchNorm into the convolution before it: the file keeps
W' = W g / sqrt(v + eps) and b' = beta - m g / sqrt(v + eps), and W, g, beta, m, v are gone for good. Models
exported with ``embed_training_state`` carry their weights for fine-tuning; one exported without them (the first
``lax_cine``) can still be started from: each convolution takes W', and each BatchNorm is rebuilt so that the
network is exactly the shipped one in eval mode (running mean/var = mean/variance of W'x over the stage's own
training images, gamma = sqrt(var + eps), beta = mean + b'). In training mode a BatchNorm then normalises by the
batch's statistics, which are close to those running ones, so fine-tuning starts near the shipped function
instead of from one whose every layer is rescaled.

    git show 1787a9c:models/lax_cine.pt > .cache/lax_cine_synthetic_only.pt   # the first lax_cine release
    python -m cmr_landmark.unfreeze .cache/lax_cine_synthetic_only.pt --out runs/lax_shipped_unfrozen
    python -m cmr_landmark.synth.train_lax ... --init-from runs/lax_shipped_unfrozen
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .export import freeze_cascade, has_training_state
from .network import LandmarkCascade, UNet
from .training import STAGES

CONVOLUTIONS = ("aten::conv2d", "aten::conv_transpose2d")


def _convolutions(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def graph_convolutions(frozen: torch.jit.ScriptModule, stage: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) constants of each convolution in the graph of ``stage``'s exported method, in graph order."""
    graph = getattr(frozen, f"{stage}_probabilities").graph
    pairs = []
    for node in graph.nodes():
        if node.kind() in CONVOLUTIONS:
            weight, bias = (value.node().output().toIValue() for value in list(node.inputs())[1:3])
            pairs.append((weight, bias))
    return pairs


def _unet_shape(convolutions: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[int, tuple[int, ...]]:
    """(landmarks, widths) of the U-Net whose frozen convolutions these are: its 3x3 convolutions have one output
    width per level, and its 1x1 head one channel per landmark plus the background."""
    widths = sorted({int(w.shape[0]) for w, _ in convolutions if w.shape[-1] == 3})
    heads = [w for w, _ in convolutions if w.shape[-1] == 1]
    if len(heads) != 1 or not widths:
        raise ValueError("not a frozen UNet: expected 3x3 convolutions and one 1x1 head")
    return int(heads[0].shape[0]) - 1, tuple(widths)


def _graph_order(unet: UNet) -> list[int]:
    """Index (in ``unet.modules()`` order) of each convolution as its frozen graph meets them: found by freezing a
    copy whose k-th convolution holds the value k + 1 and whose BatchNorms are identities."""
    reference = LandmarkCascade(UNet(unet.head.out_channels - 1, tuple(b[0].out_channels for b in unet.encoders)),
                                UNet(1, (1,)))
    with torch.no_grad():
        for k, convolution in enumerate(_convolutions(reference.coarse)):
            convolution.weight.fill_(k + 1)
        bn = next(m for m in reference.coarse.modules() if isinstance(m, nn.BatchNorm2d))
        scale = float(torch.sqrt(bn.running_var[0] + bn.eps))  # what folding an identity BatchNorm divides by
    frozen = freeze_cascade(reference.eval())  # frozen as export_cascade freezes, so the graph order is the same
    return [int(round(float(weight.flatten()[0]) * scale)) - 1
            for weight, _ in graph_convolutions(frozen, "coarse")]


def folded_cascade(path: Path) -> LandmarkCascade:
    """The cascade of a frozen model file, each BatchNorm an identity after its convolution's folded weights: the
    same function as the file in eval mode (see :func:`calibrate_batchnorm` before training it)."""
    frozen = torch.jit.load(str(path), map_location="cpu")
    stages = {}
    for stage in STAGES:
        convolutions = graph_convolutions(frozen, stage)
        n_landmarks, widths = _unet_shape(convolutions)
        unet = UNet(n_landmarks, widths)
        modules = _convolutions(unet)
        followed_by = {}  # convolution index -> the BatchNorm after it
        for block in [*unet.encoders, *unet.decoders]:
            followed_by[modules.index(block[0])], followed_by[modules.index(block[3])] = block[1], block[4]
        order = _graph_order(unet)
        if len(order) != len(convolutions):
            raise ValueError(f"{path}: the {stage} graph has {len(convolutions)} convolutions, a UNet of widths "
                             f"{widths} has {len(order)}")
        with torch.no_grad():
            for k, (weight, bias) in zip(order, convolutions, strict=True):
                modules[k].weight.copy_(weight)
                if k in followed_by:  # W'x + b': an identity BatchNorm carries b'
                    bn = followed_by[k]
                    bn.running_mean.zero_(), bn.running_var.fill_(1 - bn.eps), bn.weight.fill_(1)
                    bn.bias.copy_(bias)
                else:
                    modules[k].bias.copy_(bias)
        stages[stage] = unet
    return LandmarkCascade(stages["coarse"], stages["fine"]).eval()


def calibrate_batchnorm(unet: UNet, images: torch.Tensor, batch_size: int = 32) -> None:
    """Give each BatchNorm of ``unet`` the running statistics of its input over ``images`` (N, 1, H, W) while
    keeping the eval-mode function unchanged (gamma = sqrt(var + eps), beta = mean + the former beta, which must
    be the one of an identity BatchNorm, as :func:`folded_cascade` leaves them)."""
    batchnorms = [m for m in unet.modules() if isinstance(m, nn.BatchNorm2d)]
    sums: dict[int, list] = {j: [0.0, 0.0, 0] for j in range(len(batchnorms))}

    def accumulate(j: int, inputs: tuple[torch.Tensor, ...]) -> None:
        y = inputs[0].double()
        sums[j][0] = sums[j][0] + y.sum((0, 2, 3))
        sums[j][1] = sums[j][1] + (y * y).sum((0, 2, 3))
        sums[j][2] += y.numel() // y.shape[1]

    handles = [bn.register_forward_hook(lambda _m, inputs, _o, j=j: accumulate(j, inputs))
               for j, bn in enumerate(batchnorms)]
    unet.eval()
    try:
        with torch.no_grad():
            for batch in images.split(batch_size):
                unet(batch)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for j, bn in enumerate(batchnorms):
            total, squares, count = sums[j]
            mean = total / count
            variance = (squares / count - mean * mean).clamp_min(1e-12)
            folded_bias = bn.bias.double().clone()
            bn.running_mean.copy_(mean), bn.running_var.copy_(variance)
            bn.weight.copy_(torch.sqrt(variance + bn.eps)), bn.bias.copy_(mean + folded_bias)


def lax_training_slices(n_slices: int, seed: int, anatomy: str) -> list:
    """The training part (validation slices held out as train_lax holds them out) of a cached synthetic set."""
    from .synth.lax import cache_synthetic_lax, load_synthetic_lax
    from .synth.train_lax import VALIDATION_FRACTION

    slices = load_synthetic_lax(cache_synthetic_lax(n_slices, seed, ("mixed",), anatomy)[0])
    return slices[max(1, int(VALIDATION_FRACTION * len(slices))):]


def lax_calibration_images(slices: Sequence, stage: str, every: int = 3) -> torch.Tensor:
    """Every ``every``-th item of ``slices`` on ``stage``'s grid, augmented as in training."""
    from .training import HeatmapDataset

    dataset = HeatmapDataset(slices, "lax", stage, augment=True, seed=123)
    return torch.stack([dataset[i][0] for i in range(0, len(dataset), every)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a long-axis model file exported without its training state")
    parser.add_argument("--out", type=Path, required=True, help="run folder for coarse_best.pt and fine_best.pt")
    parser.add_argument("--anatomy", default="slender", help="synthetic set whose images calibrate the BatchNorms")
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if has_training_state(args.model):
        parser.error(f"{args.model} carries its training state: pass it to --init-from as it is")
    cascade = folded_cascade(args.model)
    slices = lax_training_slices(args.slices, args.seed, args.anatomy)
    args.out.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        unet = getattr(cascade, stage)
        calibrate_batchnorm(unet, lax_calibration_images(slices, stage))
        torch.save({"model": unet.state_dict()}, args.out / f"{stage}_best.pt")
    print(f"wrote {args.out}/coarse_best.pt and fine_best.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
