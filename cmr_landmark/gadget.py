"""The inline gadget's library: a chain of generators over a Gadgetron connection.

    connection -> pass_originals -> slice_batches -> landmark_outputs -> connection.send

- every item goes back downstream as soon as it is read, images as the exact bytes that came in (a reader keeps
  the raw message, a writer sends it back; re-serialising an ismrmrd.Image would rewrite its attribute XML).
  One thread runs the chain, so an item that arrives while a slice is being detected is read after it;
- the images are buffered per slice (:mod:`cmr_landmark.series`), and each complete slice is detected in one
  batch (all phases, same crop), measured, annotated, tagged and sent as a new series
  (image_series_index + ``series_index_offset``);
- whatever fails for a slice, its originals have already gone out; the slice's copies are sent tagged
  CMRLandmark_Status=error with the message, without crosses.

:func:`landmark_detection` is the target Gadgetron starts (``python -m gadgetron PORT
gadgets.cmr_landmark_gadget landmark_detection``); :func:`serve` is the passive mode (this process listens and
Gadgetron, or any MRD client, connects).
"""

from __future__ import annotations

import copy
import ctypes
import functools
import logging
import re
import select
import signal
import socket
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import ismrmrd
import ismrmrd.xsd
import numpy as np
import torch
from gadgetron.external import Connection
from gadgetron.external.constants import (
    GADGET_MESSAGE_CLOSE,
    GADGET_MESSAGE_CONFIG,
    GADGET_MESSAGE_FILENAME,
    GADGET_MESSAGE_HEADER,
    GADGET_MESSAGE_ISMRMRD_IMAGE,
    GADGET_MESSAGE_TEXT,
    GadgetMessageIdentifier,
    uint64,
)
from gadgetron.external.readers import read_byte_string
from ismrmrd.image import get_dtype_from_data_type
from ismrmrd.meta import Meta

from .annotate import draw_crosses
from .config import ATTRIBUTE_PREFIX, LANDMARKS_BY_VIEW
from .detector import Detector, ImageLandmarks, default_device, detect_in_orientation
from .gadget_parameters import (
    GadgetParameters,
    ParameterError,
    gadget_configuration,
    parse_config_bytes,
    properties_from_config,
)
from .geometry import model_display_orientation, pixel_spacing_mm, pixel_to_patient_mm
from .model_choice import header_texts, meta_texts, sequence_from_texts, view_from_texts
from .model_store import ModelError, find_model
from .series import SeriesBuffer, SliceBatch
from .slice_measures import measure_slice

log = logging.getLogger("cmr_landmark.gadget")

DATA_ROLE = "CMRLandmark"
SEQUENCE_DESCRIPTION_SUFFIX = "_LANDMARKS"
# The image comments annotated_image and error_image write. An image that comes through a second time (a replayed
# output, two landmark gadgets in one chain) loses them with its CMRLandmark_* attributes, so that its copy says
# only what this pass found.
OWN_COMMENT = re.compile(r"(SAX|LAX) landmarks \d+/\d+|LV length .* mm|RVI angle .* deg|landmark detection failed")


# --- the connection: NUL-tolerant, and images kept as their raw bytes ------------------------------------------


class EndOfStream(ConnectionError):
    """The peer closed the socket (without the CLOSE message, or in the middle of a message)."""


class StreamError(ValueError):
    """The bytes on the wire cannot be framed (a message claims an absurd size, a config or header is missing):
    nothing after them can be read, so the stream ends there."""


# A single read larger than this is a corrupt length field, not data: the largest real message part is the pixel
# data of one image (a 512 x 512 x 256 complex volume is 512 MiB).
MAX_READ_BYTES = 2 << 30
# ISMRMRD attribute XML is kilobytes; anything near this is a corrupt length.
MAX_ATTRIBUTE_BYTES = 64 << 20
RECV_CHUNK_BYTES = 4 << 20
# After our CLOSE, how long to read (and drop) what the peer still sends, so that closing a socket with unread
# bytes does not send a TCP reset that makes the peer discard replies it has not read yet (Windows stacks do).
DRAIN_TIMEOUT_S = 2.0
CONFIG_FILE_NAME_BYTES = 1024  # MRD/FIRE "config file" message (id 1): a fixed-size, NUL-padded name


class GuardedSocket(Connection.SocketWrapper):
    """The gadgetron package's socket wrapper, made safe against a broken or hostile peer:

    - a peer that goes away ends reads with :class:`EndOfStream` (the package's reader loops forever on the empty
      reads of a closed socket);
    - a read larger than :data:`MAX_READ_BYTES` raises :class:`StreamError` at once, and memory is taken as bytes
      arrive (chunks), not up front, so a corrupt length field cannot allocate gigabytes;
    - closing sends CLOSE, then drains the peer briefly (see :data:`DRAIN_TIMEOUT_S`) and never raises.
    """

    def read(self, nbytes: int) -> bytes:
        if nbytes > MAX_READ_BYTES:
            raise StreamError(f"a message part claims {nbytes} bytes (limit {MAX_READ_BYTES}): the stream is corrupt")
        buffer = bytearray()
        while len(buffer) < nbytes:
            chunk = self.socket.recv(min(nbytes - len(buffer), RECV_CHUNK_BYTES))
            if not chunk:
                raise EndOfStream("the peer closed the connection")
            buffer += chunk
        return bytes(buffer)

    def close(self) -> None:
        try:
            self.socket.sendall(GadgetMessageIdentifier.pack(GADGET_MESSAGE_CLOSE))
            self.socket.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while (left := deadline - time.monotonic()) > 0:
                self.socket.settimeout(left)
                if not self.socket.recv(RECV_CHUNK_BYTES):
                    break
        except OSError as error:  # the peer is gone already: nothing more to tell it
            log.debug("closing the connection: %s", error)
        finally:
            self.socket.close()


