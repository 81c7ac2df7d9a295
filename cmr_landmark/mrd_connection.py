"""The Gadgetron connection, made safe for a scanner: tolerant of the clients that connect, and every image kept
as the exact bytes that came in, so that the originals go back downstream unchanged (re-serialising an
ismrmrd.Image would rewrite its attribute XML).

Used by :mod:`cmr_landmark.gadget` (the data path) and :mod:`cmr_landmark.server` (passive mode).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import ismrmrd
import ismrmrd.xsd
import numpy as np
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

from .config import GADGET_LOGGER
from .gadget_parameters import parse_config_bytes

log = logging.getLogger(GADGET_LOGGER)


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
    - closing sends CLOSE, then, unless the peer's own CLOSE has been read (it sends nothing after it), drains
      the peer briefly (see :data:`DRAIN_TIMEOUT_S`) and never raises. Gadgetron keeps its end open until this
      process exits, so an unconditional drain would hold every scan's end for the whole timeout.
    """

    peer_closed = False  # set by the CLOSE reader that keep_items_as_received installs

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
            deadline = time.monotonic() + (0.0 if self.peer_closed else DRAIN_TIMEOUT_S)
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


def note_peer_closed(source: ByteReader) -> None:
    """The reader of the peer's CLOSE: remember it (nothing is left to drain), then end the iteration."""
    if isinstance(source, GuardedSocket):
        source.peer_closed = True
    raise StopIteration


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
    connection.readers[GADGET_MESSAGE_CLOSE] = note_peer_closed
    # Not connection.add_writer: in gadgetron 1.4.1 it wraps the writer in a one-argument lambda that send() then
    # calls with two (socket, item). The writer table it fills is the same list.
    connection.writers.insert(0, (lambda item: isinstance(item, ReceivedImage), write_received_image))
    connection.writers.insert(0, (lambda item: isinstance(item, ReceivedItem), write_received_item))


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
