"""The gadget in passive mode over real sockets: this process serves, test clients speak the MRD wire protocol."""

from __future__ import annotations

import socket
import threading
import time

import ismrmrd
import numpy as np
import pytest
from mrd_stream_helpers import (
    CONFIG,
    HEADER,
    exchange,
    export_throwaway_model,
    header_xml,
    image_message,
    patient_mm_by_hand,
    phantom,
    sax_plane_image,
    septal_arc_deg,
    text_message,
)

from cmr_landmark.server import LandmarkServer

SAX_CONFIG = (
    '<configuration><property name="view" value="sax"/><property name="sequence" value="cine"/>'
    '<property name="series_index_offset" value="100"/></configuration>'
)
# Attribute XML laid out as a scanner might write it; ismrmrd's own serialiser would reformat it.
ODD_META = ('<?xml version="1.0"?>\n<ismrmrdMeta>\n  <meta><name>ImageComment</name><value>SAX cine</value></meta>\n'
            "</ismrmrdMeta>\n\x00")


@pytest.fixture()
def throwaway_models(tmp_path, monkeypatch):
    export_throwaway_model(tmp_path)
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(tmp_path))
    return tmp_path


def _serve(max_connections: int, **kwargs) -> tuple[LandmarkServer, threading.Thread]:
    server = LandmarkServer(0, max_connections=max_connections, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _cine_messages(slices: int = 2, phases: int = 3, series_index: int = 7, attributes: str | None = ODD_META
                   ) -> list[bytes]:
    messages = []
    for slice_index in range(slices):
        for phase in range(phases):
            image = sax_plane_image(phantom(phase), series_index=series_index, slice_index=slice_index, phase=phase,
                                    image_index=1 + phase + phases * slice_index)
            messages.append(image_message(image, attributes))
    return messages


def _session(port: int, messages: list[bytes], nul: bool, config: str = SAX_CONFIG, **header_kwargs):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        opening = [text_message(CONFIG, config, nul), text_message(HEADER, header_xml(**header_kwargs), nul)]
        return exchange(sock, opening + messages)


def _values(meta, key) -> list[float]:
    value = meta[key]
    return [float(v) for v in (value if isinstance(value, list) else [value])]


def test_originals_identical_then_annotated_copies_with_consistent_attributes(throwaway_models):
    server, thread = _serve(max_connections=1)
    sent = _cine_messages()
    replies = _session(server.port, sent, nul=True)  # NUL-terminated config and header, as MRD clients send
    thread.join(30)

    originals = [raw for raw, item in replies if isinstance(item, ismrmrd.Image) and item.image_series_index == 7]
    assert originals == sent
    # The test can fail: ismrmrd's round trip of such an image is not byte-identical.
    assert ismrmrd.Image.from_bytes(sent[0][2:]).to_bytes() != sent[0][2:]

    order = [(item.image_series_index, item.slice) for _, item in replies]
    for slice_index in range(2):
        last_original = max(i for i, key in enumerate(order) if key == (7, slice_index))
        first_copy = min(i for i, key in enumerate(order) if key == (107, slice_index))
        assert last_original < first_copy

    copies = [item for _, item in replies if item.image_series_index == 107]
    assert sorted((c.slice, c.phase, c.image_index) for c in copies) == [
        (s, p, 1 + p + 3 * s) for s in range(2) for p in range(3)]
    for copy in copies:
        meta = copy.meta
        assert meta["CMRLandmark_Status"] == "ok", meta.get("CMRLandmark_Error")
        assert meta["CMRLandmark_Model"] == "throwaway_sax_cine"
        assert meta["CMRLandmark_OriginalSeriesIndex"] == "7"
        assert "_LANDMARKS" in meta["GADGETRON_SeqDescription"]
        head = copy.getHead()
        points = {}
        for name in ("A-RVI", "P-RVI", "C-LV"):
            assert meta[f"CMRLandmark_{name}_found"] == "1"
            pixel = _values(meta, f"CMRLandmark_{name}_pixel")
            points[name] = pixel
            patient = patient_mm_by_hand(head.position, head.read_dir, head.phase_dir, head.field_of_view,
                                         head.matrix_size, *pixel)
            np.testing.assert_allclose(_values(meta, f"CMRLandmark_{name}_patient_mm"), patient, atol=1e-3)
            assert 0.0 <= _values(meta, f"CMRLandmark_{name}_probability")[0] <= 1.0
            row, col = (int(round(v)) for v in pixel)
            if 0 <= row < 64 and 0 <= col < 64:  # the cross is burnt in at the image maximum
                assert copy.data[0, 0, row, col] == copy.data.max()
        angle = septal_arc_deg(points["A-RVI"], points["P-RVI"], points["C-LV"], (4.0, 4.0))
        assert _values(meta, "CMRLandmark_RVInsertionAngle_deg")[0] == pytest.approx(angle, abs=1e-3)
        assert 0.0 <= _values(meta, "CMRLandmark_AnteriorRVIDirection_deg")[0] < 360.0
        assert any("RVI angle" in c for c in np.atleast_1d(meta["GADGETRON_ImageComment"]))


def test_several_clients_at_once_with_bare_and_nul_terminated_strings(throwaway_models):
    server, thread = _serve(max_connections=2)
    results: dict[bool, list] = {}

    def client(nul: bool) -> None:
        results[nul] = _session(server.port, _cine_messages(slices=1), nul)

    clients = [threading.Thread(target=client, args=(nul,)) for nul in (False, True)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(120)
    thread.join(30)
    assert not thread.is_alive()  # max_connections reached: the server stopped by itself
    for replies in results.values():
        statuses = [item.meta["CMRLandmark_Status"] for _, item in replies if item.image_series_index == 107]
        assert statuses == ["ok"] * 3


def test_missing_model_passes_originals_and_tags_the_copies(tmp_path, monkeypatch):
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(tmp_path / "no-models-here"))
    server, thread = _serve(max_connections=1)
    sent = _cine_messages(slices=1)
    acquisition = ismrmrd.Acquisition.from_array(np.ones((2, 32), np.complex64))
    acquisition_message = b"\xf0\x03" + acquisition.to_bytes()  # id 1008
    replies = _session(server.port, [acquisition_message] + sent, nul=False)
    thread.join(30)
    assert replies[0][0] == acquisition_message
    assert [raw for raw, item in replies if getattr(item, "image_series_index", None) == 7] == sent
    copies = [item for _, item in replies if getattr(item, "image_series_index", None) == 107]
    assert len(copies) == 3
    for copy in copies:
        assert copy.meta["CMRLandmark_Status"] == "error"
        assert "manifest" in copy.meta["CMRLandmark_Error"]
        assert "CMRLandmark_C-LV_pixel" not in copy.meta


def test_bad_parameter_and_unknown_view_are_reported_on_the_copies(throwaway_models):
    server, thread = _serve(max_connections=2)
    bad = _session(server.port, _cine_messages(slices=1), nul=False,
                   config='<configuration><property name="view" value="coronal"/></configuration>')
    unknown = _session(server.port, _cine_messages(slices=1, attributes=None), nul=False, config="default.xml",
                       protocol_name="localizer")
    thread.join(30)
    for replies, expected in ((bad, "view must be one of"), (unknown, "cannot tell the view")):
        assert sum(1 for _, item in replies if item.image_series_index == 7) == 3
        errors = [item.meta["CMRLandmark_Error"] for _, item in replies if item.image_series_index == 107]
        assert len(errors) == 3 and all(expected in e for e in errors)


def test_auto_view_from_protocol_name_and_phases_without_encoding_limits(throwaway_models):
    server, thread = _serve(max_connections=1)
    # No phase limit in the header: slices are released when the next slice starts, and at the end.
    replies = _session(server.port, _cine_messages(slices=2), nul=False, config="<configuration/>",
                       protocol_name="tfl_cine_SAX_stack", phases=None)
    thread.join(30)
    copies = [item for _, item in replies if item.image_series_index == 107]
    assert [(c.slice, c.meta["CMRLandmark_View"], c.meta["CMRLandmark_Status"]) for c in copies] == [
        (s, "sax", "ok") for s in range(2) for _ in range(3)]


@pytest.mark.parametrize("phases_per_slice, split", [("header", True), ("slice_change", False)])
def test_a_recon_that_sends_more_phases_than_the_header_says(throwaway_models, caplog, phases_per_slice, split):
    # a retrospectively gated recon binning the beat into 3 phases where the header's encoding limits say 2
    server, thread = _serve(max_connections=1)
    config = SAX_CONFIG.replace("</configuration>",
                                f'<property name="phases_per_slice" value="{phases_per_slice}"/></configuration>')
    with caplog.at_level("WARNING", logger="cmr_landmark.series"):
        replies = _session(server.port, _cine_messages(slices=2), nul=False, config=config, phases=2)
    thread.join(30)
    copies = [item for _, item in replies if item.image_series_index == 107]
    assert sorted((c.slice, c.phase) for c in copies) == [(s, p) for s in range(2) for p in range(3)]
    assert all(c.meta["CMRLandmark_Status"] == "ok" for c in copies)
    assert any("phases per slice were expected" in r.getMessage() for r in caplog.records) == split


def test_client_that_disconnects_mid_stream_does_not_hang_the_server(throwaway_models):
    server, thread = _serve(max_connections=2)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(text_message(CONFIG, SAX_CONFIG) + text_message(HEADER, header_xml())
                     + _cine_messages(slices=1)[0][:500])
    replies = _session(server.port, _cine_messages(slices=1), nul=False)  # the server still serves the next
    thread.join(30)
    assert not thread.is_alive()
    assert sum(1 for _, item in replies if item.image_series_index == 107) == 3


def test_a_client_that_sends_nothing_does_not_hold_up_the_servers_stop(monkeypatch, caplog):
    import cmr_landmark.server as server_module

    monkeypatch.setattr(server_module, "SHUTDOWN_GRACE_S", 0.5)
    server, thread = _serve(max_connections=None)
    with socket.create_connection(("127.0.0.1", server.port)):
        # wait (bounded) until the server has accepted it: its thread then waits for a configuration that never
        # comes. A fixed sleep would let a busy machine stop the server before the accept, and the test fail.
        deadline = time.monotonic() + 30.0
        while not any(handler.is_alive() for handler in server._threads) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(handler.is_alive() for handler in server._threads), "the connection was never accepted"
        server.stop()
        thread.join(10)
        assert not thread.is_alive()
    assert "stopping with 1 connection(s) still open" in caplog.text


def test_a_client_that_sends_a_whole_chain_gets_the_landmark_blocks_parameters(throwaway_models):
    # e.g. gadgetron_ismrmrd_client -C xml_configs/cmr_landmark_sax_cine.xml against a passive server: the
    # reconstruction gadgets' properties (trigger_dimension, N_dimension, ...) are not this gadget's
    from cmr_landmark.config import REPO_ROOT

    server, thread = _serve(max_connections=1)
    chain = (REPO_ROOT / "xml_configs" / "cmr_landmark_sax_cine.xml").read_text()
    replies = _session(server.port, _cine_messages(slices=1), nul=False, config=chain)
    thread.join(30)
    copies = [item for _, item in replies if isinstance(item, ismrmrd.Image) and item.image_series_index == 107]
    assert [c.meta["CMRLandmark_Status"] for c in copies] == ["ok"] * 3, copies[0].meta.get("CMRLandmark_Error")



# Attributes of an image that already went through a landmark gadget (a replayed output, a second gadget in the
# chain): results that this pass may not find again, and a comment of the scanner's own.
EARLIER_PASS_META = (
    '<?xml version="1.0"?><ismrmrdMeta>'
    "<meta><name>CMRLandmark_Status</name><value>ok</value></meta>"
    "<meta><name>CMRLandmark_Stale_pixel</name><value>1.0</value><value>2.0</value></meta>"
    "<meta><name>CMRLandmark_RVInsertionAngle_deg</name><value>138.4400</value></meta>"
    "<meta><name>GADGETRON_ImageComment</name><value>SAX landmarks 3/3</value><value>RVI angle 138 deg</value>"
    "<value>breath-hold 2</value></meta></ismrmrdMeta>"
)


def test_a_copy_carries_only_what_this_pass_found(throwaway_models):
    server, thread = _serve(max_connections=2)
    detected = _session(server.port, _cine_messages(slices=1, attributes=EARLIER_PASS_META), nul=False)
    failed = _session(server.port, _cine_messages(slices=1, attributes=EARLIER_PASS_META), nul=False,
                      config='<configuration><property name="probability_threshold" value="2"/></configuration>')
    thread.join(30)
    for replies, status in ((detected, "ok"), (failed, "error")):
        copies = [item for _, item in replies if item.image_series_index == 107]
        assert len(copies) == 3
        for copy in copies:
            assert copy.meta["CMRLandmark_Status"] == status
            assert "CMRLandmark_Stale_pixel" not in copy.meta
            comments = list(np.atleast_1d(copy.meta["GADGETRON_ImageComment"]))
            assert comments[0] == "breath-hold 2" and comments.count("RVI angle 138 deg") == 0
        if status == "error":
            assert all("CMRLandmark_RVInsertionAngle_deg" not in c.meta for c in copies)
            # a threshold of 2 is a setting of the chain: the comment says whom to tell
            assert all(list(np.atleast_1d(c.meta["GADGETRON_ImageComment"]))[1:]
                       == ["landmark detection failed (chain setting)"] for c in copies)


# Attribute XML with an empty name and an empty value (ismrmrd reads them as None), and a comment of other software
# that reads like one of this gadget's: on an image no landmark gadget has seen, it stays.
ODD_NAMES_META = ('<?xml version="1.0"?><ismrmrdMeta><meta><name/><value>x</value></meta>'
                  "<meta><name>Empty</name><value/></meta>"
                  "<meta><name>GADGETRON_ImageComment</name><value>LV length 3 mm</value></meta></ismrmrdMeta>")


def test_attributes_with_empty_names_or_values_lose_no_image(throwaway_models):
    server, thread = _serve(max_connections=1)
    sent = _cine_messages(slices=2, attributes=ODD_NAMES_META)
    replies = _session(server.port, sent, nul=False)
    thread.join(30)
    assert [raw for raw, item in replies if item.image_series_index == 7] == sent
    copies = [item for _, item in replies if item.image_series_index == 107]
    assert [c.meta["CMRLandmark_Status"] for c in copies] == ["ok"] * 6
    assert all(list(np.atleast_1d(c.meta["GADGETRON_ImageComment"]))[0] == "LV length 3 mm" for c in copies)


def test_copies_that_land_in_a_series_of_originals_are_warned_about_and_tagged(throwaway_models, caplog):
    server, thread = _serve(max_connections=1)
    # series 107 (say, the chain's own derived series) arrives first, then series 7, whose copies go to 107
    messages = _cine_messages(slices=1, series_index=107) + _cine_messages(slices=1, series_index=7)
    replies = _session(server.port, messages, nul=False)
    thread.join(30)
    copies_of_7 = [item for _, item in replies if item.image_series_index == 107
                   and item.meta.get("CMRLandmark_OriginalSeriesIndex") == "7"]
    assert [c.meta.get("CMRLandmark_SeriesIndexClash") for c in copies_of_7] == ["1"] * 3
    copies_of_107 = [item for _, item in replies if item.image_series_index == 207]
    assert [c.meta.get("CMRLandmark_SeriesIndexClash") for c in copies_of_107] == [None] * 3
    assert caplog.text.count("series 107 holds both original images and landmark copies") == 1


def test_a_chain_naming_a_model_the_manifest_lacks_is_refused_or_tagged_in_one_line(throwaway_models, tmp_path,
                                                                                     caplog):
    from cmr_landmark.gadget_parameters import ParameterError

    chain = tmp_path / "typo.xml"
    chain.write_text('<configuration><property name="model" value="sax_cinee"/></configuration>')
    with pytest.raises(ParameterError, match="sax_cinee"):
        LandmarkServer(0, config_path=chain)
    server, thread = _serve(max_connections=1)
    replies = _session(server.port, _cine_messages(slices=2), nul=False, config=chain.read_text())
    thread.join(30)
    errors = [item.meta["CMRLandmark_Error"] for _, item in replies if item.image_series_index == 107]
    assert len(errors) == 6 and all("'sax_cinee' is not in the manifest" in error for error in errors)
    assert not [record for record in caplog.records if record.exc_info]  # no traceback per slice


def test_a_blank_phase_is_left_out_and_the_rest_of_its_slice_measured(throwaway_models, caplog):
    server, thread = _serve(max_connections=2)
    # phase 2's disc moved, so that its landmarks differ from phase 0's and a copy given another phase's shows
    pixels = [phantom(0), np.zeros((64, 64), np.float32), np.roll(phantom(2), (12, -10), axis=(0, 1))]
    images = [sax_plane_image(plane, series_index=7, phase=phase, image_index=1 + phase)
              for phase, plane in enumerate(pixels)]
    sent = [image_message(image) for image in images]
    replies = _session(server.port, sent, nul=False)
    without_it = _session(server.port, [sent[0], sent[2]], nul=False)  # the same slice without the blank phase
    thread.join(30)
    assert [raw for raw, item in replies if item.image_series_index == 7] == sent
    copies = sorted((item for _, item in replies if item.image_series_index == 107), key=lambda c: c.phase)
    assert [c.meta["CMRLandmark_Status"] for c in copies] == ["ok", "error", "ok"]
    assert "phase 1 has no signal" in copies[1].meta["CMRLandmark_Error"]
    assert list(np.atleast_1d(copies[1].meta["GADGETRON_ImageComment"]))[-1] == "landmark detection failed (data)"
    assert (copies[1].meta["CMRLandmark_View"], copies[1].meta["CMRLandmark_Model"]) == ("sax", "throwaway_sax_cine")
    assert "phase(s) left out: phase 1 has no signal" in caplog.text
    # each detected phase gets its own landmarks: those of the slice sent without the blank phase
    expected = sorted((item for _, item in without_it if item.image_series_index == 107), key=lambda c: c.phase)
    for copy, reference in zip((copies[0], copies[2]), expected, strict=True):
        for name in ("A-RVI", "P-RVI", "C-LV"):
            assert _values(copy.meta, f"CMRLandmark_{name}_pixel") == _values(reference.meta,
                                                                              f"CMRLandmark_{name}_pixel")
    assert [_values(copies[0].meta, f"CMRLandmark_{name}_pixel") for name in ("A-RVI", "P-RVI", "C-LV")] != [
        _values(copies[2].meta, f"CMRLandmark_{name}_pixel") for name in ("A-RVI", "P-RVI", "C-LV")]


def test_a_blank_phase_of_a_long_axis_cine_is_filled_from_its_neighbours(tmp_path, monkeypatch):
    name = export_throwaway_model(tmp_path, "lax", "cine")
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(tmp_path))
    server, thread = _serve(max_connections=1)
    images = [sax_plane_image(phantom(phase) if phase != 5 else np.full((64, 64), np.nan, np.float32),
                              series_index=7, phase=phase, image_index=1 + phase) for phase in range(12)]
    config = ('<configuration><property name="view" value="lax"/><property name="sequence" value="cine"/>'
              "</configuration>")
    replies = _session(server.port, [image_message(image) for image in images], nul=False, config=config,
                       protocol_name="CMR_cine_4CH", phases=12)
    thread.join(30)
    copies = sorted((item for _, item in replies if item.image_series_index == 107), key=lambda c: c.phase)
    assert [c.meta["CMRLandmark_Status"] for c in copies] == ["ok"] * 5 + ["error"] + ["ok"] * 6
    assert "phase 5 has no finite pixel" in copies[5].meta["CMRLandmark_Error"]
    detected = copies[:5] + copies[6:]
    assert all(c.meta["CMRLandmark_Model"] == name for c in copies)
    # one shortening over the beat, from all 12 phases' lengths (the gap filled in the smoothing, not closed up)
    assert len({c.meta["CMRLandmark_LongitudinalShortening"] for c in detected}) == 1
    assert all(f"CMRLandmark_{landmark}_filled" in c.meta for c in detected for landmark in ("MV-1", "MV-2", "APEX"))


