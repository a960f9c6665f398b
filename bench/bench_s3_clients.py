"""S3 client choice: boto3 vs obstore (sync API from threads), CPU per request and behaviour at 30 ms.

Against ``bench/s3_standin.py`` in its own process (in-memory, answers at once or after a fixed
latency), each client makes 3 KB create-if-absent PUTs from a thread pool:

* at 0 ms, 8 threads: client CPU per request (this process's user+system CPU / requests);
* at 30 ms, 64 and 256 threads: requests/s next to the ideal threads / 30 ms.

    .venv/bin/python bench/bench_s3_clients.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def obstore_put(endpoint: str, threads: int) -> Callable[[str], None]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id="bench",
        secret_access_key="bench",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    return lambda key: obstore.put(store, key, BODY, mode="create") and None


def run(put: Callable[[str], None], tag: str, threads: int, count: int) -> tuple[float, float]:
    """Requests/s and CPU µs per request of ``count`` PUTs from ``threads`` threads."""
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, (f"{tag}/{i}" for i in range(count))))
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return count / seconds, 1e6 * cpu / count


def main() -> None:
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
        for latency in (0, 30):
            setting = urllib.request.Request(f"{endpoint}/__latency?ms={latency}", method="POST")
            urllib.request.urlopen(setting).close()
            for threads in (8,) if latency == 0 else (64, 256):
                for name, make in clients.items():
                    put = make(endpoint, threads)
                    run(put, f"warm-{name}-{latency}-{threads}", threads, 200)
                    count = 2000 if latency == 0 else threads * 20
                    rate, cpu = run(put, f"{name}-{latency}-{threads}", threads, count)
                    ideal = f", ideal {threads / (latency / 1000):.0f}/s" if latency else ""
                    print(
                        f"  {name:<8} {latency:>2} ms x{threads:<3}: {rate:7.0f} requests/s{ideal}, "
                        f"client CPU {cpu:6.0f} us/request"
                    )
    finally:
        stop(standin)


if __name__ == "__main__":
    main()
