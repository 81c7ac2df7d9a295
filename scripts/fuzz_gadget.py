"""Fuzz the passive gadget for a while: tests/test_fuzz.py over and over, with many examples and fresh seeds.

    python scripts/fuzz_gadget.py --minutes 10 [--examples 500]

Each round runs the module's properties (wire framing, attribute/header/config XML, parameter strings) with
``--examples`` examples per property and a new random seed, until the time is up; a failing round stops the run
and prints hypothesis's minimal failing example and the seed to replay it
(``CMR_FUZZ_EXAMPLES=N pytest tests/test_fuzz.py --hypothesis-seed=SEED``). One torch thread: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--examples", type=int, default=500, help="examples per property per round")
    args = parser.parse_args(argv)
    env = dict(os.environ, CMR_FUZZ_EXAMPLES=str(args.examples), OMP_NUM_THREADS="1")
    deadline = time.monotonic() + 60.0 * args.minutes
    rounds = 0
    while time.monotonic() < deadline:
        seed = random.randrange(2**32)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py",
                   f"--hypothesis-seed={seed}", "-W", "ignore::DeprecationWarning"]
        result = subprocess.run(command, cwd=REPO_ROOT, env=env)
        rounds += 1
        if result.returncode != 0:
            print(f"round {rounds} failed; replay: CMR_FUZZ_EXAMPLES={args.examples} "
                  f"pytest tests/test_fuzz.py --hypothesis-seed={seed}", file=sys.stderr)
            return 1
        print(f"round {rounds} (seed {seed}) passed; {max(0.0, deadline - time.monotonic()) / 60:.1f} min left",
              flush=True)
    print(f"{rounds} rounds x {args.examples} examples per property: no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
