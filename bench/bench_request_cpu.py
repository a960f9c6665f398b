"""CPU per upload of the collector's request path alone: the real app, in one process, no sockets.

Drives the ASGI app directly (scope, receive, send: what uvicorn would call) with the same ~3 KB
submission ``bench_ingest.py`` sends, each to a new participant, ``--concurrency`` at a time, over
an in-memory store (``--store memory``) or a local folder (``--store local``, durable writes). The
figure is the process's user+system CPU per upload; with ``--profile`` it also prints where the
event loop's share goes (cProfile sees the event loop's thread only, not the storage threads).

    .venv/bin/python bench/bench_request_cpu.py                    # memory store
    .venv/bin/python bench/bench_request_cpu.py --store local --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "backend"))
sys.path.insert(0, str(BENCH_DIR))

from bench_collector import upload_document  # noqa: E402

from collector.app import create_app  # noqa: E402
from collector.settings import Settings  # noqa: E402
from collector.storage.memory import MemoryStore  # noqa: E402


async def one_upload(app: Any, body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/upload-user-data",
        "raw_path": b"/api/upload-user-data",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 5005),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def drive(app: Any, template: str, count: int, concurrency: int, tag: str) -> None:
    queue = iter(range(count))

    async def worker() -> None:
        for number in queue:
            body = template.replace("@@PID@@", f"{tag}n{number}").encode()
            status = await one_upload(app, body)
            assert status == 200, status

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="bench-request-cpu-"))
    settings = Settings(
        local_storage_dir=scratch / "data",
        admin_password="bench-admin-secret-1",
        rate_limit_per_minute=0,
    )
    store = MemoryStore() if args.store == "memory" else None
    app = create_app(settings, store=store)
    template = json.dumps(upload_document("@@PID@@", "submission", "2026-11-25T13:00:00.000Z"))
    async with app.router.lifespan_context(app):
        await drive(app, template, 200, args.concurrency, "warm")
        profile = cProfile.Profile() if args.profile else None
        before, started = os.times(), time.perf_counter()
        if profile:
            profile.enable()
        await drive(app, template, args.uploads, args.concurrency, f"run{time.time_ns()}")
        if profile:
            profile.disable()
        after, elapsed = os.times(), time.perf_counter() - started
    cpu = (after.user - before.user) + (after.system - before.system)
    print(
        f"{args.store} store, {args.uploads} uploads, {args.concurrency} at a time: "
        f"{1e6 * cpu / args.uploads:.0f} us CPU per upload "
        f"(user {1e6 * (after.user - before.user) / args.uploads:.0f}, "
        f"system {1e6 * (after.system - before.system) / args.uploads:.0f}), {args.uploads / elapsed:.0f}/s"
    )
    if profile:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("memory", "local"), default="memory")
    parser.add_argument("--uploads", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=40)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