def test_the_chains_threshold_decides_which_cine_points_are_weak_and_filled_is_told_per_phase(tmp_path, monkeypatch):
    # a model whose manifest threshold (0.9) the untrained network never reaches, and a chain that lowers it to 0:
    # the chain's threshold decides both what is found and which cine points are weak (filled from neighbours)
    from cmr_landmark import gadget

    export_throwaway_model(tmp_path, "lax", "cine", probability_threshold=0.9)
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(tmp_path))
    # same weights as the other tests' throwaway model: a detector they loaded would carry their threshold
    monkeypatch.setattr(gadget, "_detectors", {})
    server, thread = _serve(max_connections=2)
    # three phases (too few for the outlier test): phase 0 is blank, so only its landmarks are missing and filled
    images = [sax_plane_image(phantom(phase) if phase else np.zeros((64, 64), np.float32), series_index=7,
                              phase=phase, image_index=1 + phase) for phase in range(3)]
    sent = [image_message(image) for image in images]
    lax = '<property name="view" value="lax"/><property name="sequence" value="cine"/>'
    replies = {threshold: _session(server.port, sent, nul=False, protocol_name="CMR_cine_4CH",
                                   config=f'<configuration>{lax}<property name="probability_threshold" '
                                          f'value="{threshold}"/></configuration>')
               for threshold in ("0", "0.9")}
    thread.join(30)
    for threshold, found in (("0", "1"), ("0.9", "0")):
        copies = sorted((item for _, item in replies[threshold] if item.image_series_index == 107),
                        key=lambda c: c.phase)
        assert [c.meta["CMRLandmark_Status"] for c in copies] == ["error", "ok", "ok"]
        for copy in copies[1:]:
            for name in ("MV-1", "MV-2", "APEX"):
                assert copy.meta[f"CMRLandmark_{name}_found"] == found
                # a phase's own confident detection is not filled, whatever happened in another phase; nor is a
                # landmark seen in no phase, which is absent (it was once 'filled' from nothing)
                assert copy.meta[f"CMRLandmark_{name}_filled"] == "0"
        if found == "1":
            lengths = [_values(c.meta, "CMRLandmark_LVLength_mm")[0] for c in copies[1:]]
            assert all(length > 0 for length in lengths)


