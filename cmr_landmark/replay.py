"""Play ISMRMRD images to the landmark gadget over the real Gadgetron wire protocol and collect what comes back.

Two ways, both the code path Gadgetron itself uses:

- active (default): like Gadgetron with ``<external><execute .../>``, listen on a free loopback port, start
  ``python -m gadgetron PORT gadgets.cmr_landmark_gadget landmark_detection`` and accept its connection;
- passive: connect to a gadget already listening (``cmr-landmark serve``) or to a Gadgetron instance.

Then: configuration XML, ISMRMRD header, the images, CLOSE (ismrmrd.serialization.ProtocolSerializer on the
socket), while a thread reads everything coming back (ProtocolDeserializer) until the gadget's CLOSE, so
neither side blocks on a full socket buffer.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ismrmrd
import ismrmrd.xsd
from ismrmrd.serialization import ConfigText, ProtocolDeserializer, ProtocolSerializer

from .io import write_ismrmrd_images

GADGET_MODULE = "gadgets.cmr_landmark_gadget"
GADGET_TARGET = "landmark_detection"
# Starting the gadget imports torch and loads the models: allow for a cold disk.
STARTUP_TIMEOUT_S = 120.0
DEFAULT_TIMEOUT_S = 600.0


# A line of the gadget's log at level ERROR or CRITICAL ("12-06 11:32:15.207 ERROR [ext. 4252 module.target] text"):
# its text is what a failure says in one line, the whole log goes to a file. A WARNING line's text is shown as it is.
LOG_ERROR_LINE = re.compile(r"^\S+ \S+ (?:ERROR|CRITICAL) \[[^\]]*\] (?P<text>.+)$", re.MULTILINE)
LOG_WARNING_LINE = re.compile(r"^\S+ \S+ WARNING \[[^\]]*\] (?P<text>.+)$", re.MULTILINE)


class ReplayError(RuntimeError):
    """The gadget could not be started or reached, or the stream broke off. ``gadget_log``: the log of a gadget
    this tool started (active mode), for a file: the message says only its last error."""

    def __init__(self, message: str, gadget_log: str = "") -> None:
        super().__init__(message)
        self.gadget_log = gadget_log


@dataclass
class ReplayResult:
    """Everything the gadget sent back, in order, and how long it took."""

    items: list = field(default_factory=list)  # ismrmrd.Image, Acquisition, Waveform, str (TEXT) ...
    seconds_to_first_item: float | None = None
    seconds_total: float = 0.0
    gadget_log: str = ""

    @property
    def images(self) -> list[ismrmrd.Image]:
        return [item for item in self.items if isinstance(item, ismrmrd.Image)]


def configuration_xml(properties: Mapping[str, str] | None = None) -> str:
    """The configuration Gadgetron hands an external gadget: ``<configuration>`` with its ``<property>`` items."""
    root = ElementTree.Element("configuration")
    for name, value in (properties or {}).items():
        ElementTree.SubElement(root, "property", name=name, value=str(value))
    return ElementTree.tostring(root, encoding="unicode")


def _stream(
    sock: socket.socket,
    config_xml: str,
    header: ismrmrd.xsd.ismrmrdHeader,
    images: Sequence[ismrmrd.Image],
    timeout_s: float,
) -> ReplayResult:
    result = ReplayResult()
    failure: list[BaseException] = []
    start = time.perf_counter()
    last_message = [time.monotonic()]  # when a message last went out or came back

    def read_back() -> None:
        try:
            with sock.makefile("rb") as incoming:
                for item in ProtocolDeserializer(incoming).deserialize():
                    last_message[0] = time.monotonic()
                    if result.seconds_to_first_item is None:
                        result.seconds_to_first_item = time.perf_counter() - start
                    result.items.append(item)
        except Exception as error:  # a broken or undecodable reply is the replay's failure, never a silent success
            failure.append(error)

    def send() -> None:
        try:
            with sock.makefile("wb") as outgoing:
                serializer = ProtocolSerializer(outgoing)
                serializer.serialize(ConfigText(config_xml))
                serializer.serialize(header)
                for image in images:
                    serializer.serialize(image)
                    last_message[0] = time.monotonic()
                serializer.close()  # sends CLOSE and flushes; the socket stays open for the replies
        except Exception as error:
            failure.append(error)

    # Both directions in threads, watched for silence: a peer that stops reading blocks the sender, one that stops
    # answering blocks the reader, and neither may hang the replay. An idle timeout, not a deadline for the whole
    # stream: a long series that keeps coming back is never cut off (and its results thrown away) half way.
    threads = [threading.Thread(target=work, name=f"replay-{work.__name__}", daemon=True) for work in (send, read_back)]
    for thread in threads:
        thread.start()
    while running := [thread for thread in threads if thread.is_alive()]:
        idle_left = last_message[0] + timeout_s - time.monotonic()
        if idle_left <= 0:
            sock.shutdown(socket.SHUT_RDWR)  # unblocks both
            for thread in threads:
                thread.join(5.0)
            raise ReplayError(f"nothing went to or came back from the gadget for {timeout_s:g} s "
                              f"({len(result.items)} messages had come back)")
        running[0].join(idle_left)
    result.seconds_total = time.perf_counter() - start
    if failure:
        raise ReplayError(f"the stream to/from the gadget broke off: {failure[0]!r}")
    return result


def replay_passive(
    address: tuple[str, int],
    header: ismrmrd.xsd.ismrmrdHeader,
    images: Sequence[ismrmrd.Image],
    properties: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ReplayResult:
    """Connect to a listening gadget or Gadgetron at ``address`` (host, port) and stream the images."""
    try:
        sock = socket.create_connection(address, timeout=30)
    except OSError as error:
        raise ReplayError(f"cannot connect to {address[0]}:{address[1]}: {error}") from error
    sock.settimeout(None)  # replies may take as long as detection takes; _stream bounds the wait
    with sock:
        return _stream(sock, configuration_xml(properties), header, images, timeout_s)


def replay_active(
    header: ismrmrd.xsd.ismrmrdHeader,
    images: Sequence[ismrmrd.Image],
    properties: Mapping[str, str] | None = None,
    module: str = GADGET_MODULE,
    target: str = GADGET_TARGET,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> ReplayResult:
    """Start the gadget as Gadgetron does (``python -m gadgetron PORT MODULE TARGET``), accept its connection and
    stream the images. The gadget's log is kept in ``ReplayResult.gadget_log`` (and in the error on failure)."""
    environment = {**os.environ, "GADGETRON_EXTERNAL_LOG_LEVEL": "INFO", **(env or {})}
    with socket.create_server(("127.0.0.1", 0)) as listener, tempfile.TemporaryFile("w+") as log:
        port = listener.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "gadgetron", str(port), module, target],
            stdout=log, stderr=subprocess.STDOUT, env=environment,
        )

        def log_text() -> str:
            log.flush()
            log.seek(0)
            return log.read()

        def failure(what: str) -> ReplayError:
            return gadget_failure(what, log_text())

        try:
            sock = _accept(listener, process, failure)
            with sock:
                try:
                    result = _stream(sock, configuration_xml(properties), header, images, timeout_s)
                except ReplayError as error:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=5)  # a gadget that broke the stream by dying: let it finish saying why
                    raise failure(str(error)) from error
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise failure("the gadget process did not exit after the stream ended") from None
            if code != 0:
                raise failure(f"the gadget process exited with status {code}")
            result.gadget_log = log_text()
            return result
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def gadget_warnings(gadget_log: str) -> list[str]:
    """The distinct warnings in a gadget's log, in order: what a scan's log says once (a view set against the
    protocol's, no sequence told) and a replay shows on its console, where nobody reads the gadget's log."""
    return list(dict.fromkeys(LOG_WARNING_LINE.findall(gadget_log)))


