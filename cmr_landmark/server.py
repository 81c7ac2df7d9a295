"""Passive mode: this process listens and Gadgetron (``<connect port=.../>``), or any MRD client, connects; each
connection runs the gadget (:func:`cmr_landmark.gadget.landmark_detection`) in its own thread.
``cmr-landmark serve --port PORT``."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from .config import GADGET_LOGGER
from .gadget import checked_on_this_machine, landmark_detection
from .gadget_parameters import GadgetParameters, ParameterError, chain_properties
from .mrd_connection import GuardedSocket, MrdConnection

log = logging.getLogger(GADGET_LOGGER)

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
            self.default_properties = chain_properties(config_path)
            checked_on_this_machine(GadgetParameters.from_strings(self.default_properties))  # at start, not per scan
        if max_connections is not None and max_connections < 1:
            raise ParameterError(f"max_connections must be at least 1, got {max_connections}")
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
    if args.max_connections is not None and args.max_connections < 1:  # named as the option, not the attribute
        parser.error(f"--max-connections must be at least 1, got {args.max_connections}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(args.port, args.host, args.config, args.max_connections)
    except ElementTree.ParseError as error:
        parser.exit(2, f"cmr-landmark serve: {args.config} is not XML: {error}\n")
    except (OSError, ParameterError) as error:
        parser.exit(2, f"cmr-landmark serve: {error}\n")
    return 0
