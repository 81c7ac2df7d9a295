"""Faults, over the real socket, against one passive server: every image that was fully received comes back
bit-identical, the stream ends with CLOSE in bounded time (socket timeouts turn a hang into a failure), and what went
wrong is logged and, where there are images to copy, tagged on the copies (CMRLandmark_Status=error)."""

from __future__ import annotations

import ctypes
import io
import json
import shutil
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from gadgetron.types import acquisition_bucket
from gadgetron.types.image_array import ImageArray, write_image_array
from mrd_stream_helpers import (
    CLOSE,
    CONFIG,
    HEADER,
    MESSAGE_ID,
    SAX_CONFIG,
    assert_passed_through,
    copies_of,
    header_xml,
    image_message,
    phantom,
    sax_plane_image,
    session,
    text_message,
)

from cmr_landmark import gadget
from cmr_landmark.model_store import sha256_of

TIMEOUT_S = 60.0
SERIES = 7
COPIES = SERIES + 100


def assert_tagged(copies: list[ismrmrd.Image], expected_error: str) -> None:
    for copy in copies:
        assert copy.meta["CMRLandmark_Status"] == "error"
        assert expected_error in copy.meta["CMRLandmark_Error"], copy.meta["CMRLandmark_Error"]
        assert not any(key.endswith("_pixel") for key in copy.meta.keys())  # no landmarks on a failed slice


def with_head(image: ismrmrd.Image, **fields) -> ismrmrd.Image:
    head = image.getHead()
    for name, value in fields.items():
        setattr(head, name, value)
    image.setHead(head)
    return image


def cine(phases: int = 3, series_index: int = SERIES, pixels: Callable[[int], np.ndarray] = phantom,
         **fields) -> list[ismrmrd.Image]:
    return [with_head(sax_plane_image(pixels(p), series_index=series_index, phase=p, image_index=p + 1), **fields)
            for p in range(phases)]


def volume(phases: int = 1) -> list[ismrmrd.Image]:
    """3-D images (matrix z = 2) with the 2-D images' geometry."""
    template = sax_plane_image(phantom(0)).getHead()
    images = []
    for p in range(phases):
        image = ismrmrd.Image.from_array(np.stack([phantom(p), phantom(p + 1)])[np.newaxis])
        images.append(with_head(image, field_of_view=(256.0, 256.0, 16.0), position=template.position,
                                read_dir=template.read_dir, phase_dir=template.phase_dir,
                                slice_dir=template.slice_dir, image_series_index=SERIES, phase=p, image_index=p + 1))
    return images


def _nan_and_inf_pixels(phase: int) -> np.ndarray:
    pixels = phantom(phase)
    pixels[:4, :] = np.nan
    pixels[-4:, :] = np.inf
    return pixels


@dataclass(frozen=True)
class ImageFault:
    name: str
    images: Callable[[], list[ismrmrd.Image]]
    error: str | None  # None: detection runs (status ok); else a part of the CMRLandmark_Error message
    copies_series: int = COPIES