def guard_against_eof(connection: Connection) -> None:
    """Give a connection Gadgetron made the guarded socket (EOF, size limits, drain on close)."""
    if not isinstance(connection.socket, GuardedSocket):
        connection.socket = GuardedSocket(connection.socket.socket)


class MrdConnection(Connection):
    """A gadgetron Connection for passive mode, tolerant of the clients that connect to it:

    - config and header strings with or without a trailing NUL (Gadgetron sends them bare; MRD/FIRE-style
      clients NUL-terminate them, which the package's XML parsing refuses);
    - a config *name* (MRD "config file" message, id 1, as python-ismrmrd-server's client sends by default) or a
      config that is not XML: default parameters;
    - a missing config or header: the first message that is not one is read as stream data, so its images still
      pass through (header None: the copies are tagged with the error);
    - a header that cannot be parsed: header None, instead of failing the connection;
    - the :class:`GuardedSocket` behaviour (EOF, absurd sizes, drain on close).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._pending_identifier: int | None = None
        super().__init__(sock)

    def _read_message_identifier(self) -> int:
        if self._pending_identifier is not None:
            identifier, self._pending_identifier = self._pending_identifier, None
            return identifier
        return super()._read_message_identifier()

    def _read_config(self):
        # The base __init__ wraps the socket in its own wrapper and reads config and header at once: swap in the
        # guarded one before the first read.
        guard_against_eof(self)
        identifier = self._read_message_identifier()
        if identifier == GADGET_MESSAGE_FILENAME:
            name = self.socket.read(CONFIG_FILE_NAME_BYTES)
            log.info("client asked for configuration %r: using default parameters",
                     name.rstrip(b"\x00").decode("utf-8", errors="replace"))
            return None, name
        if identifier != GADGET_MESSAGE_CONFIG:
            log.error("the stream starts with message %d, not a configuration: using default parameters", identifier)
            self._pending_identifier = identifier
            return None, b""
        config_bytes = read_byte_string(self.socket)
        return parse_config_bytes(config_bytes), config_bytes

    def _read_header(self):
        identifier = self._read_message_identifier()
        if identifier != GADGET_MESSAGE_HEADER:
            log.error("no ISMRMRD header (message %d came instead): images pass through, copies are tagged",
                      identifier)
            self._pending_identifier = identifier
            return None, b""
        header_bytes = read_byte_string(self.socket)
        try:
            return ismrmrd.xsd.CreateFromDocument(header_bytes.rstrip(b"\x00").decode("utf-8")), header_bytes
        except Exception as error:  # xsdata raises several parser error types
            log.error("ISMRMRD header could not be parsed: %s", error)
            return None, header_bytes


@dataclass
class ReceivedImage:
    """An image message as it arrived: its exact bytes (sent on unchanged) and the parsed image."""

    raw: bytes
    image: ismrmrd.Image
    meta_error: str = ""  # the attribute XML could not be parsed: the image is used with empty meta


class ByteReader(Protocol):  # the gadgetron connection's socket wrapper; a BytesIO in tests
    def read(self, size: int) -> bytes: ...


class ByteWriter(Protocol):
    def write(self, data: bytes) -> object: ...


def read_received_image(source: ByteReader) -> ReceivedImage:
    """Reader for GADGET_MESSAGE_ISMRMRD_IMAGE that keeps the raw message bytes with the parsed image."""
    header_bytes = source.read(ctypes.sizeof(ismrmrd.ImageHeader))
    head = ismrmrd.ImageHeader.from_buffer_copy(header_bytes)
    length_bytes = source.read(uint64.size)
    attribute_length = uint64.unpack(length_bytes)[0]
    if attribute_length > MAX_ATTRIBUTE_BYTES:
        raise StreamError(f"image attribute string of {attribute_length} bytes (limit {MAX_ATTRIBUTE_BYTES}): "
                          "the stream is corrupt")
    attribute_bytes = source.read(attribute_length)
    try:
        dtype = np.dtype(get_dtype_from_data_type(head.data_type))
    except (KeyError, TypeError) as error:
        # Without the element size the rest of the stream cannot be framed: stop the stream with a clear error.
        raise StreamError(f"image with unknown ISMRMRD data_type {head.data_type}: cannot read the stream on"
                          ) from error
    shape = (head.channels, head.matrix_size[2], head.matrix_size[1], head.matrix_size[0])
    # Python ints: four uint16 factors times the element size can overflow numpy's int64.
    data_length = shape[0] * shape[1] * shape[2] * shape[3] * dtype.itemsize
    data_bytes = source.read(data_length)
    attribute_text = attribute_bytes.rstrip(b"\x00").decode("utf-8", errors="replace")
    meta_error = ""
    try:
        meta = Meta.deserialize(attribute_text)
    except Exception as error:  # ElementTree.ParseError or the AssertionError Meta raises on a foreign root
        meta, meta_error = Meta(), f"image meta attributes could not be parsed: {error or type(error).__name__}"
    data = np.frombuffer(data_bytes, dtype=dtype).reshape(shape).copy()
    image = ismrmrd.Image(head=header_bytes, meta=meta, data=data)
    return ReceivedImage(header_bytes + length_bytes + attribute_bytes + data_bytes, image, meta_error)


def write_received_image(destination: ByteWriter, received: ReceivedImage) -> None:
    destination.write(GadgetMessageIdentifier.pack(GADGET_MESSAGE_ISMRMRD_IMAGE))
    destination.write(received.raw)


@dataclass
class ReceivedItem:
    """Any other message as it arrived: its id and exact bytes, sent on unchanged (nothing here reads it)."""

    message_id: int
    raw: bytes


class RecordingReader:
    """A byte source that keeps a copy of everything read through it."""

    def __init__(self, source: ByteReader) -> None:
        self.source = source
        self.chunks: list[bytes] = []

    def read(self, size: int) -> bytes:
        data = self.source.read(size)
        self.chunks.append(data)
        return data


def read_recorded(message_id: int, reader: Callable[[ByteReader], object], source: ByteReader) -> ReceivedItem:
    """The exact bytes of one message, framed by ``reader`` (its item is dropped): the gadgetron package's readers
    frame its message types, but its writers do not give back what came in (in 1.4.1 an image array's waveforms
    come back corrupt, and acquisition buckets have no writer at all). A message its reader cannot read (an
    image array whose attributes are not ASCII) still ends the stream there, logged, as before."""
    recording = RecordingReader(source)
    reader(recording)
    return ReceivedItem(message_id, b"".join(recording.chunks))


def write_received_item(destination: ByteWriter, received: ReceivedItem) -> None:
    destination.write(GadgetMessageIdentifier.pack(received.message_id))
    destination.write(received.raw)


def keep_items_as_received(connection: Connection) -> None:
    """Every message with a reader goes back downstream as the bytes that came in: images parsed for detection
    (:func:`read_received_image`), every other type framed by the gadgetron package's own reader and recorded, and
    MRD text messages (which the package has no reader for) by their length prefix. A message id with no reader
    at all ends the stream (logged; the slices so far are still processed)."""
    readers = {**connection.readers, GADGET_MESSAGE_TEXT: read_byte_string}
    for message_id, reader in readers.items():
        if message_id not in (GADGET_MESSAGE_ISMRMRD_IMAGE, GADGET_MESSAGE_CLOSE):
            connection.readers[message_id] = functools.partial(read_recorded, message_id, reader)
    connection.readers[GADGET_MESSAGE_ISMRMRD_IMAGE] = read_received_image
    # Not connection.add_writer: in gadgetron 1.4.1 it wraps the writer in a one-argument lambda that send() then
    # calls with two (socket, item). The writer table it fills is the same list.
    connection.writers.insert(0, (lambda item: isinstance(item, ReceivedImage), write_received_image))
    connection.writers.insert(0, (lambda item: isinstance(item, ReceivedItem), write_received_item))


# --- models: loaded once per process ---------------------------------------------------------------------------

_detectors: dict[tuple[str, str, str], Detector] = {}
_detectors_lock = threading.Lock()


def torch_device(name: str) -> torch.device:
    if name == "auto":
        return default_device()
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device=cuda was asked for but torch sees no GPU")
    return torch.device(name)


def cached_detector(view: str, sequence: str, model_name: str, device: str) -> Detector:
    """The Detector for (view, sequence) or the named model, loaded (and sha256-checked) once per process."""
    spec = find_model(view, sequence, name=model_name or None)
    if spec.view != view:  # its points would be read, named and measured as the other view's
        raise ParameterError(f"model={spec.name} is a {spec.view} model; this series is {view}")
    target = torch_device(device)
    key = (spec.name, spec.sha256, str(target))
    with _detectors_lock:
        if key not in _detectors:
            log.info("loading model %s (%s/%s) on %s", spec.name, spec.view, spec.sequence, target)
            _detectors[key] = Detector(spec, device=target)
        return _detectors[key]


def choose_view_and_sequence(
    parameters: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None, meta: dict
) -> tuple[str, str]:
    """The parameters' view/sequence, or for 'auto' the rule of :mod:`cmr_landmark.model_choice`.
    An unknown view is an error (no safe default); an unknown sequence asks for the contrast-agnostic model
    ('any'; model_store.find_model)."""
    texts = header_texts(header) + meta_texts(meta)
    view, sequence = view_and_sequence_told(parameters, texts)
    if view is None:
        raise ParameterError(f"cannot tell the view (sax/lax) from the protocol texts {texts}; set the view parameter")
    if sequence is None:
        log.warning("cannot tell the sequence from %s: using the contrast-agnostic model", texts)
        sequence = "any"
    return view, sequence


def view_and_sequence_told(parameters: GadgetParameters, texts: list[str]) -> tuple[str | None, str | None]:
    """The view and sequence the parameters give, or for 'auto' what ``texts`` tell (None where they do not)."""
    view = parameters.view if parameters.view != "auto" else view_from_texts(texts)
    sequence = parameters.sequence if parameters.sequence != "auto" else sequence_from_texts(texts)
    return view, sequence


MAX_WARM_UP_IMAGES = 64


def load_model_before_images(parameters: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None) -> None:
    """Load and run once the model this stream will use, where the chain and the header already say which.

    A process's first call of a model pays for building its kernels (about 90 ms on the 2-core machine), and
    Gadgetron's active mode starts a process per scan; the configuration and header come when the scan starts,
    seconds before its first image. Where the model depends on the first image's attributes, or anything stops
    it, nothing is done here: the first slice loads the model and meets (and reports) any error itself."""
    view, sequence = view_and_sequence_told(parameters, header_texts(header))
    if view is None or (sequence is None and not parameters.model):
        return
    try:
        detector = cached_detector(view, sequence or "any", parameters.model, parameters.device)
        # a cine slice's phases come as one batch (capped: a header's phase count may be wrong, docs/gadget.md)
        detector.warm_up(min(parameters.phases_per_slice_count(header) or 1, MAX_WARM_UP_IMAGES))
    except Exception as error:  # the first slice meets it again and tags its copies with it
        log.info("model not loaded before the images: %s", error)


# --- the data path ---------------------------------------------------------------------------------------------


def pass_originals(connection: Connection) -> Iterator[ReceivedImage]:
    """Send every item straight back downstream, as the bytes that came in, then hand the images on for
    detection."""
    try:
        for item in connection:
            connection.send(item)
            if isinstance(item, ReceivedImage):
                if item.meta_error:
                    log.warning("%s: the image went on unchanged, its copy carries only the landmark attributes",
                                item.meta_error)
                yield item
    except EndOfStream:
        # The client stopped sending without CLOSE: finish what is buffered, as at a normal end of stream.
        log.warning("the stream ended without a CLOSE message")
    except StreamError as error:
        log.error("stream stopped: %s; the slices received so far are still processed", error)
    except Exception:  # whatever broke the reading, what was received is still processed
        log.exception("stream stopped by an unexpected error; the slices received so far are still processed")


def data_waiting(connection: Connection) -> bool:
    """Whether another image has begun to arrive (readable now, without blocking). Only an image counts: a slice
    does not wait on other items (waveforms) or the end of the stream."""
    sock = connection.socket.socket
    try:
        if not select.select([sock], [], [], 0)[0]:
            return False
        head = sock.recv(GadgetMessageIdentifier.size, socket.MSG_PEEK)  # readable, so this does not block
    except (OSError, ValueError):  # a closed socket: nothing more will come
        return False
    if len(head) < GadgetMessageIdentifier.size:  # the stream's end (b""), or an identifier half arrived
        return bool(head)
    return GadgetMessageIdentifier.unpack(head)[0] == GADGET_MESSAGE_ISMRMRD_IMAGE


def slice_batches(images: Iterator[ReceivedImage], phases_per_slice: int | None) -> Iterator[SliceBatch]:
    """Group images into slices (all phases), releasing each when complete and the rest at the end."""
    buffer: SeriesBuffer[ReceivedImage] = SeriesBuffer(phases_per_slice)
    for received in images:
        head = received.image.getHead()
        yield from buffer.add(received, head.image_series_index, head.slice, head.phase)
    yield from buffer.flush()


def magnitude_2d(image: ismrmrd.Image) -> np.ndarray:
    """The (rows, cols) magnitude of a 2-D image: root-sum-of-squares over channels, |.| of complex data."""
    data = image.data  # (channels, z, y, x)
    if data.shape[1] != 1:
        raise ValueError(f"landmark detection needs 2-D images, got {data.shape[1]} partitions (z)")
    if data.shape[0] == 1:  # one channel, the usual reconstructed image: |.| alone, without float64 squares
        plane = data[0, 0]
        return np.abs(plane if np.iscomplexobj(plane) else plane.astype(np.float32)).astype(np.float32, copy=False)
    planes = data[:, 0].astype(np.complex128 if np.iscomplexobj(data) else np.float64)  # no integer overflow in |.|
    return np.sqrt(np.sum(np.abs(planes) ** 2, axis=0)).astype(np.float32)


def check_usable(plane: np.ndarray, phase: int) -> None:
    """Refuse an image the model cannot work on or would only hallucinate on: smaller than 2 x 2, no finite pixel,
    or all finite pixels equal (e.g. all zero). Some NaN/Inf pixels are allowed (preprocessing sets them to 0)."""
    if min(plane.shape) < 2:
        raise ValueError(f"phase {phase} is {plane.shape[0]} x {plane.shape[1]} pixels: at least 2 x 2 are needed")
    finite = plane[np.isfinite(plane)]
    if finite.size == 0:
        raise ValueError(f"phase {phase} has no finite pixel (all NaN/Inf)")
    if finite.min() == finite.max():
        raise ValueError(f"phase {phase} has no signal: every finite pixel is {finite.min()}")


@dataclass
class SliceResult:
    """What detection found for one slice: the model, landmarks per phase and measures per phase, and why a phase
    left out (:class:`PreparedSlice`) could not be used."""

    model: str
    view: str
    sequence: str
    spacing_mm: tuple[float, float]
    landmarks: list[ImageLandmarks]
    measures: list[dict[str, float]]
    filled: list[dict[str, bool]] | None = None  # LAX cine: landmarks filled in from neighbouring phases
    unusable: dict[int, ValueError] = field(default_factory=dict)  # the slice's item index -> why it was left out


@dataclass
class PreparedSlice:
    """One slice checked and ready for the model: its view, model, pixel spacing, (phases, rows, cols) pixels and
    the orientation (quarter turns, mirror) in which the model sees them (docs/gadget.md, "Orientation")."""

    heads: list
    view: str
    sequence: str
    detector: Detector
    spacing_mm: tuple[float, float]
    pixels: np.ndarray  # of the usable phases only
    orientation: tuple[int, bool]  # (quarter turns, mirror) that shows the pixels as the model was trained to see
    unusable: dict[int, ValueError]  # the slice's item index -> why the model cannot use that phase (check_usable)


def prepare_slice(
    batch: SliceBatch, parameters: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None
) -> PreparedSlice:
    """Everything before the model for one slice (raises on anything that stops it)."""
    images = [received.image for received in batch.items]
    heads = [image.getHead() for image in images]
    output_series_index(batch.series_index, parameters)
    view, sequence = choose_view_and_sequence(parameters, header, dict(images[0].meta))
    detector = cached_detector(view, sequence, parameters.model, parameters.device)
    for h in heads:  # a plane that cannot place the points in the patient fails here, before the model runs
        pixel_to_patient_mm(np.zeros((0, 2)), tuple(h.position), tuple(h.read_dir), tuple(h.phase_dir),
                            tuple(h.field_of_view), tuple(h.matrix_size))
    spacings = {pixel_spacing_mm(tuple(h.field_of_view), tuple(h.matrix_size)) for h in heads}
    shapes = {tuple(h.matrix_size) for h in heads}
    if len(spacings) != 1 or len(shapes) != 1:
        raise ValueError(f"the phases of slice {batch.slice} differ in matrix {shapes} or pixel spacing {spacings}")
    pixels = np.stack([magnitude_2d(image) for image in images])
    orientations = {model_display_orientation(view, tuple(h.read_dir), tuple(h.phase_dir),
                                              detector.spec.display_rv_direction_deg) for h in heads}
    if len(orientations) != 1:
        raise ValueError(f"the phases of slice {batch.slice} differ in orientation (read_dir/phase_dir)")
    # A blank or corrupt phase is left out, not the whole slice: one lost frame must not cost a cine its measures.
    unusable = {}
    for index, (phase, plane) in enumerate(zip(batch.phases, pixels, strict=True)):
        try:
            check_usable(plane, phase)
        except ValueError as error:
            unusable[index] = error
    if len(unusable) == len(images):
        raise ValueError("; ".join(str(error) for error in unusable.values()))
    usable = [index for index in range(len(images)) if index not in unusable]
    return PreparedSlice(heads, view, sequence, detector, spacings.pop(), pixels[usable], orientations.pop(),
                         unusable)


def finish_slice(prepared: PreparedSlice, landmarks: list[ImageLandmarks], parameters: GadgetParameters) -> SliceResult:
    """Everything after the model for one slice (``landmarks``: the usable phases'): anatomical A/P naming, cine
    smoothing, measures (:func:`slice_measures.measure_slice`, as offline detection does). A phase left out stays
    in the slice with nothing found, so that a cine is smoothed over its real phases and the gap filled."""
    threshold = parameters.probability_threshold
    found = iter(landmarks)
    nothing: ImageLandmarks = dict.fromkeys(LANDMARKS_BY_VIEW[prepared.view])
    every_phase = [dict(nothing) if index in prepared.unusable else next(found) for index in range(len(prepared.heads))]
    measured = measure_slice(
        every_phase, prepared.view, prepared.spacing_mm,
        prepared.detector.spec.probability_threshold if threshold is None else threshold,
        [(tuple(head.read_dir), tuple(head.phase_dir)) for head in prepared.heads])
    return SliceResult(prepared.detector.spec.name, prepared.view, prepared.sequence, prepared.spacing_mm,
                       measured.landmarks, measured.measures, measured.filled, prepared.unusable)


def detect_slice(
    batch: SliceBatch, parameters: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None
) -> SliceResult:
    """Detection and measures for all phases of one slice, in one model batch (raises on anything that stops it)."""
    prepared = prepare_slice(batch, parameters, header)
    landmarks = detect_in_orientation(prepared.detector, prepared.pixels, prepared.spacing_mm, *prepared.orientation,
                                      same_slice=True, probability_threshold=parameters.probability_threshold)
    return finish_slice(prepared, landmarks, parameters)


def detect_stack(
    batches: list[SliceBatch], parameters: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None
) -> list[SliceResult]:
    """Single-phase slices that arrived together (a SAX stack, LGE) through the model in one batch.

    A batch of one image leaves most of the CPU idle; a stack in one call is several times faster. Raises when
    the slices cannot share one call (another model, matrix, spacing or orientation, or a slice that cannot be
    processed): the
    caller then goes slice by slice, so each slice still gets its own result or error.
    """
    prepared = [prepare_slice(batch, parameters, header) for batch in batches]
    first = prepared[0]
    for other in prepared:
        if (other.detector is not first.detector or other.spacing_mm != first.spacing_mm
                or other.pixels.shape != first.pixels.shape or len(other.pixels) != 1
                or other.orientation != first.orientation):
            raise ValueError("the slices differ in model, matrix, pixel spacing or orientation")
    found = detect_in_orientation(first.detector, np.concatenate([p.pixels for p in prepared]), first.spacing_mm,
                                  *first.orientation, probability_threshold=parameters.probability_threshold)
    return [finish_slice(p, [landmarks], parameters) for p, landmarks in zip(prepared, found, strict=True)]


MAX_SERIES_INDEX = 65535  # image_series_index is a uint16


def output_series_index(original: int, parameters: GadgetParameters) -> int:
    """The copies' series index; raises ValueError where it would not fit the uint16 field (ctypes would wrap it
    silently onto another series)."""
    index = original + parameters.series_index_offset
    if index > MAX_SERIES_INDEX:
        raise ValueError(f"series index {original} + series_index_offset {parameters.series_index_offset} = {index} "
                         f"exceeds {MAX_SERIES_INDEX}; the copies are put in series {MAX_SERIES_INDEX}")
    return index


def _copy_for_output(received: ReceivedImage, parameters: GadgetParameters) -> ismrmrd.Image:
    head = received.image.getHead()
    try:
        head.image_series_index = output_series_index(head.image_series_index, parameters)
    except ValueError:
        head.image_series_index = MAX_SERIES_INDEX  # only error copies get here: detect_slice checks first
    try:
        meta = without_earlier_results(received.image.meta)
    except Exception:  # the error copies come here too: whatever the attributes hold, the copy must go out
        log.exception("the original's attributes could not be copied: its copy carries only the landmark ones")
        meta = Meta()
    meta["CMRLandmark_OriginalSeriesIndex"] = str(received.image.getHead().image_series_index)
    meta["GADGETRON_DataRole"] = DATA_ROLE
    _append_once(meta, "GADGETRON_ImageProcessingHistory", "CMRLANDMARK")
    _append_once(meta, "GADGETRON_SeqDescription", SEQUENCE_DESCRIPTION_SUFFIX)
    return ismrmrd.Image(head=head, meta=meta, data=received.image.data.copy())


def without_earlier_results(meta: Meta) -> Meta:
    """A deep copy of an image's attributes (lists inside are appended to) without what this gadget wrote on an
    earlier pass (an image that carries CMRLandmark_Status: a replayed output, a second landmark gadget in a chain):
    its CMRLandmark_* attributes and its image comments (:data:`OWN_COMMENT`), which would contradict this pass
    where a landmark is no longer found or detection fails. Everything else stays, whatever its name or value (an
    attribute XML may hold an empty name or value: None here)."""
    kept = Meta({key: copy.deepcopy(value) for key, value in meta.items()
                 if not (isinstance(key, str) and key.startswith(ATTRIBUTE_PREFIX))})
    if f"{ATTRIBUTE_PREFIX}Status" in meta and "GADGETRON_ImageComment" in kept:
        comments = kept.pop("GADGETRON_ImageComment")
        kept["GADGETRON_ImageComment"] = [
            comment for comment in (comments if isinstance(comments, list) else [comments])
            if not (isinstance(comment, str) and OWN_COMMENT.fullmatch(comment))]
    return kept


def _append_once(meta: Meta, key: str, value: str) -> None:
    """Append ``value`` to attribute ``key`` unless an earlier pass of this gadget already did."""
    present = meta.get(key)
    if value not in (present if isinstance(present, list) else [present]):
        meta.append(key, value)


def _format(value: float) -> str:
    return f"{value:.4f}"


def annotated_image(received: ReceivedImage, result: SliceResult, phase_index: int,
                    parameters: GadgetParameters) -> ismrmrd.Image:
    """The copy of one original with crosses and the CMRLandmark_* attributes (see docs/gadget.md)."""
    output = _copy_for_output(received, parameters)
    found = result.landmarks[phase_index]
    head = output.getHead()
    meta = output.meta
    meta["CMRLandmark_Status"] = "ok"
    tag_with_model(meta, result)
    meta["CMRLandmark_PixelSpacing_mm"] = [_format(v) for v in result.spacing_mm]
    for name in LANDMARKS_BY_VIEW[result.view]:
        landmark = found.get(name)
        meta[f"CMRLandmark_{name}_found"] = "1" if landmark is not None else "0"
        if result.filled is not None:
            meta[f"CMRLandmark_{name}_filled"] = "1" if result.filled[phase_index][name] else "0"
        if landmark is None:
            continue
        patient = pixel_to_patient_mm(np.array([[landmark.row, landmark.col]]), tuple(head.position),
                                      tuple(head.read_dir), tuple(head.phase_dir), tuple(head.field_of_view),
                                      tuple(head.matrix_size))[0]
        meta[f"CMRLandmark_{name}_pixel"] = [_format(landmark.row), _format(landmark.col)]
        meta[f"CMRLandmark_{name}_patient_mm"] = [_format(v) for v in patient]
        meta[f"CMRLandmark_{name}_probability"] = _format(landmark.probability)
    comments = [f"{result.view.upper()} landmarks {sum(v is not None for v in found.values())}/{len(found)}"]
    for measure, value in result.measures[phase_index].items():
        meta[f"CMRLandmark_{measure}"] = _format(value)
    measures = result.measures[phase_index]
    if "LVLength_mm" in measures:
        comments.append(f"LV length {measures['LVLength_mm']:.1f} mm")
    if "RVInsertionAngle_deg" in measures:
        comments.append(f"RVI angle {measures['RVInsertionAngle_deg']:.0f} deg")
    for comment in comments:
        meta.append("GADGETRON_ImageComment", comment)
    if parameters.draw_landmarks:
        points = [(lm.row, lm.col) for lm in found.values() if lm is not None]
        output = ismrmrd.Image(head=head, meta=meta,
                               data=draw_crosses(output.data, points, result.spacing_mm, parameters.cross_size_mm))
    return output


def error_image(received: ReceivedImage, message: str, parameters: GadgetParameters) -> ismrmrd.Image:
    """The copy of one original, without crosses, tagged with what went wrong."""
    output = _copy_for_output(received, parameters)
    output.meta["CMRLandmark_Status"] = "error"
    output.meta["CMRLandmark_Error"] = message
    output.meta.append("GADGETRON_ImageComment", "landmark detection failed")
    return output


def left_out_image(received: ReceivedImage, result: SliceResult, error: ValueError,
                   parameters: GadgetParameters) -> ismrmrd.Image:
    """The copy of a phase the model could not use, in a slice whose other phases were detected: tagged with the
    error, and with the slice's model, view and sequence."""
    output = error_image(received, f"{type(error).__name__}: {error}", parameters)
    tag_with_model(output.meta, result)
    return output


