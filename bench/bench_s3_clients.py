"""S3 client choice: boto3 vs obstore, CPU per request and behaviour at 30 ms.

Against ``bench/s3_standin.py`` in its own process (in-memory, answers at once or after a fixed
latency), each client makes 3 KB create-if-absent PUTs, as many at once as the concurrency:

* ``boto3``, ``obstore``: the sync API from a plain thread pool;
* ``obs-hop``: obstore's sync API from coroutines on an event loop, each call handed to a worker
  thread (``asyncio.to_thread``): how the collector's upload path called it, thread hop included;
* ``obs-async``: obstore's async API awaited on the event loop, no thread of ours.

Printed:

* at 0 ms, 8 at once: client CPU per request (this process's user+system CPU / requests);
* at 30 ms, 64 and 256 at once: requests/s next to the ideal (concurrency / 30 ms), and the ratio
  of each async variant to ``obs-hop`` in the same run.

    .venv/bin/python bench/bench_s3_clients.py [--clients obs-hop,obs-async --rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from obstore.store import S3Store

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from bench_collector import free_port, stop, wait_for_port  # noqa: E402

BUCKET = "bench-clients"
BODY = b"x" * 3000


def boto3_put(endpoint: str, threads: int) -> Callable[[str], None]:
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        region_name="us-east-1",
        config=Config(max_pool_connections=threads, retries={"total_max_attempts": 1}),
    )
    return lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=BODY, IfNoneMatch="*") and None


def obstore_store(endpoint: str, threads: int) -> S3Store:
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id="bench",
        secret_access_key="bench",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "pool_max_idle_per_host": str(threads)},
    )


def obstore_put(endpoint: str, threads: int) -> Callable[[str], None]:
    import obstore

    store = obstore_store(endpoint, threads)
    return lambda key: obstore.put(store, key, BODY, mode="create") and None


def obstore_hop_put(endpoint: str, threads: int) -> Callable[[str], Awaitable[None]]:
    put = obstore_put(endpoint, threads)

    async def hop(key: str) -> None:
        await asyncio.to_thread(put, key)

    return hop


def obstore_async_put(endpoint: str, threads: int) -> Callable[[str], Awaitable[None]]:
    import obstore

    store = obstore_store(endpoint, threads)

    async def put(key: str) -> None:
        await obstore.put_async(store, key, BODY, mode="create")

    return put


def run(put: Callable[[str], None], tag: str, threads: int, count: int) -> tuple[float, float]:
    """Requests/s and CPU µs per request of ``count`` PUTs from ``threads`` threads."""
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, (f"{tag}/{i}" for i in range(count))))
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return count / seconds, 1e6 * cpu / count


def run_on_loop(
    put: Callable[[str], Awaitable[None]], tag: str, concurrency: int, count: int
) -> tuple[float, float]:
    """``run`` for coroutines: ``concurrency`` tasks on one event loop share ``count`` PUTs."""

    async def drive() -> None:
        # A thread per concurrent call, as the collector's thread limiter allows (obs-hop only).
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(concurrency))
        keys = iter(range(count))

        async def worker() -> None:
            for i in keys:
                await put(f"{tag}/{i}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    asyncio.run(drive())
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return count / seconds, 1e6 * cpu / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="boto3,obstore,obs-hop,obs-async", help="which, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="repeat each row, clients alternating")
    args = parser.parse_args()
    chosen = args.clients.split(",")
    port = free_port()
    standin = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "s3_standin.py"), "--port", str(port), "--bucket", BUCKET],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, standin)
        load = os.getloadavg()[0]
        print(f"S3 clients: {os.cpu_count()} cores, load average {load:.1f}; 3 KB PUTs, If-None-Match")
        clients = {"boto3": boto3_put, "obstore": obstore_put}
        on_loop = {"obs-hop": obstore_hop_put, "obs-async": obstore_async_put}
        for latency in (0, 30):
            setting = urllib.request.Request(f"{endpoint}/__latency?ms={latency}", method="POST")
            urllib.request.urlopen(setting).close()
            for threads in (8,) if latency == 0 else (64, 256):
                count = 2000 if latency == 0 else threads * 20
                ideal = f", ideal {threads / (latency / 1000):.0f}/s" if latency else ""
                rates: dict[str, float] = {}
                rows = [(n, m) for n, m in [*clients.items(), *on_loop.items()] if n in chosen]
                for name, make in rows * args.rounds:
                    put = make(endpoint, threads)
                    runner = run_on_loop if name in on_loop else run
                    tag = f"{name}-{latency}-{threads}-{time.monotonic_ns()}"  # fresh keys each round
                    runner(put, f"warm-{tag}", threads, 200)
                    rate, cpu = runner(put, tag, threads, count)
                    rates[name] = rate
                    hop = rates.get("obs-hop")
                    versus = f", {rate / hop:.2f}x obs-hop" if name == "obs-async" and hop else ""
                    print(
                        f"  {name:<9} {latency:>2} ms x{threads:<3}: {rate:7.0f} requests/s{ideal}, "
                        f"client CPU {cpu:6.0f} us/request{versus}"
                    )
    finally:
        stop(standin)


if __name__ == "__main__":
    main()
