"""The gadget's pieces on their own: parameters, configuration syntaxes, model choice, raw image reading."""

from __future__ import annotations

import io
import socket
import xml.etree.ElementTree as ElementTree

import ismrmrd
import numpy as np
import pytest
from mrd_stream_helpers import (
    CLOSE,
    CONFIG,
    HEADER,
    MESSAGE_ID,
    header,
    header_xml,
    image_message,
    sax_plane_image,
    text_message,
)

from cmr_landmark.detector import Landmark
from cmr_landmark.gadget import ImageFault, cached_detector, choose_view_and_sequence, failure_kind
from cmr_landmark.gadget_parameters import GadgetParameters, ParameterError, parse_config_bytes, properties_from_config
from cmr_landmark.geometry import GeometryError
from cmr_landmark.model_choice import header_texts, sequence_from_texts, view_from_texts
from cmr_landmark.model_store import ModelError, find_model, warnings_said_afresh
from cmr_landmark.mrd_connection import (
    GuardedSocket,
    MrdConnection,
    ReceivedImage,
    keep_items_as_received,
    read_received_image,
)
from cmr_landmark.output_images import OWN_COMMENT, error_image, lv_length_segments


def test_both_gadgetron_property_syntaxes_and_namespaces():
    config = ElementTree.fromstring(
        '<gadgetronStreamConfiguration xmlns="http://gadgetron.sf.net/gadgetron"><gadget>'
        "<property><name>view</name><value>lax</value></property>"
        '</gadget><property name="series_index_offset" value="200"/></gadgetronStreamConfiguration>')
    assert properties_from_config(config) == {"view": "lax", "series_index_offset": "200"}
    parameters = GadgetParameters.from_strings(properties_from_config(config))
    assert (parameters.view, parameters.series_index_offset, parameters.draw_landmarks) == ("lax", 200, True)


@pytest.mark.parametrize("values, message", [
    ({"view": "axial"}, "view"), ({"sequence": "flow"}, "sequence"), ({"probability_threshold": "1.5"}, "[0, 1]"),
    ({"series_index_offset": "ten"}, "series_index_offset"), ({"draw_landmarks": "maybe"}, "true or false"),
    ({"device": "tpu"}, "device"), ({"colour": "red"}, "unknown"), ({"cross_size_mm": "0"}, "cross_size_mm"),
    ({"phases_per_slice": "0"}, "phases_per_slice"), ({"phases_per_slice": "all"}, "phases_per_slice"),
    ({"phases_per_slice": "\u00b2"}, "phases_per_slice")])  # a digit to str.isdigit, not to int()
def test_bad_parameters_are_named_in_the_error(values, message):
    with pytest.raises(ParameterError, match=message.replace("[", r"\[").replace("]", r"\]")):
        GadgetParameters.from_strings(values)


@pytest.mark.parametrize("value, expected", [("header", 25), ("Slice_Change", None), ("30", 30)])
def test_phases_per_slice_comes_from_the_header_unless_the_chain_says_otherwise(value, expected):
    parameters = GadgetParameters.from_strings({"phases_per_slice": value})
    assert parameters.phases_per_slice_count(header(phases=25)) == expected


def test_config_with_nul_or_not_xml():
    assert parse_config_bytes(b'<configuration><property name="view" value="sax"/></configuration>\x00') is not None
    assert parse_config_bytes(b"default.xml\x00") is None
    assert parse_config_bytes(b"") is None


@pytest.mark.parametrize("texts, view, sequence", [
    (["CMR_cine_SAX"], "sax", "cine"), (["tfi_4CH_retro"], "lax", None), (["LGE_PSIR_SA"], "sax", "lge"),
    (["MOLLI5(3)3_SAX_base"], "sax", "t1"), (["SAX stack", "T1MAP"], "sax", "t1"), (["localizer"], None, None),
    (["2ch", "trufi"], "lax", "cine"), (["LAX planned on SAX"], "lax", None),
    (["cine_retro_sax_Long_TR"], "sax", "cine"), (["trufi_HLA"], "lax", "cine"), (["VLA cine"], "lax", "cine"),
    (["cine 4CV"], "lax", "cine"), (["cine long axis"], "lax", "cine"), (["LongAxis_cine"], "lax", "cine"),
    # maps and weightings no sequence-specific model knows, whatever readout the protocol also names
    (["SAX_T2MAP_BSSFP"], "sax", "any"), (["T2*_SAX_multiecho"], "sax", "any"), (["ECV_MAP_SAX"], "sax", "any"),
    (["t2_tse_db_SAX"], "sax", "any"), (["SAX STIR"], "sax", "any"), (["CMR_LANDMARK_SAX_ANY"], "sax", "any"),
    # ...but not a T2 preparation, a real-time cine (TSENSE), nor the post-contrast MOLLI an ECV map is made from
    (["LGE_PSIR_T2PREP_SA"], "sax", "lge"), (["SAX T2-prep LGE"], "sax", "lge"), (["LGE_T2_prep_sa"], "sax", "lge"),
    (["cine_TSENSE_SAX"], "sax", "cine"), (["trufi_rt_TSENSE_sax"], "sax", "cine"),
    (["SAX_MOLLI_post_ECV"], "sax", "t1"), (["cine many slices SAX"], "sax", "cine")])