def tag_with_model(meta: Meta, result: SliceResult) -> None:
    """The model, view and sequence a slice was detected with, on each of its copies."""
    meta["CMRLandmark_Model"] = result.model
    meta["CMRLandmark_View"] = result.view
    meta["CMRLandmark_Sequence"] = result.sequence


# At most this many single-phase slices share one model call: a whole file replayed at once must not become one
# batch of hundreds of images (memory, and no copy out until all are done). A stack of LGE slices fits in one.
MAX_SLICES_PER_CALL = 32


def arrived_together(batches: Iterator[SliceBatch], more_waiting: Callable[[], bool]) -> Iterator[list[SliceBatch]]:
    """Single-phase slices that have already arrived, grouped so the model runs once for them.

    A slice is never held back for data that has not arrived: a group ends as soon as nothing more is waiting on
    the connection (``more_waiting``), so slices acquired one breath-hold apart still come out one by one, or when
    it holds :data:`MAX_SLICES_PER_CALL`. Multi-phase slices (cine) are their own group.
    """
    group: list[SliceBatch] = []
    for batch in batches:
        if len(batch.items) > 1:
            if group:
                yield group
                group = []
            yield [batch]
            continue
        group.append(batch)
        if len(group) == MAX_SLICES_PER_CALL or not more_waiting():
            yield group
            group = []
    if group:
        yield group


