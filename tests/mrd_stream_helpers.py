"""Realistic ISMRMRD headers and images for the series-buffer and gadget tests (built, not hard-coded bytes)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Sequence

import ismrmrd
import ismrmrd.xsd
import numpy as np
import torch
from ismrmrd.serialization import ProtocolDeserializer

from cmr_landmark.config import COARSE_GRID, FINE_GRID_BY_VIEW, LANDMARKS_BY_VIEW
from cmr_landmark.export import export_cascade
from cmr_landmark.network import LandmarkCascade, UNet


def header_xml(
    protocol_name: str = "CMR_cine_SAX",
    phases: int | None = 3,
    slices: int = 1,
    matrix_xy: tuple[int, int] = (64, 64),
    field_of_view_mm: tuple[float, float] = (256.0, 256.0),
) -> str:
    """An ISMRMRD header as a scanner converter writes it: one Cartesian encoding, cine phases and slices."""
    phase_limit = ""
    if phases is not None:
        phase_limit = f"<phase><minimum>0</minimum><maximum>{phases - 1}</maximum><center>0</center></phase>"
    space = (
        f"<matrixSize><x>{matrix_xy[0]}</x><y>{matrix_xy[1]}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm><x>{field_of_view_mm[0]}</x><y>{field_of_view_mm[1]}</y><z>8</z></fieldOfView_mm>"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        f"<measurementInformation><patientPosition>HFS</patientPosition><protocolName>{protocol_name}</protocolName>"
        "</measurementInformation>"
        "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz></experimentalConditions>"
        f"<encoding><encodedSpace>{space}</encodedSpace><reconSpace>{space}</reconSpace>"
        "<encodingLimits>"
        f"<slice><minimum>0</minimum><maximum>{slices - 1}</maximum><center>0</center></slice>{phase_limit}"
        "</encodingLimits><trajectory>cartesian</trajectory></encoding>"
        "</ismrmrdHeader>"
    )


def header(**kwargs) -> ismrmrd.xsd.ismrmrdHeader:
    return ismrmrd.xsd.CreateFromDocument(header_xml(**kwargs))


def sax_plane_image(
    pixels: np.ndarray,
    series_index: int = 1,
    slice_index: int = 0,
    phase: int = 0,
    image_index: int = 1,
    field_of_view_mm: tuple[float, float] = (256.0, 256.0),
    meta: dict | None = None,
) -> ismrmrd.Image:
    """A 2-D magnitude image in a double-oblique plane, with the header fields a reconstruction fills in."""
    image = ismrmrd.Image.from_array(pixels[np.newaxis, np.newaxis])  # (channels, z, y, x)
    head = image.getHead()
    head.field_of_view = (field_of_view_mm[0], field_of_view_mm[1], 8.0)
    head.position = (12.5, -40.0, 25.0)
    head.read_dir = (0.6, -0.8, 0.0)
    head.phase_dir = (0.48, 0.36, 0.8)
    head.slice_dir = (-0.64, -0.48, 0.6)
    head.image_series_index = series_index
    head.image_index = image_index
    head.slice = slice_index
    head.phase = phase
    head.image_type = ismrmrd.IMTYPE_MAGNITUDE
    image.setHead(head)
    image.data[:] = pixels[np.newaxis, np.newaxis]
    if meta:
        image.meta = dict(meta)
    return image


def patient_mm_by_hand(position, read_dir, phase_dir, field_of_view_mm, matrix_size, row: float, col: float
                       ) -> np.ndarray:
    """Where pixel (row, col) lies in the patient (LPS mm), by the MRD definition written out on its own (not the
    package's geometry module, which the tests check against it): pixel centres lie symmetrically about
    ``position``, columns step along ``read_dir`` by fov_x / nx, rows along ``phase_dir`` by fov_y / ny."""
    nx, ny = matrix_size[0], matrix_size[1]
    col_mm, row_mm = field_of_view_mm[0] / nx, field_of_view_mm[1] / ny
    return (np.asarray(position, float) + (col - (nx - 1) / 2) * col_mm * np.asarray(read_dir, float)
            + (row - (ny - 1) / 2) * row_mm * np.asarray(phase_dir, float))


def septal_arc_deg(anterior_rc: Sequence[float], posterior_rc: Sequence[float], centre_rc: Sequence[float],
                   spacing_mm: Sequence[float]) -> float:
    """The angle (degrees) at the LV centre between the two RV insertion points, measured in mm, not pixels (law of
    cosines, by hand)."""
    def mm(point):
        return (np.asarray(point, float) - np.asarray(centre_rc, float)) * np.asarray(spacing_mm, float)

    a, p = mm(anterior_rc), mm(posterior_rc)
    chord = np.sum((a - p) ** 2)
    cosine = (np.sum(a**2) + np.sum(p**2) - chord) / (2 * np.sqrt(np.sum(a**2) * np.sum(p**2)))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


# --- playing Gadgetron's side of the wire ----------------------------------------------------------------------

MESSAGE_ID = struct.Struct("<H")
LENGTH = struct.Struct("<I")
CONFIG, HEADER, CLOSE, IMAGE = 2, 3, 4, 1022


def text_message(message_id: int, text: str, nul_terminated: bool = False) -> bytes:
    """A config (2) or header (3) message: id, uint32 length, text (MRD/FIRE clients add a NUL)."""
    payload = text.encode("utf-8") + (b"\x00" if nul_terminated else b"")
    return MESSAGE_ID.pack(message_id) + LENGTH.pack(len(payload)) + payload


def image_message(image: ismrmrd.Image, attribute_text: str | None = None) -> bytes:
    """An image message; ``attribute_text`` replaces the meta XML verbatim (with formatting ismrmrd's own
    serialiser would not reproduce), so that only a gadget that forwards raw bytes sends it back identical."""
    if attribute_text is None:
        return MESSAGE_ID.pack(IMAGE) + image.to_bytes()
    attributes = attribute_text.encode("utf-8")
    head = image.getHead()
    head.attribute_string_len = len(attributes)
    return (MESSAGE_ID.pack(IMAGE) + bytes(head) + struct.pack("<Q", len(attributes)) + attributes
            + image.data.tobytes())


class RecordingReader:
    """A file-like reader that remembers the bytes read since the last :meth:`take`."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._seen = bytearray()

    def read(self, nbytes: int) -> bytes:
        data = self._stream.read(nbytes)
        self._seen += data
        return data

    def take(self) -> bytes:
        seen, self._seen = bytes(self._seen), bytearray()
        return seen


def exchange(sock: socket.socket, messages: list[bytes], timeout_s: float = 120.0,
             close: bool = True) -> list[tuple[bytes, object]]:
    """Send ``messages`` then CLOSE (from a thread, so neither side can block the other) and read every reply
    until the gadget's CLOSE: a list of (raw message bytes, decoded item). ``close=False``: no CLOSE message, the
    socket's sending side is shut down instead (a client that stops mid-message, or without saying goodbye)."""
    sock.settimeout(timeout_s)  # a hang fails the test instead of blocking it

    def send() -> None:
        sock.sendall(b"".join(messages) + (MESSAGE_ID.pack(CLOSE) if close else b""))
        if not close:
            sock.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    reader = RecordingReader(sock.makefile("rb"))
    replies = []
    for item in ProtocolDeserializer(reader).deserialize():
        replies.append((reader.take(), item))
    sender.join(timeout_s)
    return replies


def export_throwaway_model(folder, view: str = "sax", sequence: str = "cine", probability_threshold: float = 0.0
                           ) -> str:
    """An untrained cascade, by default with threshold 0 (every landmark 'found'), for wire and attribute tests
    only."""
    torch.manual_seed(0)
    name = f"throwaway_{view}_{sequence}"
    n = len(LANDMARKS_BY_VIEW[view])
    cascade = LandmarkCascade(UNet(n, widths=(4, 8)), UNet(n, widths=(4, 8)))
    export_cascade(cascade, name, view, sequence, COARSE_GRID, FINE_GRID_BY_VIEW[view], probability_threshold,
                   folder)
    return name


def phantom(phase: int, size: int = 64) -> np.ndarray:
    """A bright disc (blood pool) with a darker ring on noise; the disc shrinks over the phases like a cine."""
    rows, cols = np.mgrid[:size, :size]
    radius = np.hypot(rows - size * 0.45, cols - size * 0.55)
    pool = 9.0 - phase
    image = np.where(radius < pool, 900.0, np.where(radius < pool + 3, 250.0, 80.0))
    return (image + np.random.default_rng(phase).normal(0, 15, image.shape)).astype(np.float32)


# --- talking to a passive server -------------------------------------------------------------------------------

SAX_CONFIG = ('<configuration><property name="view" value="sax"/><property name="sequence" value="cine"/>'
              "</configuration>")


def session(port: int, messages: list[bytes], config: str = SAX_CONFIG, nul: bool = False, close: bool = True,
            opening: list[bytes] | None = None, timeout_s: float = 60.0, **header_kwargs
            ) -> list[tuple[bytes, object]]:
    """One connection: config + header (unless ``opening`` replaces them), the messages, CLOSE; the replies."""
    if opening is None:
        opening = [text_message(CONFIG, config, nul), text_message(HEADER, header_xml(**header_kwargs), nul)]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        return exchange(sock, opening + messages, timeout_s=timeout_s, close=close)


def assert_passed_through(replies: list[tuple[bytes, object]], sent: list[bytes]) -> None:
    """Every sent message is among the replies, bit-identical and in the order sent."""
    raw_replies = iter(raw for raw, _ in replies)
    missing = [i for i, message in enumerate(sent) if not any(raw == message for raw in raw_replies)]
    assert not missing, f"messages {missing} of {len(sent)} did not come back unchanged and in order"


def copies_of(replies: list[tuple[bytes, object]], series_index: int) -> list[ismrmrd.Image]:
    """The replies that are images of ``series_index`` (the annotated copies: original index + offset)."""
    return [item for _, item in replies if isinstance(item, ismrmrd.Image) and item.image_series_index == series_index]
