"""Real HTTP and HTTPS servers on loopback ephemeral ports, for tests/test_http.py.

Each :class:`TestServer` runs a stdlib ``ThreadingHTTPServer`` speaking
HTTP/1.1 with keep-alive, and records every request it receives (method,
path, headers, body, client address), so tests can assert what went over the
wire and which connection carried it.

Routes (any method):

=========================  ====================================================
``/status/<code>``         answers ``<code>`` with the body ``status <code>``
``/echo``                  answers 200 with a JSON description of the request
``/json``                  answers 200 with ``{"hello": "world"}``
``/sleep/<seconds>``       waits (until the server stops, at most), then 200
``/redirect?to=&status=``  answers ``status`` (302) with ``Location: to``
``/no-location``           answers 302 without a Location header
``/loop``                  redirects to itself
``/truncated``             promises 100 bytes, sends 5 and closes
``/garbage``               answers something that is not HTTP
``/bad-gzip``              claims gzip but sends junk
=========================  ====================================================
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
    server: _Server

    def log_message(self, format, *args):
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        received = Received(
            self.command, self.path, dict(self.headers.items()), body, self.client_address
        )
        self.server.received.append(received)
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        route = parts[0]
        if route == "status":
            self._send(int(parts[1]), f"status {parts[1]}".encode())
        elif route == "echo":
            description = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode(),
            }
            self._send(200, json.dumps(description).encode(), {"X-Kiln-Test": "yes"})
        elif route == "json":
            self._send(200, b'{"hello": "world"}', {"Content-Type": "application/json"})
        elif route == "sleep":
            self.server.stopping.wait(float(parts[1]))
            self._send(200, b"slept")
        elif route == "redirect":
            status = int(query.get("status", "302"))
            self._send(status, b"", {"Location": query["to"]})
        elif route == "no-location":
            self._send(302, b"")
        elif route == "loop":
            self._send(302, b"", {"Location": "/loop"})
        elif route == "truncated":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"short")
            self.close_connection = True
        elif route == "garbage":
            self.wfile.write(b"this is not HTTP\r\n\r\n")
            self.close_connection = True
        elif route == "bad-gzip":
            self._send(200, b"not gzip at all", {"Content-Encoding": "gzip"})
        else:
            self._send(404, b"no such route")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    def _send(self, status, body, headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address):
        super().__init__(address, _Handler)
        self.received: list[Received] = []
        self.stopping = threading.Event()

    def handle_error(self, request, client_address):
        # A client that gave up (timeouts, rejected certificates) is expected here.
        pass


class TestServer:
    """A running server; ``url("/echo")`` builds URLs to it."""

    __test__ = False  # not a pytest test class

    def __init__(self, host="127.0.0.1", *, tls_context=None, url_host=None):
        self._server = _Server((host, 0))
        if tls_context is not None:
            self._server.socket = tls_context.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if tls_context is not None else "http"
        self.host = host
        self.url_host = url_host or host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def received(self) -> list[Received]:
        return self._server.received

    def url(self, path="/", host=None):
        return f"{self.scheme}://{host or self.url_host}:{self.port}{path}"

    def stop(self):
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def tls_server_context(ca, *hostnames):
    """A server TLS context with a certificate for ``hostnames`` issued by trustme ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hostnames).configure_cert(context)
    return context
