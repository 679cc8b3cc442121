"""The bridge process: StatsD over UDP in, Prometheus /metrics over HTTP out."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

from ..errors import ConfigError
from .lines import parse_line
from .registry import Registry

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_address(address: str, what: str) -> tuple[str, int]:
    """`host:port` or `:port` (all interfaces), as statsd_exporter's flags take them."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError("E602", f"{what} {address!r} is not HOST:PORT or :PORT", f"e.g. {what}=127.0.0.1:9125")
    return host.strip("[]") or "0.0.0.0", int(port)


class UDPListener(threading.Thread):
    """Reads datagrams (one or more newline-separated StatsD lines each) into the registry."""

    def __init__(self, registry: Registry, address: tuple[str, int], capture: Path | None = None) -> None:
        super().__init__(name="statsd-udp", daemon=True)
        self.registry = registry
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # Airflow sends in bursts
        self.sock.bind(address)
        self.capture: IO[str] | None = open(capture, "a", buffering=1) if capture else None  # noqa: SIM115

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def run(self) -> None:
        while True:
            try:
                data, _ = self.sock.recvfrom(65535)
            except OSError:  # socket closed: shutting down
                return
            for line in data.decode("utf-8", "replace").splitlines():
                self.handle_line(line)

    def handle_line(self, line: str) -> None:
        if not line.strip():
            return
        self.registry.count_line()
        if self.capture:
            self.capture.write(line + "\n")
        events, errors = parse_line(line)
        for reason in errors:
            self.registry.count_error(reason)
        for event in events:
            self.registry.handle(event)

    def close(self) -> None:
        self.sock.close()
        if self.capture:
            self.capture.close()


def make_http_server(registry: Registry, address: tuple[str, int], path: str = "/metrics") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] == path:
                body, ctype = registry.render().encode(), CONTENT_TYPE
            elif self.path in ("/-/healthy", "/-/ready"):
                body, ctype = b"OK\n", "text/plain"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes every few seconds: keep quiet
            log.debug(format, *args)

    return ThreadingHTTPServer(address, Handler)
