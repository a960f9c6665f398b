"""Loopback servers for the browser tests: a static site on another origin, and a fault proxy."""

from __future__ import annotations

import http.client
import socket
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a connection dropped on purpose (or by the browser) is not news


class _QuietStaticHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class Background:
    """Runs an HTTP server on a free loopback port in a thread."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def static_site(root: Path) -> Background:
    """Serves ``root`` (the examples) on its own origin, so the page talks to the collector cross-origin."""
    return Background(_QuietServer(("127.0.0.1", 0), partial(_QuietStaticHandler, directory=str(root))))


class FaultProxy(Background):
    """Forwards every request to ``target``, and fails on purpose when told to.

    * ``fail_with = 503`` answers every request with that status without forwarding it (an S3
      endpoint in trouble, when the collector's storage points here);
    * ``lose_responses = True`` forwards POSTs to the upload API, then drops the connection
      before answering: the upload reached the collector, the browser never hears so.
    """

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.fail_with: int | None = None
        self.lose_responses = False
        self.forwarded: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_RelayHandler,), {"proxy": self})
        super().__init__(_QuietServer(("127.0.0.1", 0), handler))

    def forwarded_posts(self, prefix: str = "/api/upload-user-data") -> int:
        with self._lock:
            return sum(
                1 for method, path, _ in self.forwarded if method == "POST" and path.startswith(prefix)
            )

    def note(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.forwarded.append((method, path, status))


class _RelayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._relay()

    do_POST = do_PUT = do_HEAD = do_DELETE = do_OPTIONS = do_GET

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        proxy = self.proxy
        if proxy.fail_with is not None:
            self._answer(proxy.fail_with, {"Content-Type": "application/xml"}, _S3_UNAVAILABLE)
            return
        upstream = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream.request(self.command, self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        proxy.note(self.command, self.path, answer.status)
        if proxy.lose_responses and self.command == "POST" and self.path.startswith("/api/upload-user-data"):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        kept = {k: v for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP}
        if self.command == "HEAD":
            kept["Content-Length"] = answer.getheader("Content-Length") or "0"
            data = b""
        self._answer(answer.status, kept, data)

    def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


_S3_UNAVAILABLE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
    b"<Message>fault proxy: storage is down</Message></Error>"
)