def landmark_outputs(groups: Iterator[list[SliceBatch]], parameters: GadgetParameters | ParameterError,
                     header: ismrmrd.xsd.ismrmrdHeader | None) -> Iterator[ismrmrd.Image]:
    """The annotated (or error-tagged) copies of each slice, in phase order."""
    # A parameter error still needs an offset for the tagged copies: the default one.
    usable = parameters if isinstance(parameters, GadgetParameters) else GadgetParameters()
    for group in groups:
        results: list[SliceResult | None] = [None] * len(group)
        if len(group) > 1 and isinstance(parameters, GadgetParameters) and header is not None:
            try:
                results = list(detect_stack(group, usable, header))
            except Exception as error:  # one model call was not possible: slice by slice below, errors per slice
                log.info("slices %s one at a time: %s", [batch.slice for batch in group], error)
        for batch, result in zip(group, results, strict=True):
            yield from slice_outputs(batch, result, parameters, usable, header)


def slice_outputs(batch: SliceBatch, result: SliceResult | None, parameters: GadgetParameters | ParameterError,
                  usable: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None) -> list[ismrmrd.Image]:
    """One slice's copies: annotated from ``result`` (detected here when None), or tagged with the error."""
    try:
        if isinstance(parameters, ParameterError):
            raise parameters
        if header is None:
            raise ValueError("the ISMRMRD header could not be parsed")
        if result is None:
            result = detect_slice(batch, usable, header)
        if result.unusable:
            log.error("series %d slice %d: phase(s) left out: %s", batch.series_index, batch.slice,
                      "; ".join(str(error) for error in result.unusable.values()))
        return [left_out_image(received, result, result.unusable[i], usable) if i in result.unusable
                else annotated_image(received, result, i, usable) for i, received in enumerate(batch.items)]
    except Exception as error:  # never lose a slice: whatever failed is reported on its copies
        if isinstance(error, ParameterError | ModelError):  # a setting or the installation, the same for every
            # slice: one line each, no traceback
            log.error("no landmarks for series %d slice %d: %s: %s", batch.series_index, batch.slice,
                      type(error).__name__, error)
        else:
            log.exception("landmark detection failed for series %d slice %d", batch.series_index, batch.slice)
        return [error_image(received, f"{type(error).__name__}: {error}", usable) for received in batch.items]


