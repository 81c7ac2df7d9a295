"""The Gadgetron chains and the Docker image refer to things that exist, and their parameters validate."""

from __future__ import annotations

import importlib
import re
import xml.etree.ElementTree as ElementTree

import pytest

from cmr_landmark.config import REPO_ROOT
from cmr_landmark.gadget import GadgetParameters, properties_from_config

CHAINS = sorted((REPO_ROOT / "xml_configs").glob("*.xml"))
EXPECTED = {"cmr_landmark_lax_cine.xml", "cmr_landmark_sax_cine.xml", "cmr_landmark_lge.xml",
            "cmr_landmark_molli_t1.xml", "cmr_landmark_passive.xml"}


def test_all_chains_are_present():
    assert EXPECTED <= {chain.name for chain in CHAINS}


@pytest.mark.parametrize("chain", CHAINS, ids=lambda p: p.name)
def test_chain_external_gadget_imports_and_parameters_validate(chain):
    root = ElementTree.parse(chain).getroot()
    externals = root.findall(".//external")
    assert len(externals) == 1
    external = externals[0]
    execute, connect = external.find("execute"), external.find("connect")
    if execute is not None:
        assert execute.get("type") == "python"
        module = importlib.import_module(execute.get("name"))
        assert callable(getattr(module, execute.get("target")))
    else:
        assert 1 <= int(connect.get("port")) <= 65535
    parameters = GadgetParameters.from_strings(properties_from_config(external.find("configuration")))
    assert parameters.series_index_offset >= 1
    # The gadget works on images: the chain must hand it images (a reconstruction, or an image reader).
    stream = [element for element in root.find("stream")]
    assert stream[-1] is external


def test_dockerfile_refers_to_existing_files():
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM ghcr\.io/gadgetron/gadgetron/\S+", dockerfile, re.MULTILINE)
    for copied in re.findall(r"/opt/cmr-landmark/(\S+?)(?:\*\.xml)?\s", dockerfile):
        assert (REPO_ROOT / copied).exists(), copied
    for module in re.findall(r"import ([\w.]+(?:, [\w.]+)*)", dockerfile):
        for name in module.split(", "):
            importlib.import_module(name)
