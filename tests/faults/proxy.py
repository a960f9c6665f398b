"""A fault-injecting HTTP/1.1 proxy on loopback, controllable from the test that runs it.

Put it between the collector and the S3 server (``S3_ENDPOINT_URL`` pointing at the proxy) to
make storage fail, or between clients and the collector to lose the collector's answers.
``set_plan`` switches what it does to the next requests::

    proxy = FaultProxy("127.0.0.1", moto_port).start()
    proxy.set_plan(FaultPlan({Fault.ERROR_503: 0.3, Fault.RESET: 0.1}))
    ...
    proxy.set_plan(FaultPlan())  # pass everything through again
    proxy.stop()

Each request is read whole (head and body) before anything is forwarded, so a fault never
delivers half a request upstream. Upstream connections are one per request (``Connection:
close``); the client side keeps its connection alive, like a real S3 endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


class Fault(StrEnum):
    ERROR_500 = "500"  # answer InternalError without forwarding
    ERROR_503 = "503"  # answer ServiceUnavailable without forwarding
    RESET = "reset"  # reset the connection without forwarding
    STALL = "stall"  # hold the request past the client's timeout, then forward it anyway (late write)
    DROP_AFTER_WRITE = "drop-after-write"  # forward, let upstream apply it, then reset: the ambiguous one


@dataclass(frozen=True)
class FaultPlan:
    """Each request suffers ``fault`` with probability ``weights[fault]``; the rest pass through."""

    weights: dict[Fault, float] = field(default_factory=dict)
    methods: frozenset[str] | None = None  # only requests with these methods are faulted
    stall_seconds: float = 5.0
    # Request headers (lower case) removed before forwarding: upstream behaves as a server that
    # ignores them, e.g. {"if-none-match", "if-match"} for a bucket without conditional writes.
    strip_headers: frozenset[str] = frozenset()

    def pick(self, method: str, rng: random.Random) -> Fault | None:
        if self.methods is not None and method not in self.methods:
            return None
        roll = rng.random()
        for fault, weight in self.weights.items():
            if roll < weight:
                return fault
            roll -= weight
        return None


_S3_ERRORS = {
    Fault.ERROR_500: (500, "Internal Server Error", "InternalError"),
    Fault.ERROR_503: (503, "Service Unavailable", "ServiceUnavailable"),
}
_NO_BODY_STATUSES = {204, 304}


class _Reset(Exception):
    """The client connection is to be reset (RST), not closed politely."""


@dataclass
class _Message:
    head: bytes  # start line and headers, without the final blank line
    headers: dict[str, str]
    body: bytes

    @property
    def start_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")


class FaultProxy:
    """The proxy; runs its own event loop in a daemon thread between ``start`` and ``stop``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.plan = FaultPlan()
        self.counts: Counter[str] = Counter()  # "requests" and one entry per fault applied
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def set_plan(self, plan: FaultPlan) -> None:
        """Applies from the next request on (one attribute swap: safe from any thread)."""
        self.plan = plan

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            # Let them finish cancelling, or they are destroyed pending when the loop stops.
            await asyncio.wait(tasks, timeout=5) if tasks else None

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve_client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio keeps only weak references to connection tasks: hold them until they end.
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)
        try:
            while True:
                request = await _read_message(reader, writer, is_request=True)
                if request is None:
                    break
                await self._handle(request, writer)
        except _Reset:
            _reset(writer)
            return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # the proxy is stopping
            _reset(writer)
            return
        writer.close()

    async def _handle(self, request: _Message, writer: asyncio.StreamWriter) -> None:
        self.counts["requests"] += 1
        method = request.start_line.split(" ", 1)[0]
        plan = self.plan
        fault = plan.pick(method, self._rng)
        if fault is not None:
            self.counts[fault.value] += 1
        if fault in _S3_ERRORS:
            status, reason, code = _S3_ERRORS[fault]
            body = (
                f"<Error><Code>{code}</Code><Message>injected by the fault proxy</Message></Error>".encode()
            )
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            return
        if fault is Fault.RESET:
            raise _Reset
        if fault is Fault.STALL:
            await asyncio.sleep(plan.stall_seconds)
        response = await self._forward(request, method, plan.strip_headers)
        if fault is Fault.DROP_AFTER_WRITE:
            raise _Reset
        writer.write(response)
        await writer.drain()

    async def _forward(self, request: _Message, method: str, strip: frozenset[str] = frozenset()) -> bytes:
        """Send the request upstream on a fresh connection; the response, framed for the client."""
        dropped = (b"connection:", b"expect:", b"keep-alive:", *(f"{name}:".encode() for name in strip))
        lines = [line for line in request.head.split(b"\r\n") if not line.lower().startswith(dropped)]
        reader, writer = await asyncio.open_connection(*self.upstream)
        try:
            writer.write(b"\r\n".join([*lines, b"Connection: close", b"", b""]) + request.body)
            await writer.drain()
            response = await _read_message(reader, None, is_request=False, method=method)
        finally:
            writer.close()
        if response is None:
            raise _Reset  # upstream hung up: pass that on
        lines = [
            line
            for line in response.head.split(b"\r\n")
            if not line.lower().startswith((b"connection:", b"keep-alive:"))
        ]
        return b"\r\n".join([*lines, b"", b""]) + response.body


async def _read_message(
    reader: asyncio.StreamReader,
    client: asyncio.StreamWriter | None,
    *,
    is_request: bool,
    method: str = "GET",
) -> _Message | None:
    """One HTTP/1.1 message, body included (raw, so chunked bodies are forwarded as they came)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    head = head[:-4]
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if is_request and headers.get("expect", "").lower() == "100-continue" and client is not None:
        client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await client.drain()
    status = 0 if is_request else int(head.split(b" ", 2)[1])
    if not is_request and (method == "HEAD" or status in _NO_BODY_STATUSES or status < 200):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif is_request:
        body = b""
    else:
        body = await reader.read()  # delimited by the upstream closing; give the client a length
        head += f"\r\nContent-Length: {len(body)}".encode()
    return _Message(head, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        parts.append(size_line)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:  # trailers, then the blank line
                trailer = await reader.readuntil(b"\r\n")
                parts.append(trailer)
                if trailer == b"\r\n":
                    return b"".join(parts)
        parts.append(await reader.readexactly(size + 2))


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: what a crashed or overloaded server looks like."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