def test_view_and_sequence_rule(texts, view, sequence):
    assert view_from_texts(texts) == view
    assert sequence_from_texts(texts) == sequence


@pytest.mark.parametrize("protocol_name, sequence_parameter, model", [
    ("T2map_SAX_mid", "auto", "sax_any"),   # a contrast no sequence-specific model knows: the contrast-agnostic one
    ("SAX_T2MAP_BSSFP", "auto", "sax_any"),  # its readout word (bSSFP) does not send a T2 map to the cine model
    ("CMR_cine_SAX", "auto", "sax_cine"),
    ("CMR_LANDMARK_SAX_ANY", "auto", "sax_any"),  # what `convert --sequence any` writes
    ("T2map_SAX_mid", "t1", "sax_t1"),      # the physicist's parameter wins over the rule
    ("T2map_SAX_mid", "any", "sax_any"),
    ("T2map_4CH", "auto", "lax_cine"),      # no contrast-agnostic long-axis model: its cine model
    ("ep2d_LGE_4ch", "auto", "lax_cine"),   # nor a long-axis LGE one (lax_cine was trained on mixed contrasts)
    ("CMR_cine_4CH", "lge", "lax_cine"),
])
def test_unknown_contrast_goes_to_the_contrast_agnostic_model_else_the_views_cine_model(
        protocol_name, sequence_parameter, model, caplog):
    parameters = GadgetParameters.from_strings({"sequence": sequence_parameter})
    view, sequence = choose_view_and_sequence(parameters, header(protocol_name=protocol_name), {})
    spec = find_model(view, sequence)
    assert spec.name == model
    # a model trained for another sequence than the one asked for is said so, 'any' included (the long axis has no
    # contrast-agnostic model: its cine one is used)
    assert (f"no {view} model for sequence {sequence!r}: using {model}" in caplog.text) == (spec.sequence != sequence)


def test_an_unknown_sequence_is_said_once_per_scan_whatever_the_image_comments(caplog):
    warnings_said_afresh()
    for comment in ("slice 1", "slice 2", "slice 3"):  # one call per slice
        assert choose_view_and_sequence(GadgetParameters.from_strings({}), header(protocol_name="SAX_mystery"),
                                        {"ImageComment": [comment]}) == ("sax", "any")
    warnings = [r.getMessage() for r in caplog.records if "cannot tell the sequence" in r.getMessage()]
    assert warnings == ["cannot tell the sequence from the protocol texts ['SAX_mystery'] or the image comments: "
                        "using the contrast-agnostic model"]
    warnings_said_afresh()  # the next scan says it again
    choose_view_and_sequence(GadgetParameters.from_strings({}), header(protocol_name="SAX_mystery"), {})
    assert sum("cannot tell the sequence" in r.getMessage() for r in caplog.records) == 2


