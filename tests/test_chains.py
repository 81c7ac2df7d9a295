"""The Gadgetron chains and the Docker image refer to things that exist, and their parameters validate."""

from __future__ import annotations

import importlib
import re
import xml.etree.ElementTree as ElementTree

import pytest

from cmr_landmark.config import REPO_ROOT
from cmr_landmark.gadget_parameters import GadgetParameters, ParameterError, properties_from_config
from cmr_landmark.model_store import read_manifest
from cmr_landmark.server import LandmarkServer, main_serve

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


RAW_DATA_CHAINS = [chain for chain in CHAINS if "AcquisitionReader" in chain.read_text()]


@pytest.mark.parametrize("chain", RAW_DATA_CHAINS, ids=lambda p: p.name)
def test_a_raw_data_chain_reconstructs_accelerated_data_into_magnitude_images(chain):
    # clinical cine and LGE are GRAPPA-accelerated with partial Fourier: a plain FFT recon would hand the model
    # folded images; and the models were trained on magnitude, which ComplexToFloat makes of the recon's output;
    stream = list(ElementTree.parse(chain).getroot().find("stream"))
    classes = [gadget.findtext("classname") for gadget in stream[:-1]]
    assert all(gadget.tag == "gadget" and gadget.findtext("dll") == "gadgetron_mricore" for gadget in stream[:-1])
    assert classes.index("BucketToBufferGadget") < classes.index("GenericReconCartesianGrappaGadget") < classes.index(
        "GenericReconPartialFourierHandlingPOCSGadget") < classes.index("ImageArraySplitGadget")
    # then into the scanner's range and type, as Gadgetron's clinical chains send images to the scanner
    assert classes.index("GenericReconImageArrayScalingGadget") < classes.index("ImageArraySplitGadget")
    assert classes[-2:] == ["ComplexToFloatGadget", "FloatToUShortGadget"]
    assert "SimpleReconGadget" not in classes


def test_every_chain_that_reads_raw_data_is_checked():
    assert {chain.name for chain in RAW_DATA_CHAINS} == {"cmr_landmark_lax_cine.xml", "cmr_landmark_sax_cine.xml",
                                                         "cmr_landmark_lge.xml"}


@pytest.mark.parametrize("chain", CHAINS, ids=lambda p: p.name)
def test_a_served_chain_gives_the_gadget_its_external_blocks_properties_only(chain):
    # `cmr-landmark serve --config CHAIN`: the reconstruction gadgets' properties (trigger_dimension, ...) are not
    # the landmark gadget's and must neither refuse the chain nor reach the gadget
    external_configuration = ElementTree.parse(chain).getroot().find(".//external/configuration")
    server = LandmarkServer(0, config_path=chain, max_connections=1)
    try:
        assert server.default_properties == properties_from_config(external_configuration)
    finally:
        server._listener.close()


def test_a_chain_without_the_landmark_gadget_is_refused(tmp_path):
    chain = tmp_path / "other.xml"
    chain.write_text('<configuration><stream><external><execute name="someone.else" target="f" type="python"/>'
                     '<configuration><property name="view" value="sax"/></configuration></external></stream>'
                     '</configuration>')
    with pytest.raises(ParameterError, match="no <external> block"):
        LandmarkServer(0, config_path=chain)


def test_serve_names_a_config_file_that_is_not_xml(tmp_path, capsys):
    not_xml = tmp_path / "chain.xml"
    not_xml.write_text("view=sax\n")
    with pytest.raises(SystemExit) as stop:
        main_serve(["--port", "0", "--config", str(not_xml)])
    assert stop.value.code == 2
    assert f"{not_xml} is not XML" in capsys.readouterr().err


def test_dockerfile_refers_to_existing_files():
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    base = re.search(r"^ARG GADGETRON_IMAGE=(\S+)\nFROM \$\{GADGETRON_IMAGE\}$", dockerfile, re.MULTILINE)
    assert base and base.group(1).startswith("ghcr.io/gadgetron/gadgetron/"), "the base must be Gadgetron's image"
    copied = re.findall(r"/opt/cmr-landmark/(\S+?)(?:\*\.xml)?\s", dockerfile)
    imported = re.findall(r"import ([\w.]+(?:, [\w.]+)*)", dockerfile)
    assert copied and imported, "the patterns found nothing to check: the test would pass on any Dockerfile"
    for path in copied:
        assert (REPO_ROOT / path).exists(), path
    for module in imported:
        for name in module.split(", "):
            importlib.import_module(name)


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_serve_refuses_a_port_outside_0_to_65535(port, capsys):
    with pytest.raises(SystemExit) as stop:  # the socket raised OverflowError, a traceback
        main_serve(["--port", port])
    assert stop.value.code == 2
    assert f"--port must be 0-65535, got {port}" in capsys.readouterr().err


@pytest.mark.parametrize("count", ["0", "-3"])
def test_serve_refuses_fewer_than_one_connection(count, capsys):
    with pytest.raises(SystemExit) as stop:  # LandmarkServer's ValueError came out as a traceback
        main_serve(["--port", "0", "--max-connections", count])
    assert stop.value.code == 2
    assert f"--max-connections must be at least 1, got {count}" in capsys.readouterr().err  # named as typed


def test_the_parameter_table_gives_each_shipped_models_threshold():
    # a physicist reads the defaults in docs/gadget.md; a model shipped with a new threshold must not leave it stale
    (row,) = [line for line in (REPO_ROOT / "docs" / "gadget.md").read_text().splitlines()
              if line.startswith("| `probability_threshold` |")]
    for spec in read_manifest(REPO_ROOT / "models"):
        assert f"`{spec.name}` {spec.probability_threshold:g}" in row, spec.name