def checked_model_name(parameters: GadgetParameters) -> GadgetParameters:
    """``parameters``, refused with a :class:`ParameterError` where they name a model the manifest does not list:
    a typo in a chain is a setting, found when the chain is read, not a failure of every slice."""
    if parameters.model:
        try:
            find_model("", "", name=parameters.model)
        except ModelError as error:
            raise ParameterError(f"gadget parameter model={parameters.model!r}: {error}") from error
    return parameters


def landmark_detection(connection: Connection, default_properties: dict[str, str] | None = None) -> None:
    """The gadget: originals out first and unchanged, then each slice's annotated copies (module docstring)."""
    guard_against_eof(connection)
    keep_items_as_received(connection)
    properties = dict(default_properties or {})
    parameters: GadgetParameters | ParameterError
    try:
        # Gadgetron sends this gadget's own <configuration>; a client of a passive server may send the whole chain
        own = gadget_configuration(connection.config) if connection.config is not None else None
        properties.update(properties_from_config(own))
        parameters = checked_model_name(GadgetParameters.from_strings(properties))
    except ParameterError as error:
        log.error("%s: images pass through, their copies are tagged with the error", error)
        parameters = error
    header = connection.header
    if isinstance(parameters, GadgetParameters):
        load_model_before_images(parameters, header)
    usable = parameters if isinstance(parameters, GadgetParameters) else GadgetParameters()
    series_use = SeriesIndexUse()
    originals = (series_use.noted_original(received) for received in pass_originals(connection))
    batches = slice_batches(originals, usable.phases_per_slice_count(header))
    groups = arrived_together(batches, lambda: data_waiting(connection))
    for image in landmark_outputs(groups, parameters, header):
        series_use.note_copy(image)
        connection.send(image)