IMAGE_FAULTS = [
    ImageFault("complex", lambda: cine(pixels=lambda p: (phantom(p) * np.exp(0.4j)).astype(np.complex64)), None),
    ImageFault("uint16", lambda: cine(pixels=lambda p: phantom(p).clip(0).astype(np.uint16)), None),
    ImageFault("some NaN and Inf pixels", lambda: cine(pixels=_nan_and_inf_pixels), None),
    ImageFault("all NaN", lambda: cine(pixels=lambda p: np.full((64, 64), np.nan, np.float32)), "no finite pixel"),
    ImageFault("all Inf", lambda: cine(pixels=lambda p: np.full((64, 64), np.inf, np.float32)), "no finite pixel"),
    ImageFault("all zero", lambda: cine(pixels=lambda p: np.zeros((64, 64), np.float32)), "no signal"),
    ImageFault("label map (a segmentation series)",  # ACDC's codes: background, RV, myocardium, LV blood pool
               lambda: cine(pixels=lambda p: (phantom(p) > 0).astype(np.uint16) + (phantom(p) > 50)
                            + (phantom(p) > 100)), "a segmentation (label map)"),
    ImageFault("3-D (matrix z = 2)", volume, "needs 2-D images"),
    ImageFault("1 x 1", lambda: cine(pixels=lambda p: np.ones((1, 1), np.float32)), "at least 2 x 2"),
    ImageFault("zero field of view", lambda: cine(field_of_view=(0.0, 0.0, 0.0)), "field of view must be positive"),
    ImageFault("NaN field of view", lambda: cine(field_of_view=(np.nan, 256.0, 8.0)), "not finite"),
    ImageFault("zero direction vectors", lambda: cine(read_dir=(0.0, 0.0, 0.0), phase_dir=(0.0, 0.0, 0.0)),
               "must be a unit direction vector"),
    ImageFault("parallel direction vectors", lambda: cine(phase_dir=(0.6, -0.8, 0.0)), "are not orthogonal"),
    ImageFault("phases differ in matrix", lambda: cine(pixels=lambda p: phantom(p, size=64 - 16 * (p == 1))),
               "differ in matrix"),
    ImageFault("series index + offset overflows uint16", lambda: cine(series_index=65500), "exceeds 65535",
               copies_series=65535),
    # the edges of the uint16 field: 65435 + 100 is the last series that fits; 65436 + 100 would wrap to series 0
    ImageFault("series index + offset = 65535", lambda: cine(series_index=65435), None, copies_series=65535),
    ImageFault("series index + offset = 65536", lambda: cine(series_index=65436), "exceeds 65535",
               copies_series=65535),
    # 1.25 mm pixels keep the anti-alias filter small: the fault is the matrix (a 64 MiB message), not the filter
    # time (at 0.07 mm pixels the same image takes ~7 s on one core).
    ImageFault("4096 x 4096, one image",
               lambda: cine(phases=1, pixels=lambda p: np.kron(phantom(p), np.ones((64, 64), np.float32)),
                            field_of_view=(5120.0, 5120.0, 8.0)), None),
]


@pytest.mark.parametrize("fault", IMAGE_FAULTS, ids=[fault.name for fault in IMAGE_FAULTS])
def test_image_faults(passive_server, fault, caplog):
    images = fault.images()
    sent = [image_message(image) for image in images]
    replies = session(passive_server.port, sent, phases=len(images))
    assert_passed_through(replies, sent)
    copies = copies_of(replies, fault.copies_series)
    assert len(copies) == len(sent) == len(replies) - len(sent)
    assert [c.phase for c in copies] == [image.phase for image in images]
    if fault.error is None:
        assert [c.meta["CMRLandmark_Status"] for c in copies] == ["ok"] * len(copies), copies[0].meta.get(
            "CMRLandmark_Error")
        assert all(c.data.dtype == image.data.dtype for c, image in zip(copies, images, strict=True))
    else:
        assert_tagged(copies, fault.error)
        assert fault.error in caplog.text  # logged too, for the site's log files
        # a fault of the images is said in one line: a traceback reads as the gadget crashing
        assert "Traceback" not in caplog.text


def _coil_images(phases: int = 3) -> tuple[list[ismrmrd.Image], list[ismrmrd.Image]]:
    """A cine as two coil images per phase, each coil seeing the anatomy through its own smooth sensitivity, and the
    same cine as the one-channel root-sum-of-squares image of the coils (what the gadget is documented to see)."""
    rows, cols = np.mgrid[:64, :64]
    angle = np.pi / 2 * (0.1 + 0.8 * cols / 63.0) * (0.5 + 0.5 * rows / 63.0)  # sensitivity 1 coil <-> 2 coil
    coils, combined = [], []
    for phase in range(phases):
        anatomy = phantom(phase).astype(np.float64)
        channels = np.stack([anatomy * np.cos(angle), anatomy * np.sin(angle)]).astype(np.float32)
        rss = np.sqrt((channels.astype(np.float64) ** 2).sum(axis=0)).astype(np.float32)
        template = sax_plane_image(rss, series_index=SERIES, phase=phase, image_index=phase + 1)
        combined.append(template)
        image = ismrmrd.Image.from_array(channels[:, np.newaxis])  # (channels, z, y, x)
        head = template.getHead()
        head.channels = 2
        image.setHead(head)
        coils.append(image)
    return coils, combined