def test_a_view_set_against_the_protocol_is_run_as_set_and_said_once_per_scan(caplog):
    # the physicist's setting wins, but a short-axis protocol run as long axis gets other landmarks on every slice
    warnings_said_afresh()
    told_lax = GadgetParameters.from_strings({"view": "lax"})
    for _ in range(3):  # one call per slice
        assert choose_view_and_sequence(told_lax, header(protocol_name="CMR_cine_SAX"), {}) == ("lax", "cine")
    warnings = [r.getMessage() for r in caplog.records if "is set, but the protocol texts" in r.getMessage()]
    assert len(warnings) == 1 and "view=lax" in warnings[0] and "say sax" in warnings[0]
    # a comment that differs per image does not make it new: said once, still
    for comment in ("phase 1", "phase 2"):
        choose_view_and_sequence(told_lax, header(protocol_name="CMR_cine_SAX"), {"ImageComment": [comment]})
    assert sum("is set, but the protocol texts" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    warnings_said_afresh()  # the next scan
    for view, protocol in (("sax", "CMR_cine_SAX"), ("lax", "CMR_cine_4CH"), ("sax", "T2map_mid")):
        assert choose_view_and_sequence(GadgetParameters.from_strings({"view": view}),
                                        header(protocol_name=protocol), {})[0] == view
    assert "is set, but the protocol texts" not in caplog.text  # agreeing, or the texts name no view


def test_the_long_axis_says_that_an_unknown_contrast_gets_its_cine_model(caplog):
    assert find_model("lax", "any").name == "lax_cine"
    assert "no lax model for sequence 'any': using lax_cine (trained for 'cine')" in caplog.text
    caplog.clear()
    assert find_model("sax", "any").name == "sax_any"  # the contrast-agnostic model asked for: nothing to say
    assert "no sax model" not in caplog.text


def test_a_named_model_of_the_other_view_is_refused_before_it_runs():
    # its MV/APEX points would otherwise be drawn and tagged as a short-axis series' (with 0 of 3 SAX landmarks)
    with pytest.raises(ParameterError, match="model=lax_cine is a lax model; this series is sax"):
        cached_detector("sax", "cine", "lax_cine", "cpu")


def test_header_texts_feed_the_rule():
    assert view_from_texts(header_texts(header(protocol_name="ep2d_LGE_4ch"))) == "lax"
    assert sequence_from_texts(header_texts(header(protocol_name="ep2d_LGE_4ch"))) == "lge"


def test_image_with_unparseable_meta_keeps_its_bytes():
    image = sax_plane_image(np.arange(64 * 64, dtype=np.float32).reshape(64, 64))
    raw = image_message(image, "<notMeta>broken")[2:]
    received = read_received_image(io.BytesIO(raw))
    assert received.raw == raw
    assert received.meta_error and dict(received.image.meta) == {}
    np.testing.assert_array_equal(received.image.data, image.data)


def test_the_model_a_chain_names_is_loaded_and_run_once_before_the_first_image(throwaway_model_folder, monkeypatch,
                                                                                caplog):
    from cmr_landmark import gadget

    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(throwaway_model_folder))
    monkeypatch.setattr(gadget, "_detectors", {})
    calls = []
    monkeypatch.setattr(gadget.Detector, "detect", lambda self, images, *a, **k: calls.append(len(images)) or [])
    explicit = GadgetParameters.from_strings({"view": "lax", "sequence": "cine"})
    gadget.load_model_before_images(explicit, header(phases=25))
    gadget.load_model_before_images(explicit, header(phases=25))  # a second scan in the same process
    assert calls == [25]  # the cine slice's batch shape, once per process
    (detector,) = gadget._detectors.values()
    assert detector.spec.view == "lax" and detector.warmed_up

    # the view left to the first image's attributes: nothing loaded before it
    gadget.load_model_before_images(GadgetParameters.from_strings({}), header(phases=1, protocol_name=""))
    assert len(gadget._detectors) == 1 and calls == [25]
    # a chain that cannot be served: logged, left for the first slice to report on its copies
    with caplog.at_level("INFO", logger="cmr_landmark.gadget"):
        gadget.load_model_before_images(GadgetParameters.from_strings({"view": "sax", "model": "no_such_model"}),
                                        header(phases=1))
    assert "model not loaded before the images" in caplog.text


def test_the_magnitude_of_a_multi_coil_image_is_the_root_sum_of_squares():
    from cmr_landmark.gadget import magnitude_2d

    coils = np.zeros((3, 1, 2, 2), np.complex64)  # (channels, z, y, x)
    coils[0, 0] = [[3, 0], [1, 2j]]
    coils[1, 0] = [[4j, 0], [-1, 2]]
    coils[2, 0] = [[0, 7], [1j, 1]]
    np.testing.assert_allclose(magnitude_2d(ismrmrd.Image.from_array(coils)), [[5.0, 7.0], [np.sqrt(3.0), 3.0]],
                               rtol=1e-6)
    signed = np.array([[[[-3.0, 0.0], [6.0, -8.0]]], [[[4.0, 2.0], [8.0, 6.0]]]], np.float32)  # real coils
    np.testing.assert_allclose(magnitude_2d(ismrmrd.Image.from_array(signed)), [[5.0, 2.0], [10.0, 10.0]],
                               rtol=1e-6)