class SeriesIndexUse:
    """The series indices of one stream's originals and copies, to catch copies that land in a series the
    originals use (a chain whose series numbers are ``series_index_offset`` apart): a viewer would mix the two in
    one series. Warned once per series; a copy sent after the clash is known is tagged
    CMRLandmark_SeriesIndexClash=1."""

    def __init__(self) -> None:
        self.originals: set[int] = set()
        self.copies: set[int] = set()
        self.warned: set[int] = set()

    def noted_original(self, received: ReceivedImage) -> ReceivedImage:
        index = received.image.getHead().image_series_index
        self.originals.add(index)
        if index in self.copies:
            self._warn(index)
        return received

    def note_copy(self, image: ismrmrd.Image) -> None:
        index = image.getHead().image_series_index
        self.copies.add(index)
        if index in self.originals:
            image.meta[f"{ATTRIBUTE_PREFIX}SeriesIndexClash"] = "1"
            self._warn(index)

    def _warn(self, index: int) -> None:
        if index not in self.warned:
            self.warned.add(index)
            log.warning("series %d holds both original images and landmark copies: give series_index_offset a "
                        "value that moves the copies to a series the chain does not use", index)


# --- passive mode ----------------------------------------------------------------------------------------------


ACCEPT_RETRY_S = 0.5  # after a failed accept (e.g. no file descriptors left), before the next try
# On stop, connections in progress get this long to finish their scan; a client that sends nothing does not hold
# the server up longer (its thread is a daemon and ends with the process).
SHUTDOWN_GRACE_S = 60.0