def test_an_image_that_comes_through_a_second_time_is_described_once(throwaway_models):
    # a replayed output (or a second landmark gadget in the chain): its copy says once what it is
    server, thread = _serve(max_connections=2)
    first = _session(server.port, _cine_messages(slices=1), nul=False)
    outputs = [raw for raw, item in first if item.image_series_index == 107]
    assert len(outputs) == 3
    second = _session(server.port, outputs, nul=False)
    thread.join(30)
    assert [raw for raw, item in second if item.image_series_index == 107] == outputs  # passed through unchanged
    copies = [item for _, item in second if item.image_series_index == 207]
    assert len(copies) == 3
    for copy in copies:
        assert copy.meta["CMRLandmark_Status"] == "ok", copy.meta.get("CMRLandmark_Error")
        assert copy.meta["CMRLandmark_OriginalSeriesIndex"] == "107"
        assert list(np.atleast_1d(copy.meta["GADGETRON_SeqDescription"])).count("_LANDMARKS") == 1
        assert list(np.atleast_1d(copy.meta["GADGETRON_ImageProcessingHistory"])).count("CMRLANDMARK") == 1
        comments = list(np.atleast_1d(copy.meta["GADGETRON_ImageComment"]))
        assert sum(comment.startswith("SAX landmarks") for comment in comments) == 1


