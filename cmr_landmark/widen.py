"""A wider U-Net that starts as the trained one: more channels for a model that may lack capacity, without
training it from scratch (Chen et al., "Net2Net", ICLR 2016).

Each new channel of a layer copies an existing channel of that layer (its convolution filter, bias and BatchNorm
parameters and running statistics); every layer that reads the widened tensor splits the weight it gave the
original channel equally over the original and its copies. The copies compute what the original does, so the sum
is unchanged: with ``noise=0`` the wide network is the narrow one exactly, in eval mode and in training mode (a
copy's batch statistics equal its original's). Copies that stay identical get identical gradients and never learn
anything of their own, so training starts with a little noise on the copies' filters (``noise`` times the
layer's weight SD).

    python -m cmr_landmark.widen models/sax_any.pt --widths-fine 24,48,96,192 --out runs/sax_any_wide_init
    python scripts/train_sax_synthetic.py any --init-from runs/sax_any_wide_init --epochs 0 ...
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from .network import UNet, unet_widths
from .training import STAGES, load_stage_weights

StateDict = dict[str, torch.Tensor]
BATCHNORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _channel_map(old: int, new: int, generator: torch.Generator) -> torch.Tensor:
    """For each of ``new`` channels, the old channel it is (the first ``old`` themselves, the rest random copies)."""
    if new < old:
        raise ValueError(f"cannot narrow a layer from {old} to {new} channels")
    return torch.cat([torch.arange(old), torch.randint(old, (new - old,), generator=generator)])


def _reader_scale(mapping: torch.Tensor, old: int) -> torch.Tensor:
    """1 / (how many channels now carry each old channel), per new channel: what its readers' weights are scaled by."""
    return 1.0 / torch.bincount(mapping, minlength=old)[mapping].float()


def widen_unet_state(state: StateDict, widths: Sequence[int], noise: float = 0.01,
                     seed: int = 0) -> StateDict:
    """The state_dict of a :class:`UNet` with ``widths`` channels per level that computes what ``state``'s does
    (exactly with ``noise=0``). ``widths`` must have as many levels as the original and none narrower."""
    old_widths = unet_widths(state)
    if "encoders.0.3.weight" not in state:
        raise ValueError("widening knows the plain two-convolution blocks (network.ConvBlock) only")
    if len(widths) != len(old_widths):
        raise ValueError(f"widths {tuple(widths)} have {len(widths)} levels, the network {len(old_widths)}")
    generator = torch.Generator().manual_seed(seed)
    wide: StateDict = dict(state)

    def copied(tensor: torch.Tensor, mapping: torch.Tensor, dim: int) -> torch.Tensor:
        """``tensor``'s output channels (``dim``) indexed by ``mapping``, the copies' filters noised."""
        result = tensor.index_select(dim, mapping).clone()
        copies = (torch.arange(len(mapping)) >= tensor.shape[dim]).float()
        if noise and tensor.dim() > 1:
            jitter = torch.randn(result.shape, generator=generator) * noise * float(tensor.std())
            result += jitter * copies.view([-1 if d == dim else 1 for d in range(tensor.dim())])
        return result

    def split(tensor: torch.Tensor, mapping: torch.Tensor, scale: torch.Tensor, dim: int) -> torch.Tensor:
        """``tensor``'s input channels (``dim``) indexed by ``mapping``, each weight shared out over its copies."""
        return tensor.index_select(dim, mapping) * scale.view([-1 if d == dim else 1 for d in range(tensor.dim())])

    def block(prefix: str, old: int, new: int, inputs: torch.Tensor, input_scale: torch.Tensor) -> torch.Tensor:
        """Widen one ConvBlock (conv, BatchNorm, ReLU, twice) reading channels ``inputs``; returns the map of its
        output channels."""
        reading, scale = inputs, input_scale
        for conv, batchnorm in (("0", "1"), ("3", "4")):
            mapping = _channel_map(old, new, generator)
            weight = split(state[f"{prefix}.{conv}.weight"], reading, scale, 1)
            wide[f"{prefix}.{conv}.weight"] = copied(weight, mapping, 0)
            for name in BATCHNORM_TENSORS:
                key = f"{prefix}.{batchnorm}.{name}"
                wide[key] = copied(state[key], mapping, 0)
            reading, scale = mapping, _reader_scale(mapping, old)
        return reading

    in_channels = state["encoders.0.0.weight"].shape[1]
    mapping, scale = torch.arange(in_channels), torch.ones(in_channels)
    skips = []
    for level, (old, new) in enumerate(zip(old_widths, widths, strict=True)):
        mapping = block(f"encoders.{level}", old, new, mapping, scale)
        scale = _reader_scale(mapping, old)
        skips.append((mapping, scale))
    skips.pop()
    for k, (old, new) in enumerate(zip(reversed(old_widths[:-1]), reversed(widths[:-1]), strict=True)):
        # ConvTranspose2d weights are (in, out, kH, kW): they read along dim 0 and write along dim 1
        up = _channel_map(old, new, generator)
        weight = split(state[f"upsamplers.{k}.weight"], mapping, scale, 0)
        wide[f"upsamplers.{k}.weight"] = copied(weight, up, 1)
        wide[f"upsamplers.{k}.bias"] = copied(state[f"upsamplers.{k}.bias"], up, 0)
        # the decoder reads the upsampled tensor (old channels 0..old) and the skip (old..2 old), concatenated
        skip_mapping, skip_scale = skips.pop()
        mapping = block(f"decoders.{k}", old, new, torch.cat([up, skip_mapping + old]),
                        torch.cat([_reader_scale(up, old), skip_scale]))
        scale = _reader_scale(mapping, old)
    wide["head.weight"] = split(state["head.weight"], mapping, scale, 1)
    return wide


def widen_unet(unet: UNet, widths: Sequence[int], noise: float = 0.01, seed: int = 0) -> UNet:
    """A new :class:`UNet` with ``widths`` that starts as ``unet`` (see :func:`widen_unet_state`)."""
    wide = UNet(unet.head.out_channels - 1, tuple(widths), in_channels=unet.encoders[0][0].in_channels)
    wide.load_state_dict(widen_unet_state(unet.state_dict(), widths, noise, seed))
    return wide


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a run folder, checkpoint or model file with its training state")
    parser.add_argument("--out", type=Path, required=True, help="run folder for coarse_best.pt and fine_best.pt")
    parser.add_argument("--widths-fine", required=True, help="the fine U-Net's new widths, e.g. 24,48,96,192")
    parser.add_argument("--widths-coarse", default=None, help="the coarse U-Net's new widths (default: unchanged)")
    parser.add_argument("--noise", type=float, default=0.01, help="on the copies' filters, times the layer's SD")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    new_widths = {"coarse": args.widths_coarse, "fine": args.widths_fine}
    args.out.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        state = load_stage_weights(args.model, stage)
        if new_widths[stage]:
            widths = tuple(int(w) for w in new_widths[stage].split(","))
            state = widen_unet_state(state, widths, args.noise, args.seed)
        torch.save({"model": state}, args.out / f"{stage}_best.pt")
        print(f"{stage}: {unet_widths(state)} -> {args.out / f'{stage}_best.pt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