class LandmarkServer:
    """Listens on (host, port) and runs the gadget on each connection, each in its own thread."""

    def __init__(self, port: int, host: str = "127.0.0.1", config_path: Path | str | None = None,
                 max_connections: int | None = None) -> None:
        self.default_properties: dict[str, str] = {}
        if config_path is not None:
            chain = ElementTree.parse(config_path).getroot()
            self.default_properties = properties_from_config(gadget_configuration(chain))
            checked_model_name(GadgetParameters.from_strings(self.default_properties))  # at start, not per scan
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.max_connections = max_connections
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.2)  # wake up to notice stop()
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def stop(self) -> None:
        self._stopping.set()

    def serve_forever(self) -> None:
        log.info("cmr-landmark gadget listening on port %d", self.port)
        served = 0
        try:
            while not self._stopping.is_set() and (self.max_connections is None or served < self.max_connections):
                try:
                    client, address = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError as error:  # e.g. out of file descriptors: refuse this one, keep listening
                    log.error("could not accept a connection: %s", error)
                    self._stopping.wait(ACCEPT_RETRY_S)
                    continue
                served += 1
                log.info("connection %d from %s", served, address)
                thread = threading.Thread(target=self._handle, args=(client,), daemon=True)
                try:
                    thread.start()
                except RuntimeError as error:  # no thread to be had: drop this client, keep serving the others
                    log.error("could not start a thread for connection %d: %s", served, error)
                    client.close()
                    continue
                # Forget finished connections: a server that runs for months must not keep one thread per scan.
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        finally:
            self._listener.close()
            deadline = time.monotonic() + SHUTDOWN_GRACE_S
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            if open_connections := sum(thread.is_alive() for thread in self._threads):
                log.warning("stopping with %d connection(s) still open after %.0f s", open_connections,
                            SHUTDOWN_GRACE_S)

    def _handle(self, client: socket.socket) -> None:
        try:
            connection = MrdConnection(client)
        except Exception as error:  # no configuration and header could be read: nothing to pass on, end cleanly
            log.warning("connection ended before its configuration and header were read: %s",
                        error or type(error).__name__)
            GuardedSocket(client).close()
            return
        try:
            landmark_detection(connection, self.default_properties)
        except Exception:  # one bad client must not stop the server
            log.exception("connection ended with an error")
        finally:
            connection.socket.close()  # CLOSE, whatever happened; logged first, so a client that saw it can check