def test_non_square_pixels_give_row_then_column_spacing_and_place_the_points_in_mm(throwaway_models):
    # 64 x 64 pixels over 256 mm (x, read, columns) by 192 mm (y, phase, rows): 3 mm rows, 4 mm columns
    fov = (256.0, 192.0)
    server, thread = _serve(max_connections=1)
    images = [sax_plane_image(phantom(phase), series_index=7, phase=phase, image_index=1 + phase, field_of_view_mm=fov)
              for phase in range(3)]
    replies = _session(server.port, [image_message(image) for image in images], nul=False, field_of_view_mm=fov)
    thread.join(30)
    copies = [item for _, item in replies if item.image_series_index == 107]
    assert len(copies) == 3
    for copy in copies:
        meta, head = copy.meta, copy.getHead()
        assert meta["CMRLandmark_Status"] == "ok", meta.get("CMRLandmark_Error")
        assert _values(meta, "CMRLandmark_PixelSpacing_mm") == [3.0, 4.0]
        points = {name: _values(meta, f"CMRLandmark_{name}_pixel") for name in ("A-RVI", "P-RVI", "C-LV")}
        for name, pixel in points.items():
            np.testing.assert_allclose(_values(meta, f"CMRLandmark_{name}_patient_mm"),
                                       patient_mm_by_hand(head.position, head.read_dir, head.phase_dir, fov,
                                                          head.matrix_size, *pixel), atol=1e-3)
        angle = septal_arc_deg(points["A-RVI"], points["P-RVI"], points["C-LV"], (3.0, 4.0))
        assert _values(meta, "CMRLandmark_RVInsertionAngle_deg")[0] == pytest.approx(angle, abs=1e-3)
        # the measure in mm differs from the one in pixels here, so the test tells them apart
        assert septal_arc_deg(points["A-RVI"], points["P-RVI"], points["C-LV"], (1.0, 1.0)) != pytest.approx(
            angle, abs=1e-2)
