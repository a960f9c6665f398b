"""Connections an attacker holds open against a real collector process (uvicorn, loopback sockets).

Bodies that never arrive hold no upload slot and are bounded per address; connections that send
no complete request headers within HEADER_TIMEOUT_SECONDS are closed by the server itself.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.collector_process import CollectorProcess
from tests.support.settings import local_settings

pytestmark = pytest.mark.processes

HEADERS = (
    b"POST /api/upload-user-data HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    settings = local_settings(
        tmp_path / "data",
        max_concurrent_uploads=8,
        max_bodies_in_flight_per_address=4,
        upload_queue_seconds=1.0,
        body_timeout_seconds=30.0,
        header_timeout_seconds=1.0,
    )
    with CollectorProcess(settings, log_path=tmp_path / "collector.log") as process:
        yield process


def connect(collector: CollectorProcess, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", collector.port))
    sock.settimeout(10)
    return sock


def test_bodies_that_never_arrive_hold_no_upload_slot(collector: CollectorProcess) -> None:
    idle = [connect(collector, "127.0.0.2") for _ in range(8)]  # as many as there are slots
    try:
        for sock in idle:
            sock.sendall(HEADERS)
        # Past the address's bound, the server answers at once (429) and closes; body unread.
        refused = 0
        for sock in idle:
            sock.settimeout(0.5)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue  # still waiting for its body: it holds no slot
            assert answer.startswith(b"HTTP/1.1 429") and b"connection: close" in answer.lower()
            refused += 1
        assert refused == 4
        body = {"participantId": "REAL1", "uploadType": "status", "step": 1}
        real = httpx.post(f"{collector.url}/api/upload-user-data", json=body, timeout=30)
        assert real.status_code == 200, real.text  # not a 503 after the queue wait
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize(
    "sent", [b"", b"POST /api/upload-user-data HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half"]
)
def test_a_connection_without_complete_headers_is_closed_by_the_server(
    collector: CollectorProcess, sent: bytes
) -> None:
    sock = connect(collector, "127.0.0.1")
    try:
        sock.sendall(sent)
        assert sock.recv(1) == b""  # closed by the server (the socket's 10 s timeout would raise)
    finally:
        sock.close()
    # A connection that keeps sending requests is not cut off between them.
    with httpx.Client(base_url=collector.url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.4)
