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
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
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


class ReplayError(RuntimeError):
    """The gadget could not be started or reached, or the stream broke off."""


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

    def read_back() -> None:
        try:
            with sock.makefile("rb") as incoming:
                for item in ProtocolDeserializer(incoming).deserialize():
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
                serializer.close()  # sends CLOSE and flushes; the socket stays open for the replies
        except Exception as error:
            failure.append(error)

    # Both directions in threads, under one deadline: a peer that stops reading blocks the sender, one that stops
    # answering blocks the reader, and neither may hang the replay.
    threads = [threading.Thread(target=work, name=f"replay-{work.__name__}", daemon=True) for work in (send, read_back)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        sock.shutdown(socket.SHUT_RDWR)  # unblocks both
        for thread in threads:
            thread.join(5.0)
        raise ReplayError(f"the gadget did not finish within {timeout_s:g} s")
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

        try:
            sock = _accept(listener, process, log_text)
            with sock:
                try:
                    result = _stream(sock, configuration_xml(properties), header, images, timeout_s)
                except ReplayError as error:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=5)  # a gadget that broke the stream by dying: let it finish saying why
                    raise ReplayError(f"{error}\ngadget log:\n{log_text()[-3000:]}") from error
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise ReplayError(
                    f"the gadget process did not exit after the stream ended:\n{log_text()[-3000:]}"
                ) from None
            if code != 0:
                raise ReplayError(f"the gadget process exited with status {code}:\n{log_text()[-3000:]}")
            result.gadget_log = log_text()
            return result
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _accept(listener: socket.socket, process: subprocess.Popen, log_text) -> socket.socket:
    """The gadget's connection, or a clear error when its process dies or never connects."""
    listener.settimeout(0.5)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            sock, _ = listener.accept()
        except TimeoutError:
            if process.poll() is not None:
                raise ReplayError(
                    f"the gadget process exited with status {process.returncode} before connecting:\n"
                    f"{log_text()[-3000:]}"
                ) from None
            continue
        sock.settimeout(None)
        return sock
    raise ReplayError(f"the gadget did not connect within {STARTUP_TIMEOUT_S:.0f} s:\n{log_text()[-3000:]}")


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def write_results(path: Path, header: ismrmrd.xsd.ismrmrdHeader | None, images: Sequence[ismrmrd.Image]) -> None:
    """Write the returned images to an ISMRMRD .h5, one group per image series ("image_<series index>")."""
    groups: dict[str, list[ismrmrd.Image]] = {}
    for image in images:
        groups.setdefault(f"image_{image.image_series_index}", []).append(image)
    write_ismrmrd_images(Path(path), header, groups)