def test_a_multi_coil_image_is_detected_as_its_root_sum_of_squares(passive_server):
    coils, combined = _coil_images()
    assert not np.allclose(np.abs(coils[0].data).sum(axis=0), combined[0].data[0])  # the sum of |coils| differs
    sent = [image_message(image) for image in coils]
    replies = session(passive_server.port, sent)
    reference = session(passive_server.port, [image_message(image) for image in combined])
    assert_passed_through(replies, sent)
    copies, expected = copies_of(replies, COPIES), copies_of(reference, COPIES)
    assert len(copies) == len(expected) == 3
    for copy, single in zip(copies, expected, strict=True):
        assert copy.meta["CMRLandmark_Status"] == "ok", copy.meta.get("CMRLandmark_Error")
        assert copy.data.shape == (2, 1, 64, 64)  # the copy keeps its coils
        for name in ("A-RVI", "P-RVI", "C-LV"):
            assert copy.meta[f"CMRLandmark_{name}_pixel"] == single.meta[f"CMRLandmark_{name}_pixel"]


def test_unknown_view_is_tagged(passive_server):
    sent = [image_message(image) for image in cine()]
    replies = session(passive_server.port, sent, config="<configuration/>", protocol_name="localizer")
    assert_passed_through(replies, sent)
    assert_tagged(copies_of(replies, COPIES), "cannot tell the view")


# --- models ----------------------------------------------------------------------------------------------------


def _manifest_sha(folder: Path, sha256: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    (entry,) = [m for m in manifest["models"] if m["name"] == "throwaway_sax_cine"]
    entry["sha256"] = sha256
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _manifest_field(folder: Path, name: str, value: object) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    (entry,) = [m for m in manifest["models"] if m["name"] == "throwaway_sax_cine"]
    entry[name] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _truncate(folder: Path, update_sha: bool) -> None:
    path = folder / "throwaway_sax_cine.pt"
    path.write_bytes(path.read_bytes()[:2000])
    if update_sha:  # the manifest matches the damaged file: the load itself must fail, clearly
        _manifest_sha(folder, sha256_of(path))


MODEL_FAULTS = {
    "no manifest": (lambda folder: (folder / "manifest.json").unlink(), "no model manifest"),
    "manifest not JSON": (lambda folder: (folder / "manifest.json").write_text("{models"), "not valid JSON"),
    "model file missing": (lambda folder: (folder / "throwaway_sax_cine.pt").unlink(), "is missing"),
    "truncated, sha256 of the original": (lambda folder: _truncate(folder, update_sha=False), "has sha256"),
    "truncated, sha256 of the truncated file": (lambda folder: _truncate(folder, update_sha=True),
                                                "could not be loaded"),
    "wrong sha256 in the manifest": (lambda folder: _manifest_sha(folder, "0" * 64), "has sha256"),
    "mirror_average not a boolean": (lambda folder: _manifest_field(folder, "mirror_average", "yes"),
                                     "mirror_average must be true or false"),
    "mirror_pooling unknown": (lambda folder: _manifest_field(folder, "mirror_pooling", "max"),
                               "mirror_pooling must be one of"),
    "fine_search_radius_mm not positive": (lambda folder: _manifest_field(folder, "fine_search_radius_mm", 0),
                                           "fine_search_radius_mm must be a positive number"),
    "fine_centroid_radius_mm not a number": (lambda folder: _manifest_field(folder, "fine_centroid_radius_mm", "15"),
                                             "fine_centroid_radius_mm must be a positive number"),
    "probability_threshold not a number": (lambda folder: _manifest_field(folder, "probability_threshold", "auto"),
                                           "probability_threshold must be a probability"),
    "probability_threshold above 1": (lambda folder: _manifest_field(folder, "probability_threshold", 7),
                                      "probability_threshold must be a probability"),
    "training_patients a string, not a list": (lambda folder: _manifest_field(folder, "training_patients",
                                                                               "mnms2/001"),
                                               "training_patients must be a list"),
    "fine_centroid_radius_mm infinite": (lambda folder: _manifest_field(folder, "fine_centroid_radius_mm",
                                                                        float("inf")),
                                         "fine_centroid_radius_mm must be a positive number"),
}


@pytest.mark.parametrize("damage, expected", MODEL_FAULTS.values(), ids=list(MODEL_FAULTS))
def test_model_faults(passive_server, throwaway_model_folder, tmp_path, monkeypatch, caplog, damage, expected):
    folder = tmp_path / "models"
    shutil.copytree(throwaway_model_folder, folder)
    damage(folder)
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(folder))
    monkeypatch.setattr(gadget, "_detectors", {})  # models load once per process: forget the good one
    sent = [image_message(image) for image in cine()]
    replies = session(passive_server.port, sent)
    assert_passed_through(replies, sent)
    copies = copies_of(replies, COPIES)
    assert len(copies) == 3
    assert_tagged(copies, expected)
    assert "ModelError" in caplog.text and expected in caplog.text


