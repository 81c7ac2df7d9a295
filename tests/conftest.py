"""Shared test fixtures. Tests that need the public data sets skip, with the reason, when they are absent."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cmr_landmark.config import data_root

# Keep the suite light on a 2-core machine: torch's default would oversubscribe next to the socket servers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The shipped models are what the tests check: a developer's own CMR_LANDMARK_MODELS (a folder of their exports) must
# not redirect them. Tests that need another folder set it themselves (monkeypatch).
os.environ.pop("CMR_LANDMARK_MODELS", None)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def model_warnings_said_afresh():
    """model_store says each of its warnings once per scan or command; each test is one."""
    from cmr_landmark.model_store import warnings_said_afresh

    warnings_said_afresh()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $CMR_LANDMARK_DATA); skips the test on a fresh clone that does not have it."""
    root = data_root()
    if not (root / "README.md").exists():
        pytest.skip(f"public data sets not found at {root} (set CMR_LANDMARK_DATA); CI has them")
    return root


@pytest.fixture(scope="session")
def throwaway_model_folder(tmp_path_factory) -> Path:
    """A models folder with untrained sax/cine and lax/cine models (threshold 0), exported once per test session."""
    from mrd_stream_helpers import export_throwaway_model

    folder = tmp_path_factory.mktemp("throwaway_models")
    for view in ("sax", "lax"):
        export_throwaway_model(folder, view, "cine")
    return folder


@pytest.fixture(scope="module")
def passive_server(throwaway_model_folder):
    """One passive LandmarkServer (in this process, on a free loopback port) for all the tests of a module."""
    from cmr_landmark.server import LandmarkServer

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CMR_LANDMARK_MODELS", str(throwaway_model_folder))
        server = LandmarkServer(0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server
        server.stop()
        thread.join(60)
        assert not thread.is_alive(), "the server did not stop"
