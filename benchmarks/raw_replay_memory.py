"""Peak memory and time of reading (and reconstructing) a large raw Cartesian cine file, as the replay tool does.

    python benchmarks/raw_replay_memory.py --slices 10 --phases 25 --coils 32 --acceleration 2   # a 4.6 GB file

The series is the shipped short-axis sample (M&Ms-2 001, 256 x 256) with its two phases repeated to ``--phases``
and its slices taken from the first ``--slices``; ``cmr-landmark convert --kspace`` simulates the coils, 2x readout
oversampling and GRAPPA undersampling. Writing and reading each run in a child process, so that each figure is
that process's own peak resident memory (``ru_maxrss``), not this one's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "mnms2_001_sax.h5"

WRITE = """
import dataclasses, resource, sys, time
import numpy as np
from cmr_landmark.convert import convert
from cmr_landmark.io import read_series
slices, phases, coils, acceleration = (int(value) for value in sys.argv[1:5])
out, series = sys.argv[5], read_series(sys.argv[6])
images = series.images[:slices, np.arange(phases) % series.n_phases]  # the sample's phases over and over
series = dataclasses.replace(series, images=images, slice_geometry=series.slice_geometry[:slices],
                             trigger_times_ms=None)
start = time.perf_counter()
convert(series, out, "sax", "cine", kspace=True, coils=coils, acceleration=acceleration)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2)
"""

READ = """
import resource, sys, time
from cmr_landmark.io.ismrmrd_file import read_ismrmrd_images
start = time.perf_counter()
_, images = read_ismrmrd_images(sys.argv[1])
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, len(images))
"""


def run_child(code: str, *args: str) -> list[float]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(done.stderr)
    return [float(value) for value in done.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=10, help="1-12 (the sample's stack)")
    parser.add_argument("--phases", type=int, default=25)
    parser.add_argument("--coils", type=int, default=32)
    parser.add_argument("--acceleration", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="write the raw file here and keep it (default: a temporary file)")
    args = parser.parse_args()
    if not 1 <= args.slices <= 12:
        parser.error("--slices must be 1-12")
    with tempfile.TemporaryDirectory() as folder:
        path = args.keep or Path(folder) / "raw.h5"
        write_s, write_gb = run_child(WRITE, str(args.slices), str(args.phases), str(args.coils),
                                      str(args.acceleration), str(path), str(SAMPLE))
        size_gb = path.stat().st_size / 1024**3
        read_s, read_gb, n_images = run_child(READ, str(path))
    print(f"{args.slices} slices x {args.phases} phases, {args.coils} coils, R = {args.acceleration}: "
          f"file {size_gb:.2f} GiB")
    print(f"write (convert --kspace): {write_s:.1f} s, peak {write_gb:.2f} GiB")
    print(f"read + reconstruct {int(n_images)} images: {read_s:.1f} s, peak {read_gb:.2f} GiB "
          f"(load average {Path('/proc/loadavg').read_text().split()[0]} at {time.strftime('%H:%M')})")


if __name__ == "__main__":
    main()