# --- stream shape ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nul", [False, True], ids=["bare strings (Gadgetron)", "NUL-terminated (MRD/FIRE)"])
def test_clean_stream_with_either_string_style(passive_server, nul):
    sent = [image_message(image) for image in cine()]
    replies = session(passive_server.port, sent, nul=nul)
    assert [raw for raw, _ in replies[:3]] == sent  # originals first, before the slice's copies
    assert [c.meta["CMRLandmark_Status"] for c in copies_of(replies, COPIES)] == ["ok"] * 3


def test_empty_stream_ends_cleanly(passive_server):
    assert session(passive_server.port, []) == []


def test_config_file_name_message_as_fire_clients_send_gives_default_parameters(passive_server):
    name = b"default.xml".ljust(1024, b"\x00")
    opening = [MESSAGE_ID.pack(1) + name, text_message(HEADER, header_xml(protocol_name="cine_SAX"), True)]
    sent = [image_message(image) for image in cine()]
    replies = session(passive_server.port, sent, opening=opening)
    assert_passed_through(replies, sent)
    assert [(c.meta["CMRLandmark_Status"], c.meta["CMRLandmark_View"]) for c in copies_of(replies, COPIES)] == [
        ("ok", "sax")] * 3


@pytest.mark.parametrize("opening", [[], [text_message(CONFIG, SAX_CONFIG)]], ids=["no config, no header",
                                                                                 "no header"])
def test_missing_config_or_header_still_passes_images(passive_server, opening, caplog):
    sent = [image_message(image) for image in cine()]
    replies = session(passive_server.port, sent, opening=opening)
    assert_passed_through(replies, sent)
    assert_tagged(copies_of(replies, COPIES), "header could not be parsed")
    assert "no ISMRMRD header" in caplog.text


def test_header_that_is_not_xml_is_tagged(passive_server):
    sent = [image_message(image) for image in cine()]
    opening = [text_message(CONFIG, SAX_CONFIG), text_message(HEADER, "<oops")]
    replies = session(passive_server.port, sent, opening=opening)
    assert_passed_through(replies, sent)
    assert_tagged(copies_of(replies, COPIES), "header could not be parsed")