def gadget_failure(what: str, gadget_log: str) -> ReplayError:
    """The error for a failure of a gadget this tool started: ``what`` happened, and the last error its log says
    (the last ERROR or CRITICAL line, else its last line: the exception that ended a traceback), in one line; the
    whole log rides along in ``gadget_log``."""
    errors = LOG_ERROR_LINE.findall(gadget_log)
    lines = [line.strip() for line in gadget_log.splitlines() if line.strip()]
    last_error = errors[-1] if errors else lines[-1] if lines else "its log is empty"
    return ReplayError(f"{what}; the gadget's last error: {last_error}", gadget_log=gadget_log)


def _accept(
    listener: socket.socket, process: subprocess.Popen, failure: Callable[[str], ReplayError]
) -> socket.socket:
    """The gadget's connection, or a clear error when its process dies or never connects."""
    listener.settimeout(0.5)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            sock, _ = listener.accept()
        except TimeoutError:
            if process.poll() is not None:
                raise failure(f"the gadget process exited with status {process.returncode} before connecting") \
                    from None
            continue
        sock.settimeout(None)
        return sock
    raise failure(f"the gadget did not connect within {STARTUP_TIMEOUT_S:.0f} s")


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def write_results(path: Path, header: ismrmrd.xsd.ismrmrdHeader | None, images: Sequence[ismrmrd.Image]) -> None:
    """Write the returned images to an ISMRMRD .h5, one group per image series ("image_<series index>"), and
    byte for byte: an HDF5 group holds one data type and array shape, so the images of a series that differ from
    its first image in either go to groups of their own, "image_<series>_<data type>_<shape>" (e.g.
    image_1_float32_1x1x256x256), never cast or cut to the first one's."""
    first_kind: dict[int, tuple[str, tuple[int, ...]]] = {}
    named: dict[str, list[ismrmrd.Image]] = {}
    for image in images:
        series, kind = image.image_series_index, (str(image.data.dtype), image.data.shape)
        suffix = "" if kind == first_kind.setdefault(series, kind) else f"_{kind[0]}_{'x'.join(map(str, kind[1]))}"
        named.setdefault(f"image_{series}{suffix}", []).append(image)
    write_ismrmrd_images(Path(path), header, named)
