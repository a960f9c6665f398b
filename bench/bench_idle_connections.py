"""Idle bodies and idle connections against a real collector: do real uploads still get through?

    python bench/bench_idle_connections.py [CHECKOUT] [--idle 64] [--silent 200]

Serves CHECKOUT's collector (default: this one) on a local folder with its default settings.
From 127.0.0.2, opens IDLE connections that each send an upload's headers with
``Content-Length: 100`` and no body; then times a real upload from 127.0.0.1. Then opens
SILENT connections that send nothing at all and counts how many the server has closed after
HEADER_TIMEOUT_SECONDS (default 10) plus 2 s. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers live in tests/support
from tests.support.collector_process import CollectorProcess
from tests.support.settings import local_settings

HERE = Path(__file__).resolve().parents[1]
HEADERS = (
    b"POST /api/upload-user-data HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
)


def connect(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def answered(sock: socket.socket) -> bool:
    """Has the server answered (e.g. 429) or closed the connection?"""
    sock.setblocking(False)
    try:
        return len(sock.recv(65536)) >= 0
    except BlockingIOError:
        return False  # still open, nothing to read
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout", nargs="?", default=str(HERE))
    parser.add_argument("--idle", type=int, default=64)
    parser.add_argument("--silent", type=int, default=200)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as root,
        CollectorProcess(local_settings(Path(root) / "data"), checkout=Path(args.checkout)) as server,
    ):
        sockets: list[socket.socket] = []
        try:
            for _ in range(args.idle):
                sock = connect("127.0.0.2", server.port)
                sock.sendall(HEADERS)
                sockets.append(sock)
            time.sleep(0.5)
            body = {"participantId": "REAL1", "uploadType": "status", "step": 1}
            started = time.monotonic()
            real = httpx.post(server.url + "/api/upload-user-data", json=body, timeout=60)
            latency = time.monotonic() - started
            idle_refused = sum(answered(sock) for sock in sockets)
            silent = [connect("127.0.0.3", server.port) for _ in range(args.silent)]
            sockets += silent
            time.sleep(12)
            silent_closed = sum(answered(sock) for sock in silent)
        finally:
            for sock in sockets:
                sock.close()
    print(
        json.dumps(
            {
                "checkout": args.checkout,
                "real_upload": [real.status_code, round(latency, 3)],
                "idle_bodies_refused_at_once": f"{idle_refused}/{args.idle}",
                "silent_closed_after_12s": f"{silent_closed}/{args.silent}",
            }
        )
    )


if __name__ == "__main__":
    main()