def test_phases_missing_and_out_of_order(passive_server):
    # Header: 4 phases. Slice 0 arrives 2, 0, 3 (phase 1 never comes); slice 1 arrives 3, 1, 0, 2.
    order = [(0, 2), (0, 0), (0, 3), (1, 3), (1, 1), (1, 0), (1, 2)]
    images = [with_head(sax_plane_image(phantom(p), series_index=SERIES, slice_index=s, phase=p, image_index=p + 1))
              for s, p in order]
    sent = [image_message(image) for image in images]
    replies = session(passive_server.port, sent, phases=4, slices=2)
    assert [raw for raw, item in replies if item.image_series_index == SERIES] == sent  # arrival order kept
    copies = copies_of(replies, COPIES)
    # Slice 1 completes first (4 phases), slice 0 is released incomplete at the end; each in phase order.
    assert [(c.slice, c.phase) for c in copies] == [(1, 0), (1, 1), (1, 2), (1, 3), (0, 0), (0, 2), (0, 3)]
    assert all(c.meta["CMRLandmark_Status"] == "ok" for c in copies)


def test_acquisitions_waveforms_and_text_pass_through_unchanged(passive_server):
    acquisition = ismrmrd.Acquisition.from_array(np.arange(64, dtype=np.complex64).reshape(2, 32))
    waveform = ismrmrd.Waveform.from_array(np.arange(20, dtype=np.uint32).reshape(2, 10))
    images = [image_message(image) for image in cine()]
    text = "a log line from upstream, naïve".encode()  # MRD TEXT (id 5): a length prefix, then UTF-8
    sent = [b"\xf0\x03" + acquisition.to_bytes(), images[0], struct.pack("<H", 1026) + waveform.to_bytes(),
            images[1], struct.pack("<HI", 5, len(text)) + text, images[2], b"\xf0\x03" + acquisition.to_bytes()]
    replies = session(passive_server.port, sent)
    copies = copies_of(replies, COPIES)
    assert [raw for raw, item in replies if not any(item is c for c in copies)] == sent
    assert len(copies) == 3 and len(replies) == 10


def test_a_fallback_model_is_said_once_in_each_scans_log(passive_server, caplog):
    # the model is looked up before the images and again for each slice: each scan says it once, and a passive
    # server's later scans say it too
    config = SAX_CONFIG.replace('value="cine"', 'value="t1"')
    for _ in range(2):
        session(passive_server.port, [image_message(image) for image in cine()], config=config)
    assert caplog.text.count("no sax model for sequence 't1'") == 2


def test_only_the_chosen_data_roles_are_detected_on(passive_server, caplog):
    # A chain that fits T1 maps also sends its T1-weighted images and SD maps; data_roles="T1" keeps the model to
    # the maps, and a map without any data role (a scanner's own) is still detected on.
    def with_role(images: list[ismrmrd.Image], role: str | None) -> list[bytes]:
        for image in images:
            if role is not None:
                image.meta["GADGETRON_DataRole"] = role
        return [image_message(image) for image in images]

    maps = with_role(cine(series_index=11), "T1")
    sd_maps = with_role(cine(series_index=12), "T1SD")
    untagged = with_role(cine(series_index=13), None)
    config = SAX_CONFIG.replace("</configuration>", '<property name="data_roles" value="T1"/></configuration>')
    replies = session(passive_server.port, maps + sd_maps + untagged, config=config)
    assert_passed_through(replies, maps + sd_maps + untagged)
    assert [len(copies_of(replies, series + 100)) for series in (11, 12, 13)] == [3, 0, 3]
    assert caplog.text.count("GADGETRON_DataRole T1SD pass on without landmarks: data_roles=T1") == 1