def test_a_legacy_python_gadget_chain_runs_without_errors():
    # Gadgetron turns <gadget><dll>gadgetron_python</dll><classname>PythonGadget</classname> into an external
    # element and forwards every property of it, the two that name the module and function included.
    config = ElementTree.fromstring(
        '<configuration><property name="python_module" value="gadgets.cmr_landmark_gadget"/>'
        '<property name="python_class" value="landmark_detection"/><property name="view" value="sax"/>'
        "</configuration>")
    assert GadgetParameters.from_strings(properties_from_config(config)).view == "sax"


class RecordingSocket:
    """A socket that records what the guarded wrapper does with it when it closes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def sendall(self, data: bytes) -> None:
        self.calls.append("sendall")

    def shutdown(self, how: int) -> None:
        self.calls.append("shutdown")

    def settimeout(self, seconds: float) -> None:
        self.calls.append("settimeout")

    def recv(self, size: int) -> bytes:
        self.calls.append("recv")
        return b""

    def close(self) -> None:
        self.calls.append("close")


@pytest.mark.parametrize("peer_closed, drained", [(True, False), (False, True)])
def test_closing_drains_only_a_peer_that_has_not_sent_close(peer_closed, drained):
    # Gadgetron keeps its end open until the external process exits: draining after its CLOSE would only wait.
    sock = RecordingSocket()
    guarded = GuardedSocket(sock)
    guarded.peer_closed = peer_closed
    sock.calls.clear()
    guarded.close()
    assert ("recv" in sock.calls) == drained
    assert sock.calls[:2] == ["sendall", "shutdown"] and sock.calls[-1] == "close"


def test_the_peers_close_is_noted_on_the_connection():
    ours, peer = socket.socketpair()
    with ours, peer:
        peer.sendall(text_message(CONFIG, "<configuration/>") + text_message(HEADER, header_xml())
                     + MESSAGE_ID.pack(CLOSE))
        connection = MrdConnection(ours)
        keep_items_as_received(connection)
        assert list(connection) == [] and connection.socket.peer_closed


@pytest.mark.parametrize("view, sequence", [("sax", "cin"), ("axial", "cine"), ("SAX", "cine")])
def test_a_view_or_sequence_typo_is_refused_not_given_a_fallback(view, sequence):
    # 'cin' had fallen back to sax_any with a warning; the library's callers pass the configuration's names
    with pytest.raises(ModelError, match="the view is one of sax, lax, the sequence one of cine, lge, t1, any"):
        find_model(view, sequence)


@pytest.mark.parametrize("error, kind", [
    (ParameterError("probability_threshold: 2"), "chain setting"),
    (ModelError("sha256 mismatch"), "model file"),
    (ImageFault("landmark detection needs 2-D images"), "data"),
    (GeometryError("read_dir is zero"), "data"),
    (RuntimeError("CUDA out of memory"), "internal error"),
    (ValueError("a bug's"), "internal error"),  # not every ValueError is the data's
])
def test_a_failed_copy_says_whom_to_tell_and_a_later_pass_recognises_it(error, kind):
    # the console shows the comment, not CMRLandmark_Error: "landmark detection failed" alone sent the technologist
    # nowhere; and a replayed output's copy must lose this comment like the gadget's others
    assert failure_kind(error) == kind
    received = ReceivedImage(raw=b"", image=sax_plane_image(np.ones((64, 64), np.float32), series_index=3))
    copy = error_image(received, f"{type(error).__name__}: {error}", GadgetParameters(), kind)
    comment = list(np.atleast_1d(copy.meta["GADGETRON_ImageComment"]))[-1]
    assert comment == f"landmark detection failed ({kind})" and OWN_COMMENT.fullmatch(comment)
    assert copy.meta["CMRLandmark_Error"].endswith(str(error))
    with pytest.raises(ValueError, match="kind"):
        error_image(received, "x", GadgetParameters(), "somebody's")


def test_the_lv_length_line_is_the_measured_one_and_only_where_measured():
    found = {"MV-1": Landmark(40.0, 30.0, 0.9), "MV-2": Landmark(40.0, 50.0, 0.9), "APEX": Landmark(100.0, 44.0, 0.9)}
    (segment,) = lv_length_segments(found, {"LVLength_mm": 60.3})
    assert segment == ((100.0, 44.0), (40.0, 40.0))  # apex to the mitral midpoint, in pixels
    assert lv_length_segments(found, {}) == []  # no length (a point missing, or a short-axis image): no line
