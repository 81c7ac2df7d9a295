"""Is ONNX Runtime worth an inference path? The fine U-Net (30 images of 128 px) in ORT fp32 against torch.

    pip install .[onnx]
    python benchmarks/onnxruntime_option.py [--threads 2]

ORT's CPU provider has no bf16 convolutions, so the comparison that matters is ORT fp32 against torch's bf16
autocast (the detector's path on CPUs with native bf16) and torch fp32 (its path elsewhere).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import torch
from timing import median_seconds

from cmr_landmark.network import UNet


def median_ms(function: Callable[[], object], repeats: int = 7) -> float:
    return 1000 * median_seconds(function, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    network = UNet(3).eval()
    x = torch.rand(args.batch, 1, args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unet.onnx"
        torch.onnx.export(network, (x,), str(path), dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}})
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = {"x": x.numpy()}
        rows = [("ONNX Runtime fp32", median_ms(lambda: session.run(None, inputs)))]
    x_last = x.contiguous(memory_format=torch.channels_last)
    network = network.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        rows.append(("torch fp32, channels-last", median_ms(lambda: network(x_last))))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rows.append(("torch bf16 autocast, channels-last", median_ms(lambda: network(x_last))))
    print(f"fine U-Net, {args.batch} x {args.size} px, {args.threads} threads, onnxruntime "
          f"{onnxruntime.__version__}, torch {torch.__version__}")
    print("| runtime | ms |\n|---|---|")
    for label, ms in rows:
        print(f"| {label} | {ms:.0f} |")


if __name__ == "__main__":
    main()