def test_messages_the_gadgetron_package_cannot_write_back_go_on_as_they_came(passive_server, caplog):
    # An empty acquisition bucket (id 1050): the gadgetron package reads buckets but has no writer for them.
    bucket = (struct.pack("<H", 1050) + bytes(ctypes.sizeof(acquisition_bucket.bucket_meta))
              + struct.pack("<QQ", 0, 0))  # no data or reference acquisitions, no stats, no waveforms
    # An image array with a waveform (id 1024): gadgetron 1.4.1 writes each waveform with a message id inside the
    # array, so re-serialising it would corrupt the stream downstream.
    array = io.BytesIO()
    write_image_array(array, ImageArray(data=np.ones((1, 1, 1, 1, 1, 4, 4), np.complex64),
                                        headers=np.array([ismrmrd.ImageHeader()], dtype=object).reshape(1, 1, 1),
                                        meta=["<ismrmrdMeta/>"], waveform=None, acq_headers=None))
    waveform = ismrmrd.Waveform.from_array(np.arange(8, dtype=np.uint32).reshape(2, 4))
    with_waveform = (array.getvalue()[:-2] + b"\x01" + struct.pack("<Q", 1) + waveform.to_bytes()
                     + b"\x00")  # waveform present: one; acquisition headers absent
    images = [image_message(image) for image in cine()]
    sent = [images[0], bucket, images[1], with_waveform, images[2]]
    # ismrmrd's client cannot decode buckets or image arrays: the reply stream is checked as bytes
    opening = [text_message(CONFIG, SAX_CONFIG, False), text_message(HEADER, header_xml(), False)]
    with socket.create_connection(("127.0.0.1", passive_server.port), timeout=60) as sock:
        sock.sendall(b"".join(opening + sent) + MESSAGE_ID.pack(CLOSE))
        replies = b"".join(iter(lambda: sock.recv(1 << 16), b""))
    position = 0
    for message in sent:  # each one, whole and in the order sent (the copies come in between)
        position = replies.index(message, position) + len(message)
    assert replies.endswith(MESSAGE_ID.pack(CLOSE))
    # a physicist who placed the gadget before ImageArraySplitGadget learns why no landmarks appear
    assert "received image arrays" in caplog.text and "ImageArraySplitGadget" in caplog.text


# --- malformed and truncated messages, disconnects -------------------------------------------------------------


def _patched(message: bytes, offset: int, value: bytes) -> bytes:
    return message[:offset] + value + message[offset + len(value):]


HEADER_BYTES = 2 + ctypes.sizeof(ismrmrd.ImageHeader)  # message id + image header
_DATA_TYPE = 2 + ismrmrd.ImageHeader.data_type.offset
_MATRIX = 2 + ismrmrd.ImageHeader.matrix_size.offset
_CHANNELS = 2 + ismrmrd.ImageHeader.channels.offset

# name -> (bad bytes that follow two good images, whether the client still ends with CLOSE, log text)
MALFORMED = {
    "unknown message id": (lambda m: struct.pack("<H", 999) + m, True, "no registered readers"),
    "truncated image header": (lambda m: m[:100], False, "without a CLOSE"),
    "truncated image data": (lambda m: m[:-10], False, "without a CLOSE"),
    "absurd attribute length": (lambda m: _patched(m, HEADER_BYTES, struct.pack("<Q", 1 << 40)), True,
                                "attribute string of"),
    "absurd matrix and channels": (lambda m: _patched(_patched(m, _MATRIX, struct.pack("<3H", 65535, 65535, 65535)),
                                                      _CHANNELS, struct.pack("<H", 65535)), True, "claims"),
    "unknown data type": (lambda m: _patched(m, _DATA_TYPE, struct.pack("<H", 99)), True, "unknown ISMRMRD data_type"),
}


