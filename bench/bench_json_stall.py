"""Can hostile JSON bodies stall the collector? /healthz latency with and without the attack.

Starts a real collector process (local folder, per-address rate limit off so the attack is not
simply refused at the door), then, in one run:

1. ``baseline``: probes ``GET /healthz`` every 20 ms, nothing else going on;
2. ``attack (over the cap)``: 12 connections each repeatedly send 3 MB bodies of ~1 M tiny
   objects (``[{},{},...]``) while the probe runs; these are refused (413) by the cheap value
   count before any parse;
3. ``attack (under the cap)``: the same 12 connections send the largest body of tiny objects the
   default ``MAX_JSON_VALUES`` lets through to the parser (it is parsed in a worker thread and
   refused 400 for lacking a participantId), the worst an attacker can make the server parse;
4. ``attack (few long values)``: the same 12 connections send 4 MB bodies of 250 long strings:
   few values, but milliseconds each to decode (parsed off the event loop past 64 KiB).

Prints p50/p99/max of the probe latency per phase, and the attack's request rate. Target:
p99 < 100 ms under attack. A benchmark, not a test: figures depend on the machine (and on what
else it runs: compare with the baseline of the same run). The attacker runs at nice 10.

Usage::

    .venv/bin/python bench/bench_json_stall.py [--seconds 10] [--connections 12] [--only long]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "backend")]

from collector.settings import Settings  # noqa: E402
from tests.support.collector_process import CollectorProcess  # noqa: E402
from tests.support.settings import local_settings  # noqa: E402


def tiny_objects_body(count: int) -> bytes:
    return b'{"submissionData": {"a": [' + b",".join([b"{}"] * count) + b"]}}"


def long_values_body(count: int = 250, length: int = 16_000) -> bytes:
    return b'{"submissionData": {"a": [' + b",".join([b'"' + b"x" * length + b'"'] * count) + b"]}}"


def attacker(port: int, body: bytes, connections: int, seconds: float, sent: multiprocessing.Value) -> None:
    """``connections`` threads, each on its own keep-alive connection, posting ``body`` in a loop.

    Runs at a lower CPU priority: a real attacker's CPU is not the server's, but here they share
    the machine, and an attacker at equal priority would mostly measure the machine's cores.
    """
    os.nice(10)
    stop = time.monotonic() + seconds

    def loop() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < stop:
            try:
                conn.request("POST", "/api/upload-user-data", body, {"Content-Type": "application/json"})
                conn.getresponse().read()
                with sent.get_lock():
                    sent.value += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    threads = [threading.Thread(target=loop) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def probe(port: int, seconds: float) -> list[float]:
    """Latency (ms) of GET /healthz every 20 ms on a fresh connection each (what a checker does)."""
    latencies = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        conn.close()
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.02)
    return latencies


def report(name: str, latencies: list[float], sent: int | None, seconds: float) -> None:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    rate = f", attack {sent / seconds:.1f} bodies/s" if sent is not None else ""
    print(
        f"{name:<26} /healthz p50 {statistics.median(ordered):7.1f} ms  p99 {p99:7.1f} ms  "
        f"max {ordered[-1]:7.1f} ms  ({len(ordered)} probes{rate})",
        flush=True,
    )


def phase(port: int, body: bytes | None, connections: int, seconds: float) -> tuple[list[float], int | None]:
    if body is None:
        return probe(port, seconds), None
    sent = multiprocessing.Value("i", 0)
    worker = multiprocessing.Process(target=attacker, args=(port, body, connections, seconds + 1, sent))
    worker.start()
    time.sleep(1.0)  # let the attack get going
    latencies = probe(port, seconds)
    worker.join()
    return latencies, sent.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=12)
    parser.add_argument("--only", default="", help="run the baseline and the attacks whose name holds this")
    args = parser.parse_args()
    cap = Settings.model_fields["max_json_values"].default
    over = tiny_objects_body(1_000_000)
    under = tiny_objects_body(cap // 2 - 10)  # each "{}" and its comma count as two values
    print(
        f"bodies: over the cap {len(over) / 1e6:.1f} MB, under the cap {len(under) / 1e6:.1f} MB "
        f"(MAX_JSON_VALUES={cap}); {args.connections} connections, {args.seconds:g} s per phase"
    )
    with tempfile.TemporaryDirectory() as folder:
        settings = local_settings(Path(folder), rate_limit_per_minute=0)
        with CollectorProcess(settings) as collector:
            for name, body in (
                ("baseline (no attack)", None),
                ("attack, over the cap", over),
                ("attack, under the cap", under),
                ("attack, few long values", long_values_body()),
            ):
                if body is not None and args.only not in name:
                    continue
                latencies, sent = phase(collector.port, body, args.connections, args.seconds)
                report(name, latencies, sent, args.seconds)


if __name__ == "__main__":
    main()
