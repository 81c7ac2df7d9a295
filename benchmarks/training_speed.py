"""Seconds per image of one training step (forward + backward + Adam) and of inference, per grid size.

    python benchmarks/training_speed.py --threads 2 --batch 24

bf16 autocast and channels_last where training uses them (``detector.bf16_faster_on_cpu``: AMX, or AMD with
AVX512-BF16; ``CMR_LANDMARK_BF16=0/1`` forces either, to compare on a new CPU), fp32 otherwise; CUDA if present.
"""

from __future__ import annotations

import argparse
import time

import torch

from cmr_landmark.network import UNet, count_parameters
from cmr_landmark.training import autocast_context, heatmap_loss, uses_bf16


def seconds_per_image(size_px: int, batch: int, widths: tuple[int, ...], device: torch.device, repeats: int) -> tuple:
    model = UNet(3, widths).to(device).to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, size_px, size_px, device=device).contiguous(memory_format=torch.channels_last)
    target = torch.softmax(torch.rand(batch, 4, size_px, size_px, device=device), dim=1)
    timings = {}
    for mode in ("train", "infer"):
        for step in range(repeats + 1):
            if step == 1:  # the first step pays for allocation and kernel selection
                start = time.perf_counter()
            if mode == "train":
                with autocast_context(device):
                    loss = heatmap_loss(model(x), target)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
            else:
                with torch.inference_mode(), autocast_context(device):
                    model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings[mode] = (time.perf_counter() - start) / repeats / batch
    return count_parameters(model), timings["train"], timings["infer"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="64,96,128")
    parser.add_argument("--widths", default="16,32,64,128")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    widths = tuple(int(w) for w in args.widths.split(","))
    precision = "bf16 autocast" if uses_bf16(device) else "fp32"
    print(f"| grid px | params | train s/image | inference s/image |  (threads={args.threads}, batch={args.batch}, "
          f"{precision})")
    for size in (int(s) for s in args.sizes.split(",")):
        params, train, infer = seconds_per_image(size, args.batch, widths, device, args.repeats)
        print(f"| {size} | {params / 1e6:.2f} M | {train:.4f} | {infer:.4f} |")


if __name__ == "__main__":
    main()
