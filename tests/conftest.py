"""Shared test fixtures. Tests that need the public data sets skip, with the reason, when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cmr_landmark.config import data_root

# Keep the suite light on a 2-core machine: torch's default would oversubscribe next to the socket servers.
os.environ.setdefault("OMP_NUM_THREADS", "1")

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $CMR_LANDMARK_DATA); skips the test on a fresh clone that does not have it."""
    root = data_root()
    if not (root / "README.md").exists():
        pytest.skip(f"public data sets not found at {root} (set CMR_LANDMARK_DATA); CI has them")
    return root
