"""Where a slow upload's time goes: one collector in this process under wrk, each request's phases.

Runs ``collector serve``'s server (uvicorn, the header-timeout protocol, ``--loop``) in this
process with hooks that time each request: its headers parsed (``on_message_begin``), the app
called, the body received (slot asked), the upload slot taken, the pipeline's store call begun and
done (on the event loop), the answer sent. It also records when each
connection was accepted. wrk opens its connections at the start of the run, as a proxy does when
load rises, then sends ~3 KB submissions of new participants.

Prints wrk's own p50/p99 next to the server-side phases (mean of all, of the slowest 1 % and of
the middle 10 %) and the accept times: a p99 far above the slowest server-side totals is time the
server never saw (the kernel's accept queue or socket buffer).

    .venv/bin/python bench/bench_request_phases.py --loop uvloop --storage s3 --connections 256
    .venv/bin/python bench/bench_request_phases.py --loop asyncio --storage local --latency-ms 30
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(REPO / "backend")]

import uvicorn  # noqa: E402
from bench_collector import free_port, upload_document, wait_for_port  # noqa: E402

RECORD: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("record")
PHASES = [
    ("before app", "t0", "app"),
    ("body", "app", "slot_ask"),
    ("slot wait", "slot_ask", "slot"),
    ("parse+route", "slot", "submit"),
    ("store", "submit", "stored"),
    ("answer", "stored", "end"),
    ("total", "t0", "end"),
]


def mark(name: str) -> None:
    record = RECORD.get(None)
    if record is not None:
        record[name] = time.perf_counter()


def instrument(accepted: list[float]) -> None:
    """Hooks on the protocol, the upload slot and the pipeline's store call (this process only)."""
    from collector.pipeline.run import UploadPipeline
    from collector.web import concurrency, header_timeout

    protocol = header_timeout.HeaderTimeoutProtocol
    made, begin = protocol.connection_made, protocol.on_message_begin

    def connection_made(self: Any, transport: Any) -> None:
        accepted.append(time.perf_counter())
        made(self, transport)

    def on_message_begin(self: Any) -> None:
        begin(self)
        self.scope["bench.t0"] = time.perf_counter()

    protocol.connection_made = connection_made  # type: ignore[method-assign]
    protocol.on_message_begin = on_message_begin  # type: ignore[method-assign]

    slot = concurrency.ConcurrencyLimit.slot

    @asynccontextmanager
    async def timed_slot(self: Any) -> AsyncIterator[None]:
        mark("slot_ask")
        async with slot(self):
            mark("slot")
            yield

    concurrency.ConcurrencyLimit.slot = timed_slot  # type: ignore[method-assign]
    store_upload = UploadPipeline.store_upload

    async def timed_store(self: Any, *args: Any, **kwargs: Any) -> Any:
        mark("submit")
        try:
            return await store_upload(self, *args, **kwargs)
        finally:
            mark("stored")

    UploadPipeline.store_upload = timed_store  # type: ignore[method-assign]


def timed_app(inner: Any, done: list[dict[str, Any]]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await inner(scope, receive, send)
        record = {"t0": scope.get("bench.t0"), "app": time.perf_counter()}
        RECORD.set(record)

        async def timed_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                record["end"] = time.perf_counter()
                done.append(record)
            await send(message)

        await inner(scope, receive, timed_send)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--storage", choices=("s3", "local"), default="s3")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="S3 stand-in latency")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="phases-"))
    standin = None
    if args.storage == "s3":
        port = free_port()
        command = [sys.executable, str(BENCH_DIR / "s3_standin.py"), "--port", str(port)]
        command += ["--latency-ms", f"{args.latency_ms:g}", "--bucket", "phases"]
        standin = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, standin, timeout=30)
        os.environ.update(
            S3_ENDPOINT_URL=f"http://127.0.0.1:{port}",
            R2_ACCESS_KEY_ID="bench",
            R2_SECRET_ACCESS_KEY="bench",
            S3_REGION="us-east-1",
            R2_BUCKET_NAME="phases",
        )
    else:
        os.environ["LOCAL_STORAGE_DIR"] = str(scratch / "data")
    os.environ.update(RATE_LIMIT_PER_MINUTE="0", ADMIN_PASSWORD="bench-admin-secret-1")
    accepted: list[float] = []
    done: list[dict[str, Any]] = []
    instrument(accepted)
    from collector.app import create_app_from_environment
    from collector.web.header_timeout import header_timeout_protocol

    port = free_port()
    config = uvicorn.Config(
        timed_app(create_app_from_environment(), done),
        host="127.0.0.1",
        port=port,
        loop=args.loop,
        http=header_timeout_protocol(10),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    template = scratch / "template.json"
    template.write_text(json.dumps(upload_document("@@PID@@", "submission", "2025-11-19T14:30:44.000Z")))
    url, script = f"http://127.0.0.1:{port}", str(BENCH_DIR / "wrk_upload.lua")
    out: dict[str, Any] = {}

    def load() -> None:
        while not server.started:
            time.sleep(0.1)
        warm = ["wrk", "-t2", "-c16", "-d2s", "-s", script, url, "--", str(template), "warm"]
        subprocess.run(warm, capture_output=True, check=True)
        done.clear()
        accepted.clear()
        out["start"], before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        command = ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds:g}s", "--timeout", "10s"]
        command += ["-s", script, url, "--", str(template), f"run{port}"]
        out["wrk"] = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        after = resource.getrusage(resource.RUSAGE_SELF)
        out["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        server.should_exit = True

    threading.Thread(target=load, daemon=True).start()
    try:
        server.run()
    finally:
        if standin is not None:
            standin.terminate()
            standin.wait()
    summary = json.loads(out["wrk"].split("WRKJSON ")[1].splitlines()[0])
    rows = sorted((r for r in done if r.get("t0") and "end" in r), key=lambda r: r["end"] - r["t0"])
    print(
        f"{args.loop}, {args.storage} (latency {args.latency_ms:g} ms), {args.connections} connections, "
        f"load average {os.getloadavg()[0]:.1f}: wrk {summary['requests']} requests, p50 "
        f"{summary['p50_us'] / 1000:.0f} ms, p99 {summary['p99_us'] / 1000:.0f} ms, "
        f"{summary['timeouts']} timeouts; server CPU {1e6 * out['cpu'] / max(1, len(rows)):.0f} us/request"
    )

    def mean(selection: list[dict[str, Any]], start: str, stop: str) -> float:
        values = [1000 * (r[stop] - r[start]) for r in selection if r.get(start) and r.get(stop)]
        return statistics.fmean(values) if values else float("nan")

    for label, selection in (
        ("all", rows),
        ("slowest 1 %", rows[-max(1, len(rows) // 100) :]),
        ("middle 10 %", rows[len(rows) * 45 // 100 : len(rows) * 55 // 100]),
    ):
        phases = "  ".join(f"{name} {mean(selection, a, b):.1f}" for name, a, b in PHASES)
        print(f"  {label:<12} ms: {phases}")
    print(f"  slowest server-side total: {1000 * (rows[-1]['end'] - rows[-1]['t0']):.0f} ms")
    offsets = [1000 * (t - out["start"]) for t in sorted(accepted)]
    print(
        f"  {len(offsets)} connections accepted, the first {offsets[0]:.0f} ms and the last "
        f"{offsets[-1]:.0f} ms after wrk started"
    )


if __name__ == "__main__":
    main()