@pytest.mark.parametrize("corrupt, client_closes, logged", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_message_ends_the_stream_cleanly(passive_server, corrupt, client_closes, logged, caplog):
    images = [image_message(image) for image in cine()]
    sent = images[:2]
    # The exchange ends at the server's CLOSE (a missing one fails it; a hang fails it by timeout).
    replies = session(passive_server.port, sent + [corrupt(images[2])], close=client_closes)
    assert [raw for raw, _ in replies[:2]] == sent
    copies = copies_of(replies, COPIES)
    assert [c.phase for c in copies] == [0, 1]  # the slice received so far is still processed
    assert all(c.meta["CMRLandmark_Status"] == "ok" for c in copies)
    assert logged in caplog.text
    test_clean_stream_with_either_string_style(passive_server, nul=False)  # and the server still serves


@pytest.mark.parametrize("stop", ["mid-message", "before reading the replies"])
def test_client_disconnect_leaves_the_server_serving(passive_server, stop):
    images = [image_message(image) for image in cine()]
    with socket.create_connection(("127.0.0.1", passive_server.port), timeout=TIMEOUT_S) as sock:
        payload = text_message(CONFIG, SAX_CONFIG) + text_message(HEADER, header_xml()) + b"".join(images)
        sock.sendall(payload[:-500] if stop == "mid-message" else payload + MESSAGE_ID.pack(4))
    test_clean_stream_with_either_string_style(passive_server, nul=True)


def test_connection_that_closes_at_once_leaves_the_server_serving(passive_server):
    socket.create_connection(("127.0.0.1", passive_server.port), timeout=TIMEOUT_S).close()
    test_clean_stream_with_either_string_style(passive_server, nul=False)


# --- concurrency -----------------------------------------------------------------------------------------------


def test_four_streams_at_once_are_answered_independently(passive_server):
    """Each client sends its own series (own index, own pixels); each gets back exactly its own originals and its
    own annotated series, nothing of the others'."""
    results: dict[int, list] = {}
    sent: dict[int, list[bytes]] = {}
    for client in range(4):
        series = 10 + client
        images = cine(series_index=series, pixels=lambda p, c=client: np.roll(phantom(p), 5 * c, axis=1))
        sent[series] = [image_message(image) for image in images]

    def run(series: int) -> None:
        results[series] = session(passive_server.port, sent[series], nul=bool(series % 2))

    threads = [threading.Thread(target=run, args=(series,)) for series in sent]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert sorted(results) == sorted(sent)
    for series, replies in results.items():
        assert [raw for raw, _ in replies[:3]] == sent[series]
        copies = copies_of(replies, series + 100)
        assert len(replies) == 6 and len(copies) == 3
        assert {c.meta["CMRLandmark_OriginalSeriesIndex"] for c in copies} == {str(series)}
        assert all(c.meta["CMRLandmark_Status"] == "ok" for c in copies)
        for copy, message in zip(copies, sent[series], strict=True):
            original = ismrmrd.Image.from_bytes(message[2:])
            changed = copy.data != original.data  # only the crosses differ from this client's own pixels
            assert 0 < changed.sum() < 0.1 * changed.size


def test_failed_accept_or_thread_start_leaves_the_server_listening(passive_server, monkeypatch, caplog):
    """Out of file descriptors, or of threads: that one connection is refused, the server goes on."""
    real_start = threading.Thread.start
    failures = {"accept": 1, "start": 1}

    class FailingListener:
        def __init__(self, listener: socket.socket) -> None:
            self._listener = listener

        def accept(self):
            if failures["accept"]:
                failures["accept"] -= 1
                raise OSError(24, "Too many open files")
            return self._listener.accept()

        def __getattr__(self, name: str):
            return getattr(self._listener, name)

    def start(thread: threading.Thread) -> None:
        if failures["start"] and thread.name.endswith("(_handle)"):
            failures["start"] -= 1
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(passive_server, "_listener", FailingListener(passive_server._listener))
    monkeypatch.setattr(threading.Thread, "start", start)
    with socket.create_connection(("127.0.0.1", passive_server.port), timeout=TIMEOUT_S) as refused:
        assert refused.recv(16) == b""  # closed by the server without a thread: EOF, not a hang
    test_clean_stream_with_either_string_style(passive_server, nul=False)
    assert "Too many open files" in caplog.text and "can't start new thread" in caplog.text
