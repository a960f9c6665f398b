"""Benchmark of the research tools against moto's S3 server on loopback (a script, not a test).

Seeds N synthetic participants x (1 status.json + 3 submissions), then prints, from the same run
and the same server:

* a full ``collector export`` (CSV) next to a plain sequential boto3 list-and-get loop over the
  same objects, and their ratio (target >= 10x);
* the dashboard's participants page latency: first page, warm (target < 1 s), plus the cold
  first build of the index for context.

moto, not the collector, is the bottleneck on a small machine (roughly 100-300 small PUTs/s on
2 cores): compare within a run.
moto answers from the same 2 CPUs with no network in between, so a round trip costs almost
nothing but moto's own CPU, and reading concurrently cannot beat reading one by one there.
``--latency-ms`` adds the same delay before every request of both readers, like the round trip
to a real bucket (R2 from a laptop: tens of ms), which is what concurrency is for.

    .venv/bin/python bench/bench_export.py --participants 10000
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import boto3
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers live in tests/support
from collector.app import create_app
from collector.export import DirectorySink, export_bucket
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import S3Store
from tests.support.factories import (
    BASE_TIME,
    make_status,
    make_submission,
    put_status,
    put_submission,
    synthetic_id,
)

BUCKET = "bench-export"
PASSWORD = "bench-admin-password-1"


def seed(store: S3Store, layout: KeyLayout, participants: int, threads: int) -> float:
    def one(number: int) -> None:
        pid = synthetic_id(number)
        put_status(store, layout, make_status(pid, sessions=3, responses={"q1": number % 5, "q2": "ok"}))
        for k in range(3):
            when = BASE_TIME + timedelta(days=k, seconds=number)
            put_submission(store, layout, make_submission(pid, when=when, data={"synthetic": True, "n": k}))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for done, _ in enumerate(pool.map(one, range(participants)), 1):
            if done % 1000 == 0:
                print(f"  seeded {done}/{participants} participants", file=sys.stderr)
    return time.perf_counter() - started


def add_latency(client, milliseconds: float) -> None:  # type: ignore[no-untyped-def]
    """Delay every request this boto3 client sends, as a network round trip would."""
    if milliseconds > 0:
        client.meta.events.register("before-send.s3.*", lambda **_: time.sleep(milliseconds / 1000))


def sequential_loop(client, prefix: str) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """What a researcher's first script would do: list, then get every object one after another."""
    started = time.perf_counter()
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            count += 1
    return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--participants", type=int, default=10000)
    parser.add_argument("--seed-threads", type=int, default=32)
    parser.add_argument("--workers", type=int, default=32, help="export's concurrent reads")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every read request")
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    credentials = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
    client.create_bucket(Bucket=BUCKET)
    settings = Settings(
        s3_endpoint_url=endpoint,
        r2_access_key_id="bench",
        r2_secret_access_key="bench",
        s3_region="us-east-1",
        r2_bucket_name=BUCKET,
        admin_password=PASSWORD,
    )
    layout = KeyLayout(settings.data_prefix)
    store = S3Store(
        BUCKET,
        endpoint_url=endpoint,
        access_key_id="bench",
        secret_access_key="bench",
        region="us-east-1",
        timeout_seconds=30,
    )
    try:
        n = args.participants
        print(f"Seeding {n} participants x (1 status + 3 submissions) = {4 * n} objects ...", file=sys.stderr)
        seeding = seed(store, layout, n, args.seed_threads)
        print(f"seeding: {seeding:.1f} s ({4 * n / seeding:.0f} PUT/s)")

        # Seeded without delay; from here on both readers pay the same simulated round trip.
        add_latency(store._client, args.latency_ms)  # the store's own boto3 client (bench only)
        add_latency(client, args.latency_ms)
        print(f"simulated round trip per request: {args.latency_ms:g} ms")
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            report = export_bucket(store, layout, DirectorySink(Path(out)), fmt="csv", workers=args.workers)
            export_seconds = time.perf_counter() - started
        print(f"export (csv, {args.workers} readers): {export_seconds:.1f} s, rows {report.rows}")

        loop_seconds, count = sequential_loop(client, f"{layout.prefix}/")
        print(f"sequential boto3 list+get loop: {loop_seconds:.1f} s over {count} objects")
        print(f"ratio: export is {loop_seconds / export_seconds:.1f}x faster than the loop")

        with TestClient(create_app(settings, store=store)) as http:
            # Not following the redirect: the overview would build the index before the timing.
            http.post("/admin/login", data={"password": PASSWORD}, follow_redirects=False)
            started = time.perf_counter()
            assert http.get("/admin/participants").status_code == 200
            print(f"participants page, cold (builds the index): {time.perf_counter() - started:.2f} s")
            warm = []
            for _ in range(10):
                started = time.perf_counter()
                page = http.get("/admin/participants")
                warm.append(time.perf_counter() - started)
                assert page.status_code == 200 and synthetic_id(0) in page.text
            print(
                f"participants page, first page warm: median {statistics.median(warm) * 1000:.0f} ms, "
                f"max {max(warm) * 1000:.0f} ms over {len(warm)} requests"
            )
            started = time.perf_counter()
            http.get("/admin")
            print(f"overview page, warm: {(time.perf_counter() - started) * 1000:.0f} ms")
    finally:
        store.close()
        server.stop()


if __name__ == "__main__":
    main()
