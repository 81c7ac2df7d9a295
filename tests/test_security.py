"""Security properties of the inline gadget: verified models only, nothing unpickled, loopback by default, and
parameters checked with errors that name the problem."""

from __future__ import annotations

import ast
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mrd_stream_helpers import copies_of, image_message, phantom, sax_plane_image, session

from cmr_landmark import gadget
from cmr_landmark import server as server_module
from cmr_landmark.config import REPO_ROOT
from cmr_landmark.gadget_parameters import GadgetParameters, ParameterError
from cmr_landmark.model_store import ModelError, find_model, load_torchscript
from cmr_landmark.server import LandmarkServer


def _spy_on_jit_load(monkeypatch) -> list[str]:
    loaded: list[str] = []
    real_load = torch.jit.load

    def spy(path, *args, **kwargs):
        loaded.append(str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", spy)
    return loaded


def test_model_loads_only_when_its_sha256_matches_the_manifest(throwaway_model_folder, tmp_path, monkeypatch):
    loaded = _spy_on_jit_load(monkeypatch)
    spec = find_model("sax", "cine", folder=throwaway_model_folder)
    assert load_torchscript(spec, torch.device("cpu")) is not None
    assert loaded == [str(spec.file)]

    tampered = tmp_path / spec.file.name
    tampered.write_bytes(spec.file.read_bytes() + b"\x00")  # one byte appended: a zip archive still loads
    manifest = json.loads((throwaway_model_folder / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="has sha256"):
        load_torchscript(find_model("sax", "cine", folder=tmp_path), torch.device("cpu"))
    assert loaded == [str(spec.file)]  # the tampered file was never handed to torch


def _gadget_modules() -> list[Path]:
    """The source files of every package module the Gadgetron entry point and the passive server import, following
    their imports (static: no torch import in a fresh interpreter needed)."""
    package = REPO_ROOT / "cmr_landmark"
    # the passive server is no import of the entry point's, but it too takes connections from the network
    todo = [REPO_ROOT / "gadgets" / "cmr_landmark_gadget.py", package / "__init__.py", package / "server.py"]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                name = node.module or ""
                if node.level == 0 and not name.startswith("cmr_landmark"):
                    continue
                if node.level == 0:  # from cmr_landmark.x import ...
                    base, parts = package, name.split(".")[1:]
                else:  # from .x import ... / from ..x import ...
                    base, parts = path.parents[node.level - 1], name.split(".") if name else []
                candidates = [base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")]
                candidates += [base.joinpath(*parts, f"{alias.name}.py") for alias in node.names]
                todo += [candidate for candidate in candidates if candidate.is_file()]
    return sorted(seen)


UNPICKLING = re.compile(r"\bimport pickle\b|\bpickle\.|\bcPickle\b|allow_pickle\s*=\s*True|weights_only\s*=\s*False"
                        r"|\btorch\.load\(|\bnp\.load\(|\bnumpy\.load\(|\bjoblib\b|\bshelve\b|\bmarshal\b|\byaml\.load\(")


def test_nothing_on_the_gadget_path_can_unpickle():
    modules = _gadget_modules()
    assert {path.name for path in modules} >= {"gadget.py", "mrd_connection.py", "output_images.py", "server.py",
                                                "image_checks.py", "detector.py", "model_store.py", "series.py",
                                                "preprocess.py", "cmr_landmark_gadget.py"}
    offending = [f"{path.name}:{number}: {line.strip()}" for path in modules
                 for number, line in enumerate(path.read_text().splitlines(), 1) if UNPICKLING.search(line)]
    assert not offending
    model_store = (REPO_ROOT / "cmr_landmark" / "model_store.py").read_text()
    assert model_store.count("torch.jit.load(") == 1  # the one load, after the sha256 check


def test_a_whole_stream_runs_with_every_unpickler_disabled(passive_server, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("something tried to unpickle")

    for owner, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load"), (np, "load")):
        monkeypatch.setattr(owner, name, refuse)
    monkeypatch.setattr(gadget, "_detectors", {})  # so the model is loaded under the guard too
    images = [sax_plane_image(phantom(p), series_index=4, phase=p, image_index=p + 1) for p in range(3)]
    replies = session(passive_server.port, [image_message(image) for image in images])
    assert [c.meta["CMRLandmark_Status"] for c in copies_of(replies, 104)] == ["ok"] * 3


def test_passive_listener_binds_loopback_by_default(monkeypatch):
    server = LandmarkServer(0)
    try:
        assert server._listener.getsockname()[0] == "127.0.0.1"
    finally:
        server._listener.close()
    called: dict = {}
    monkeypatch.setattr(server_module, "serve", lambda *args: called.setdefault("args", args))
    assert server_module.main_serve(["--port", "18000"]) == 0
    assert called["args"][:2] == (18000, "127.0.0.1")  # the command line too: all interfaces only when asked


@pytest.mark.parametrize("values, message", [
    ({"probability_threshold": "-0.1"}, r"probability_threshold must be in \[0, 1\], got -0.1"),
    ({"probability_threshold": "nan"}, r"probability_threshold must be in \[0, 1\]"),
    ({"view": "axial"}, r"view must be one of \('sax', 'lax', 'auto'\), got 'axial'"),
    ({"series_index_offset": "ten"}, r"series_index_offset='ten': invalid literal"),
    ({"series_index_offset": "2.5"}, r"series_index_offset='2.5'"),
    ({"series_index_offset": "70000"}, r"series_index_offset must be 1..30000, got 70000"),
    ({"series_index_offset": "-100"}, r"series_index_offset must be 1..30000, got -100"),
    ({"series_index_offset": "9" * 5000}, r"series_index_offset="),
    ({"cross_size_mm": "inf"}, r"cross_size_mm must be 0.5..100 mm, got inf"),
])
def test_bad_parameter_values_are_refused_with_the_reason(values, message):
    with pytest.raises(ParameterError, match=message):
        GadgetParameters.from_strings(values)
