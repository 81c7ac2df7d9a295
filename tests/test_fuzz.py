"""Fuzzing the passive gadget's wire handling and parameter validation (hypothesis, bounded).

Properties, for every generated input: the server answers (socket timeouts turn a hang into a failure), ends the
stream with CLOSE, every image it received in full comes back bit-identical, each such image gets exactly one
annotated or error-tagged copy, and no connection ends through the server's last-resort error handler.

``CMR_FUZZ_EXAMPLES`` sets the examples per property (default 25, derandomised so CI is repeatable);
scripts/fuzz_gadget.py runs this module for minutes with random seeds.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
import xml.etree.ElementTree as ElementTree

import ismrmrd
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ismrmrd.image import get_dtype_from_data_type
from ismrmrd.meta import Meta
from mrd_stream_helpers import (
    CONFIG,
    HEADER,
    MESSAGE_ID,
    SAX_CONFIG,
    header_xml,
    image_message,
    phantom,
    sax_plane_image,
    text_message,
)

from cmr_landmark.gadget_parameters import GadgetParameters, ParameterError

EXAMPLES = os.environ.get("CMR_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(EXAMPLES or 25), deadline=None, derandomize=EXAMPLES is None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TIMEOUT_S = 30.0
CLOSE_MESSAGE = MESSAGE_ID.pack(4)
IMAGE = image_message(sax_plane_image(phantom(0), series_index=3))
OPENING = text_message(CONFIG, SAX_CONFIG, True) + text_message(HEADER, header_xml(phases=1), True)
LAST_RESORT = "connection ended with an error"


def raw_exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload`` and shut the sending side (no CLOSE unless the payload has one); everything the server
    sends back until it closes. Raw bytes: the fuzzed attribute XML must not be parsed on the way back."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        def send() -> None:
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            except OSError:  # the server may stop reading a corrupt stream early: its replies still count
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = bytearray()
        while chunk := sock.recv(1 << 16):
            received += chunk
        sender.join(TIMEOUT_S)
    return bytes(received)


def split_images(stream: bytes) -> list[bytes]:
    """The image messages of a reply stream that holds only images and a final CLOSE (else AssertionError)."""
    messages, at = [], 0
    header_size = ctypes.sizeof(ismrmrd.ImageHeader)
    while stream[at:at + 2] != CLOSE_MESSAGE:
        assert stream[at:at + 2] == MESSAGE_ID.pack(1022), f"unexpected message id {stream[at:at + 2]!r} at {at}"
        head = ismrmrd.ImageHeader.from_buffer_copy(stream[at + 2:at + 2 + header_size])
        attributes = struct.unpack_from("<Q", stream, at + 2 + header_size)[0]
        pixels = head.channels * int(np.prod(head.matrix_size)) * np.dtype(get_dtype_from_data_type(head.data_type)
                                                                            ).itemsize
        end = at + 2 + header_size + 8 + attributes + pixels
        messages.append(stream[at:end])
        at = end
    assert at + 2 == len(stream), "bytes after the CLOSE message"
    return messages


def copy_meta(message: bytes) -> Meta:
    header_size = ctypes.sizeof(ismrmrd.ImageHeader)
    length = struct.unpack_from("<Q", message, 2 + header_size)[0]
    return Meta.deserialize(message[2 + header_size + 8:2 + header_size + 8 + length].rstrip(b"\x00").decode())


def assert_one_image_and_its_copy(received: bytes, original: bytes) -> Meta:
    messages = split_images(received)
    assert len(messages) == 2 and messages[0] == original
    meta = copy_meta(messages[1])
    assert meta["CMRLandmark_Status"] in ("ok", "error")
    return meta


@pytest.fixture()
def no_last_resort(caplog):
    yield
    assert LAST_RESORT not in caplog.text


MESSAGE_IDS = st.sampled_from([1022, 1008, 1026, 1024, 1023, 1050, 2, 3, 4, 5, 999, 0, 65535])


@FUZZ
@given(lead=st.one_of(st.just(b""), MESSAGE_IDS.map(MESSAGE_ID.pack)), garbage=st.binary(max_size=4000))
def test_arbitrary_bytes_after_a_valid_preamble(passive_server, no_last_resort, lead, garbage):
    received = raw_exchange(passive_server.port, OPENING + IMAGE + lead + garbage)
    assert received.startswith(IMAGE)  # the image received in full is back, unchanged, first
    assert received.endswith(CLOSE_MESSAGE)


@FUZZ
@given(opening=st.binary(max_size=300))
def test_arbitrary_bytes_instead_of_the_preamble(passive_server, no_last_resort, opening):
    received = raw_exchange(passive_server.port, opening)
    assert received.endswith(CLOSE_MESSAGE) or received == b""  # b"": the client went before a message id


_XML_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


def _meta_xml(entries: list[tuple[str, list[str]]]) -> str:
    root = ElementTree.Element("ismrmrdMeta")
    for name, values in entries:
        meta = ElementTree.SubElement(root, "meta")
        ElementTree.SubElement(meta, "name").text = name
        for value in values:
            ElementTree.SubElement(meta, "value").text = value
    return ElementTree.tostring(root, encoding="unicode")


ATTRIBUTES = st.one_of(_XML_TEXT, st.lists(st.tuples(_XML_TEXT, st.lists(_XML_TEXT, max_size=3)), max_size=4).map(
    _meta_xml), st.builds(lambda a, b: a + b, st.just('<?xml version="1.0"?><ismrmrdMeta><meta>'), _XML_TEXT))


@FUZZ
@given(attributes=ATTRIBUTES)
def test_random_attribute_xml(passive_server, no_last_resort, attributes):
    original = image_message(sax_plane_image(phantom(0), series_index=3), attributes)
    received = raw_exchange(passive_server.port, OPENING + original + CLOSE_MESSAGE)
    assert assert_one_image_and_its_copy(received, original)["CMRLandmark_Status"] == "ok"


HEADER_TEXTS = st.one_of(
    _XML_TEXT,
    st.builds(lambda name: header_xml(protocol_name=name, phases=1), _XML_TEXT),
    st.builds(lambda cut: header_xml(phases=1)[:cut], st.integers(0, 900)),
)


@FUZZ
@given(header=HEADER_TEXTS, nul=st.booleans())
def test_random_header_xml(passive_server, no_last_resort, header, nul):
    opening = text_message(CONFIG, SAX_CONFIG) + text_message(HEADER, header, nul)
    received = raw_exchange(passive_server.port, opening + IMAGE + CLOSE_MESSAGE)
    assert_one_image_and_its_copy(received, IMAGE)


PARAMETER_NAMES = st.sampled_from(["model", "view", "sequence", "probability_threshold", "series_index_offset",
                                   "draw_landmarks", "cross_size_mm", "device", "phases_per_slice"]) | _XML_TEXT
PARAMETER_VALUES = st.one_of(_XML_TEXT, st.sampled_from(["sax", "lax", "auto", "cine", "true", "0", "-1", "1e400",
                                                         "nan", "inf", "65535", "30000", "0.5", "cpu", "header",
                                                         "slice_change", "\u00b2", "\u0661\u0662"]),
                             st.integers().map(str), st.floats().map(str))
PROPERTIES = st.dictionaries(PARAMETER_NAMES, PARAMETER_VALUES, max_size=4)


def _config_xml(properties: dict[str, str]) -> str:
    root = ElementTree.Element("configuration")
    for name, value in properties.items():
        ElementTree.SubElement(root, "property", name=name, value=value)
    return ElementTree.tostring(root, encoding="unicode")


@FUZZ
@given(config=st.one_of(PROPERTIES.map(_config_xml), _XML_TEXT))
def test_random_configuration(passive_server, no_last_resort, config):
    opening = text_message(CONFIG, config) + text_message(HEADER, header_xml(phases=1))
    received = raw_exchange(passive_server.port, opening + IMAGE + CLOSE_MESSAGE)
    meta = assert_one_image_and_its_copy(received, IMAGE)
    if meta["CMRLandmark_Status"] == "error":
        assert any(word in meta["CMRLandmark_Error"] for word in ("parameter", "must be", "view", "model", "cuda"))


@settings(max_examples=int(EXAMPLES or 300), deadline=None, derandomize=EXAMPLES is None)
@given(values=PROPERTIES)
def test_parameter_strings_are_accepted_valid_or_refused_clearly(values):
    try:
        parameters = GadgetParameters.from_strings(values)
    except ParameterError as error:
        assert str(error)
        return
    parameters.check()  # what was accepted is within the documented ranges
    assert 1 <= parameters.series_index_offset <= 30000
    assert parameters.probability_threshold is None or 0.0 <= parameters.probability_threshold <= 1.0