def serve(port: int, host: str = "127.0.0.1", config_path: Path | str | None = None,
          max_connections: int | None = None) -> None:
    """Passive mode: serve connections (several at once) until SIGINT/SIGTERM or ``max_connections`` served."""
    server = LandmarkServer(port, host, config_path, max_connections)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: server.stop())
    server.serve_forever()


def main_serve(argv: list[str] | None = None) -> int:
    """``cmr-landmark serve --port PORT [--host H] [--config chain.xml] [--max-connections N]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="cmr-landmark serve", description="Run the landmark gadget in passive "
                                     "mode: Gadgetron (<connect port=.../>) or an MRD client connects to it.")
    parser.add_argument("--port", type=int, required=True, help="TCP port 0-65535 (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    parser.add_argument("--config", type=Path, help="chain XML whose <property> values are the default parameters")
    parser.add_argument("--max-connections", type=int, help="exit after serving this many connections")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:  # the socket would raise OverflowError, a traceback
        parser.error(f"--port must be 0-65535, got {args.port}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(args.port, args.host, args.config, args.max_connections)
    except ElementTree.ParseError as error:
        parser.exit(2, f"cmr-landmark serve: {args.config} is not XML: {error}\n")
    except (OSError, ParameterError) as error:
        parser.exit(2, f"cmr-landmark serve: {error}\n")
    return 0
