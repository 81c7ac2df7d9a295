"""Soak the passive gadget: many images through one server process, sampling its resident memory.

    python scripts/soak_gadget.py [--images 10000] [--phases 25] [--matrix 256x208] [--slices-per-connection 5]
                                  [--models DIR] [--csv docs/soak_memory.csv] [--png docs/soak_memory.png]

The server (``cmr-landmark serve``) runs in a subprocess with one torch thread; this process plays the scanner:
one connection per "scan" of ``--slices-per-connection`` cine slices of ``--phases`` phases, every original
checked bit-identical on its way back, every slice's annotated copies counted. The server's VmRSS (from
/proc/PID/status) is sampled after every connection; growth is measured from the end of the warm-up (the first
``--warmup-fraction`` of the images: model load, allocator arenas, caches) to the end. Exit status 1 when an
image is lost or altered, or a copy is missing.

Models: ``--models DIR`` (a folder with manifest.json), else models/ when it has a sax cine model, else an untrained
throwaway model exported to a temporary folder (memory behaviour is the same; the landmarks are meaningless).
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ismrmrd
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
# The wire helpers the tests use (header, image messages, the threaded send/receive exchange).
sys.path.insert(0, str(REPO_ROOT / "tests"))

from mrd_stream_helpers import (  # noqa: E402
    CONFIG,
    HEADER,
    exchange,
    export_throwaway_model,
    header_xml,
    image_message,
    sax_plane_image,
    text_message,
)

from cmr_landmark.model_store import ModelError, find_model  # noqa: E402

SERIES_INDEX = 5
SERIES_INDEX_OFFSET = 100
CONFIG_XML = ('<configuration><property name="view" value="sax"/><property name="sequence" value="cine"/>'
              f'<property name="series_index_offset" value="{SERIES_INDEX_OFFSET}"/></configuration>')


@dataclass
class SoakResult:
    images_in: int
    originals_identical: int
    copies_ok: int
    copies_error: int
    rss_start_kib: int  # after warm-up
    rss_end_kib: int
    rss_peak_kib: int
    seconds: float

    @property
    def growth_percent(self) -> float:
        return 100.0 * (self.rss_end_kib - self.rss_start_kib) / self.rss_start_kib

    @property
    def lost_or_altered(self) -> int:
        return self.images_in - self.originals_identical


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cine_slice(rng: np.random.Generator, slice_index: int, phases: int, matrix: tuple[int, int],
               first_image_index: int) -> list[bytes]:
    """One slice of a synthetic cine: a contracting bright disc in a darker ring, on noise, uint16-like floats."""
    columns, rows = matrix
    grid_r, grid_c = np.mgrid[:rows, :columns]
    centre = (rows * rng.uniform(0.4, 0.6), columns * rng.uniform(0.4, 0.6))
    radius = np.hypot(grid_r - centre[0], grid_c - centre[1])
    messages = []
    for phase in range(phases):
        pool = min(rows, columns) * (0.12 - 0.04 * np.sin(np.pi * phase / phases))
        pixels = np.where(radius < pool, 900.0, np.where(radius < pool * 1.3, 250.0, 80.0))
        pixels = (pixels + rng.normal(0, 20, pixels.shape)).astype(np.float32)
        image = sax_plane_image(pixels, series_index=SERIES_INDEX, slice_index=slice_index, phase=phase,
                                image_index=first_image_index + phase, field_of_view_mm=(1.4 * columns, 1.4 * rows))
        messages.append(image_message(image))
    return messages


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server did not listen on port {port} within {timeout_s} s")


def soak(images: int, phases: int, matrix: tuple[int, int], slices_per_connection: int, models: Path,
         warmup_fraction: float, samples: list[tuple[int, int]], log_path: Path) -> SoakResult:
    """Run the soak; append (images sent so far, server VmRSS KiB) to ``samples`` after every connection."""
    port = free_port()
    env = dict(os.environ, CMR_LANDMARK_MODELS=str(models), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # A probe connection (see wait_for_port) counts as one served connection: it ends before config, harmlessly.
    with open(log_path, "w") as server_log:
        process = subprocess.Popen([sys.executable, "-m", "cmr_landmark.cli", "serve", "--port", str(port)],
                                   cwd=REPO_ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, process)
            return _stream(process.pid, port, images, phases, matrix, slices_per_connection, warmup_fraction,
                           samples)
        finally:
            process.terminate()
            process.wait(30)


def _stream(pid: int, port: int, images: int, phases: int, matrix: tuple[int, int], slices_per_connection: int,
            warmup_fraction: float, samples: list[tuple[int, int]]) -> SoakResult:
    rng = np.random.default_rng(0)
    sent_total = identical = copies_ok = copies_error = 0
    rss_start = 0
    started = time.monotonic()
    while sent_total < images:
        # The last connection carries only the slices still needed (whole slices: the total rounds up to them).
        slice_count = min(slices_per_connection, -(-(images - sent_total) // phases))
        opening = [text_message(CONFIG, CONFIG_XML, nul_terminated=True),
                   text_message(HEADER, header_xml(phases=phases, slices=slice_count, matrix_xy=matrix),
                                nul_terminated=True)]
        slices = [cine_slice(rng, s, phases, matrix, 1 + s * phases) for s in range(slice_count)]
        sent = [message for messages in slices for message in messages]
        with socket.create_connection(("127.0.0.1", port)) as sock:
            replies = exchange(sock, opening + sent, timeout_s=600.0)
        originals = [raw for raw, item in replies
                     if isinstance(item, ismrmrd.Image) and item.image_series_index == SERIES_INDEX]
        identical += sum(a == b for a, b in zip(originals, sent, strict=False))
        for _, item in replies:
            if isinstance(item, ismrmrd.Image) and item.image_series_index == SERIES_INDEX + SERIES_INDEX_OFFSET:
                if item.meta["CMRLandmark_Status"] == "ok":
                    copies_ok += 1
                else:
                    copies_error += 1
        sent_total += len(sent)
        rss = resident_kib(pid)
        samples.append((sent_total, rss))
        if not rss_start and sent_total >= warmup_fraction * images:
            rss_start = rss
        print(f"{sent_total:6d} images  server RSS {rss / 1024:7.1f} MiB  "
              f"({time.monotonic() - started:6.0f} s)", flush=True)
    rss_values = [rss for count, rss in samples if count >= warmup_fraction * images]
    return SoakResult(sent_total, identical, copies_ok, copies_error, rss_start, samples[-1][1], max(rss_values),
                      time.monotonic() - started)


def choose_models(requested: Path | None, scratch: Path) -> Path:
    if requested is not None:
        return requested
    try:
        find_model("sax", "cine", folder=REPO_ROOT / "models")
        return REPO_ROOT / "models"
    except ModelError:
        export_throwaway_model(scratch)
        return scratch


def write_outputs(samples: list[tuple[int, int]], result: SoakResult, csv_path: Path, png_path: Path,
                  title: str) -> None:
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["images_sent", "server_rss_kib"])
        writer.writerows(samples)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, rss = zip(*samples, strict=True)
    figure, axes = plt.subplots(figsize=(7, 3.5))
    axes.plot(counts, np.asarray(rss) / 1024, marker=".", lw=1)
    axes.axhline(result.rss_start_kib / 1024, color="grey", ls="--", lw=0.8, label="after warm-up")
    axes.set_ylim(0, 1.15 * max(rss) / 1024)  # from zero: the growth in proportion to the whole
    axes.set_xlabel("images through the gadget")
    axes.set_ylabel("server resident memory (MiB)")
    axes.set_title(title, fontsize=8)
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--phases", type=int, default=25, help="phases per slice (the total rounds up to slices)")
    parser.add_argument("--matrix", default="256x208", help="columns x rows (a typical cine matrix by default)")
    parser.add_argument("--slices-per-connection", type=int, default=5)
    parser.add_argument("--warmup-fraction", type=float, default=0.1)
    parser.add_argument("--models", type=Path, help="model folder (default: models/ or a throwaway model)")
    parser.add_argument("--csv", type=Path, default=REPO_ROOT / "docs" / "soak_memory.csv")
    parser.add_argument("--png", type=Path, default=REPO_ROOT / "docs" / "soak_memory.png")
    parser.add_argument("--server-log", type=Path, default=Path(tempfile.gettempdir()) / "soak_gadget_server.log")
    args = parser.parse_args(argv)
    matrix = tuple(int(v) for v in args.matrix.lower().split("x"))
    samples: list[tuple[int, int]] = []
    with tempfile.TemporaryDirectory() as scratch:
        models = choose_models(args.models, Path(scratch))
        model_name = find_model("sax", "cine", folder=models).name
        result = soak(args.images, args.phases, matrix, args.slices_per_connection, models, args.warmup_fraction,
                      samples, args.server_log)
    title = (f"{result.images_in} images ({args.phases}-phase slices, {args.matrix}), model {model_name}\n"
             f"RSS {result.rss_start_kib / 1024:.0f} -> {result.rss_end_kib / 1024:.0f} MiB "
             f"({result.growth_percent:+.1f} % after warm-up)")
    write_outputs(samples, result, args.csv, args.png, title)
    print(f"model {model_name}; {result.images_in} images in, {result.originals_identical} originals back "
          f"bit-identical, {result.copies_ok} copies ok, {result.copies_error} copies error; "
          f"server RSS after warm-up {result.rss_start_kib / 1024:.1f} MiB, end {result.rss_end_kib / 1024:.1f} MiB,"
          f" peak {result.rss_peak_kib / 1024:.1f} MiB, growth {result.growth_percent:+.2f} %; "
          f"{result.seconds:.0f} s ({result.images_in / result.seconds:.1f} images/s)")
    complete = result.lost_or_altered == 0 and result.copies_ok + result.copies_error == result.images_in
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
