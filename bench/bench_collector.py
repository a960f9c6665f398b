"""Collector benchmark (issue 2): throughput and latency of uploads over loopback, with ceilings.

Prints, for each backend (the local default and S3 on moto) and each number of concurrent
connections, uploads/s, p50 and p99 latency of:

* ``bare``: ``POST /bench/bare`` on the same app, which parses the same JSON and stores nothing
  (the HTTP ceiling);
* ``submission``: each upload a new participant with a ~3 KB ``submissionData``;
* ``status``: a status upload for each participant just created (the compare-and-swap path);
* ``ceiling …``: the same storage requests done directly on the store from a thread pool like
  the server's, with no HTTP (the storage ceiling);

and the storage requests per upload, counted by a wrapper around the server's store.

Processes: the collector is ``create_app(settings)`` served by uvicorn (uvloop, httptools) in
its own process; the load generator runs in another process (raw HTTP/1.1 over asyncio
streams with keep-alive, uvloop), so neither shares a GIL with the other; moto is a third.
The storage ceilings run in this (orchestrating) process while the others are idle.

Usage::

    .venv/bin/python bench/bench_collector.py
    .venv/bin/python bench/bench_collector.py --backends local --levels 64 --uploads 5000

Results are also written as JSON to ``bench/results/`` (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import mmap
import multiprocessing
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from collector.keys import KeyLayout, format_timestamp
from collector.storage import LocalStore, MemoryStore, ObjectStore, S3Store

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))  # the test helpers live in tests/support
from tests.support.counting_store import CountingStore  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
UPLOAD_PATH = "/api/upload-user-data"
BARE_PATH = "/bench/bare"
# anyio's default thread limiter: how many storage calls one server process runs at once.
SERVER_THREADS = 40
COUNTED_OPERATIONS = ("put", "get", "list", "check")
S3_BUCKET = "bench-collector"

# --- payloads ------------------------------------------------------------------------------------


def _submission_data() -> dict[str, Any]:
    """A jsonDump shaped like the study's (regions, features, survey, timing): about 3 KB."""
    return {
        "studyVersion": "2.4.1",
        "regions": [
            {
                "id": f"r{i}",
                "start": 12.5 * i,
                "end": 12.5 * i + 9.75,
                "label": "tremor",
                "confidence": 0.8,
                "features": {"freqLow": 0.5 + i, "freqHigh": 4.0 + i},
            }
            for i in range(8)
        ],
        "features": [{"name": f"feature{i}", "value": i * 0.125, "selected": i % 2 == 0} for i in range(10)],
        "survey": {f"q{i}": {"answer": "somewhat agree", "rt": 1834 + i} for i in range(12)},
        "timing": {
            "sessionStart": "2025-11-19T14:00:00.000Z",
            "sessionEnd": "2025-11-19T14:30:44.000Z",
            "durationMs": 1844000,
            "pauses": [12000, 3400, 560],
        },
        "completion": {"completed": True, "reason": "finished", "qualtricsResponseId": "R_1abcDEFghiJKL"},
    }


SUBMISSION_DATA = _submission_data()
STATUS_FIELDS: dict[str, Any] = {
    "hasSeenParticipantSetup": True,
    "hasSeenWelcome": True,
    "hasSeenTutorial": True,
    "tutorialCompleted": True,
    "weeklySessionCount": 2,
    "weekStartDate": "2025-11-17",
    "totalSessionsStarted": 5,
    "totalSessionsCompleted": 4,
    "totalSessionTime": 7200000,
    "totalSessionTimeHours": 2.0,
    "sessionHistory": [],
    "selectedVolcano": "Okmok",
    "selectedMode": "study",
}


def upload_document(participant_id: str, kind: str, timestamp: str) -> dict[str, Any]:
    """The upload the study app sends: ``kind`` is ``submission`` (or ``bare``) or ``status``."""
    document: dict[str, Any] = {
        "participantId": participant_id,
        "timestamp": timestamp,
        "uploadType": "status" if kind == "status" else "submission",
        **STATUS_FIELDS,
    }
    if kind != "status":
        document["submissionData"] = SUBMISSION_DATA
    return document


def participant_ids(tag: str, count: int) -> list[str]:
    return [f"{tag}x{i:07d}" for i in range(count)]


# --- server side: the real app plus a bare endpoint and a storage-request counter ----------------


class SharedCountingStore(CountingStore):
    """Counts every request in a small file-backed array instead of in memory.

    Each server process maps its own file ``counts-<pid>.bin`` under ``BENCH_COUNTS_DIR``, so the
    benchmark can sum requests across ``--workers`` processes without asking them over HTTP.
    """

    def __init__(self, inner: ObjectStore, counts_dir: Path) -> None:
        super().__init__(inner)
        path = counts_dir / f"counts-{os.getpid()}.bin"
        path.write_bytes(bytes(8 * len(COUNTED_OPERATIONS)))
        with open(path, "r+b") as handle:
            self._counts = mmap.mmap(handle.fileno(), 0)

    def _count(self, operation: str, key: str) -> None:
        if operation not in COUNTED_OPERATIONS:
            return  # uploads never delete
        offset = 8 * COUNTED_OPERATIONS.index(operation)
        with self._lock:
            (value,) = struct.unpack_from("<Q", self._counts, offset)
            struct.pack_into("<Q", self._counts, offset, value + 1)


def read_counts(counts_dir: Path) -> dict[str, int]:
    """Storage requests so far, summed over every server process."""
    totals = dict.fromkeys(COUNTED_OPERATIONS, 0)
    for path in counts_dir.glob("counts-*.bin"):
        raw = path.read_bytes()
        for index, operation in enumerate(COUNTED_OPERATIONS):
            totals[operation] += struct.unpack_from("<Q", raw, 8 * index)[0]
    return totals


def bench_app() -> FastAPI:
    """uvicorn factory: the real collector (settings from the environment) plus ``/bench/bare``."""
    from collector.app import create_app
    from collector.cli import configure_logging
    from collector.settings import Settings
    from collector.storage import MemoryStore, open_store

    configure_logging()  # one INFO line per upload, as ``collector serve`` logs
    settings = Settings()
    # ``memory`` is a diagnostic backend: the collector's own cost with storage taken away.
    inner = MemoryStore() if os.environ.get("BENCH_BACKEND") == "memory" else open_store(settings)
    store = SharedCountingStore(inner, Path(os.environ["BENCH_COUNTS_DIR"]))
    app = create_app(settings, store=store)

    @app.post(BARE_PATH, include_in_schema=False)
    async def bare(request: Request) -> JSONResponse:
        document = json.loads(await request.body())
        return JSONResponse({"status": "success", "participantId": document.get("participantId")})

    return app


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_tree_cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` and its live descendants (uvicorn's workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) / ticks, int(fields[12]) / ticks)
    tree = {pid}
    for _ in range(3):  # supervisor -> workers; depth is small
        tree |= {child for child, (parent, _, _) in stats.items() if parent in tree}
    members = [stats[m] for m in tree if m in stats]
    return sum(m[1] for m in members), sum(m[2] for m in members)


@dataclass
class Server:
    """The collector (``bench_app``) under uvicorn in its own process."""

    backend: str
    env: dict[str, str]
    workers: int
    log_path: Path
    counts_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.counts_dir.mkdir(parents=True, exist_ok=True)
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("R2_", "S3_", "LOCAL_STORAGE"))
        }
        environment.update(
            self.env,
            BENCH_COUNTS_DIR=str(self.counts_dir),
            BENCH_BACKEND=self.backend,
            ADMIN_PASSWORD="bench-admin-secret-1",
        )
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench_collector:bench_app",
            "--factory",
            "--app-dir",
            str(BENCH_DIR),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-access-log",
            "--timeout-keep-alive",
            "5",
            "--log-level",
            "warning",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, self.process)
        while len(list(self.counts_dir.glob("counts-*.bin"))) < self.workers:
            time.sleep(0.05)

    def cpu_seconds(self) -> tuple[float, float]:
        assert self.process is not None
        return process_tree_cpu(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


def start_moto(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto's standalone S3 server on a free loopback port, with the benchmark's bucket."""
    import boto3

    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for_port(port, process)
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket=S3_BUCKET)
    return process, endpoint


# --- load generator (runs in its own process) ----------------------------------------------------


def client_address(participant_id: str) -> str:
    """A stable address per participant: each participant uploads from its own browser."""
    number = zlib.crc32(participant_id.encode())
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"


def _request_bytes(port: int, path: str, participant_id: str, body: bytes) -> bytes:
    # X-Forwarded-For (trusted from loopback, as behind the production proxy) gives every
    # participant its own client address, so per-address rate limiting sees real participants.
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-Forwarded-For: {client_address(participant_id)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _drive(port: int, requests: list[bytes], connections: int) -> tuple[list[float], list[str], float]:
    """Send ``requests`` over ``connections`` keep-alive connections; latencies, errors, seconds."""
    latencies = [0.0] * len(requests)
    errors: list[str] = []
    order = itertools.count()
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (index := next(order)) < len(requests):
            started = time.perf_counter()
            writer.write(requests[index])
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            latencies[index] = time.perf_counter() - started
            if head[9:12] != b"200":
                errors.append((head[:12] + b" " + body[:200]).decode("utf-8", "replace"))
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(reader, writer) for reader, writer in streams))
    return latencies, errors, time.perf_counter() - started


def run_load(port: int, kind: str, ids: list[str], connections: int) -> dict[str, Any]:
    """One phase: an upload of ``kind`` per participant id, ``connections`` at a time."""
    import uvloop

    timestamp = format_timestamp(datetime.now(UTC))
    path = BARE_PATH if kind == "bare" else UPLOAD_PATH
    requests = [
        _request_bytes(port, path, pid, json.dumps(upload_document(pid, kind, timestamp)).encode())
        for pid in ids
    ]
    cpu_before = time.process_time()
    latencies, errors, seconds = uvloop.run(_drive(port, requests, connections))
    cpu = time.process_time() - cpu_before
    return {
        "seconds": seconds,
        "latencies": latencies,
        "errors": errors,
        "client_cpu_share": cpu / seconds,
        "body_bytes": len(requests[0]),
    }


# --- storage ceiling: the same storage requests, no HTTP -----------------------------------------


def _ceiling_submission(
    store: ObjectStore, layout: KeyLayout, pid: str, bodies: tuple[bytes, bytes], moment: datetime
) -> None:
    submission, status = bodies
    store.put(layout.submission_key(pid, moment), submission, if_absent=True)
    key = layout.status_key(pid)
    current = store.get_or_none(key)
    if current is None:
        store.put(key, status, if_absent=True)
    else:
        store.put(key, status, if_match=current.etag)


def _ceiling_status(
    store: ObjectStore, layout: KeyLayout, pid: str, bodies: tuple[bytes, bytes], moment: datetime
) -> None:
    key = layout.status_key(pid)
    current = store.get_or_none(key)
    if current is None:
        store.put(key, bodies[1], if_absent=True)
    else:
        store.put(key, bodies[1], if_match=current.etag)


def storage_ceiling(store: ObjectStore, kind: str, ids: list[str], threads: int) -> dict[str, Any]:
    """Each upload's storage requests done directly on ``store`` from ``threads`` threads."""
    layout = KeyLayout("volcano-audio-anonymized-data")
    moment = datetime.now(UTC)
    stamp = {"serverReceivedAt": format_timestamp(moment)}
    document = {**upload_document("P", "submission", format_timestamp(moment)), **stamp}
    status = {k: v for k, v in document.items() if k != "submissionData"}
    # Encoded as the collector encodes what it stores (indented, UTF-8).
    bodies = tuple(json.dumps(d, ensure_ascii=False, indent=2).encode() for d in (document, status))
    action: Callable[..., None] = _ceiling_submission if kind == "submission" else _ceiling_status
    latencies = [0.0] * len(ids)

    def one(index: int) -> None:
        started = time.perf_counter()
        action(store, layout, ids[index], bodies, moment)
        latencies[index] = time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=threads) as pool:
        started, cpu = time.perf_counter(), os.times()
        list(pool.map(one, range(len(ids))))
        seconds, after = time.perf_counter() - started, os.times()
    return {
        "seconds": seconds,
        "latencies": latencies,
        "errors": [],
        "cpu_seconds": (after.user - cpu.user, after.system - cpu.system),
    }


# --- orchestration and report --------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    connections: int
    kind: str  # bare | submission | status | ceiling submission | ceiling status
    uploads: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    # Server (for a ceiling: this process's) CPU per upload in ms: user, system.
    server_cpu_ms: tuple[float, float] | None = None
    client_cpu_share: float | None = None  # load generator's CPU use, fraction of one core
    storage_requests: dict[str, float] | None = None  # per upload, by operation


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def make_row(backend: str, connections: int, kind: str, outcome: dict[str, Any]) -> Row:
    latencies = sorted(outcome["latencies"])
    if outcome["errors"]:
        print(
            f"  ! {backend} {kind} x{connections}: {len(outcome['errors'])} errors, first: "
            f"{outcome['errors'][0]}",
            file=sys.stderr,
        )
    return Row(
        backend,
        connections,
        kind,
        len(latencies),
        len(latencies) / outcome["seconds"],
        1000 * percentile(latencies, 0.50),
        1000 * percentile(latencies, 0.99),
        len(outcome["errors"]),
        server_cpu_ms=outcome.get("cpu_ms"),
        client_cpu_share=outcome.get("client_cpu_share"),
    )


def http_phase(
    server: Server, loader: ProcessPoolExecutor, kind: str, ids: list[str], connections: int
) -> dict[str, Any]:
    """One load-generator run, with the server's CPU time and storage requests it caused."""
    counts_before, cpu_before = read_counts(server.counts_dir), server.cpu_seconds()
    outcome = loader.submit(run_load, server.port, kind, ids, connections).result()
    cpu_after, counts_after = server.cpu_seconds(), read_counts(server.counts_dir)
    outcome["cpu"] = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
    outcome["counts"] = {op: counts_after[op] - counts_before[op] for op in COUNTED_OPERATIONS}
    return outcome


def merge(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds of one phase as one: summed times and counts, pooled latencies."""
    merged: dict[str, Any] = {
        "seconds": sum(o["seconds"] for o in outcomes),
        "latencies": [x for o in outcomes for x in o["latencies"]],
        "errors": [e for o in outcomes for e in o["errors"]],
    }
    n = len(merged["latencies"])
    if "client_cpu_share" in outcomes[0]:
        merged["client_cpu_share"] = (
            sum(o["client_cpu_share"] * o["seconds"] for o in outcomes) / merged["seconds"]
        )
    cpu_key = "cpu" if "cpu" in outcomes[0] else "cpu_seconds"
    merged["cpu_ms"] = tuple(1000 * sum(o[cpu_key][i] for o in outcomes) / n for i in (0, 1))
    if "counts" in outcomes[0]:
        merged["counts"] = {op: sum(o["counts"][op] for o in outcomes) / n for op in COUNTED_OPERATIONS}
    return merged


def bench_backend(
    backend: str,
    server: Server,
    store: ObjectStore,
    loader: ProcessPoolExecutor,
    levels: list[int],
    uploads: int,
    workers: int,
    rounds: int,
    run: str,
) -> list[Row]:
    """Every phase at every level, in ``rounds`` interleaved rounds so drifting load hits all alike."""
    rows: list[Row] = []
    # Warm up: imports, connection pools, the first directories; not measured.
    warm = participant_ids(f"{run}w", min(300, uploads))
    for kind in ("bare", "submission", "status"):
        loader.submit(run_load, server.port, kind, warm, 16).result()
    kinds = ("ceiling submission", "ceiling status", "bare", "submission", "status")
    for level in levels:
        threads = min(level, SERVER_THREADS * workers)
        outcomes: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        for round_ in range(rounds):
            size = uploads // rounds + (1 if round_ < uploads % rounds else 0)
            ceiling_ids = participant_ids(f"{run}c{level}r{round_}", size)
            http_ids = participant_ids(f"{run}h{level}r{round_}", size)
            for kind in ("submission", "status"):
                outcomes[f"ceiling {kind}"].append(storage_ceiling(store, kind, ceiling_ids, threads))
            for kind in ("bare", "submission", "status"):
                outcomes[kind].append(http_phase(server, loader, kind, http_ids, level))
        for kind in kinds:
            merged = merge(outcomes[kind])
            row = make_row(backend, level, kind, merged)
            if kind in ("submission", "status"):
                row.storage_requests = {op: v for op, v in merged["counts"].items() if v}
            rows.append(row)
        for row in rows[-len(kinds) :]:
            print_row(row, rows)
    return rows


HEADER = (
    f"{'backend':<7} {'conns':>5}  {'endpoint':<19} {'n':>5} {'uploads/s':>9} {'p50 ms':>7} "
    f"{'p99 ms':>7} {'vs bare':>7} {'vs ceil':>7} {'cpu usr+sys':>11} {'client':>6}  "
    "storage req/upload"
)


def _ratio(row: Row, rows: list[Row], kind: str) -> float | None:
    for other in rows:
        if (other.backend, other.connections, other.kind) == (row.backend, row.connections, kind):
            return row.per_second / other.per_second
    return None


def print_row(row: Row, rows: list[Row]) -> None:
    vs_bare = vs_ceiling = None
    if row.kind in ("submission", "status"):
        vs_bare, vs_ceiling = _ratio(row, rows, "bare"), _ratio(row, rows, f"ceiling {row.kind}")
    requests = ""
    if row.storage_requests is not None:
        total = sum(row.storage_requests.values())
        requests = f"{total:.2f} (" + ", ".join(f"{v:.2f} {k}" for k, v in row.storage_requests.items()) + ")"
    cells = [
        f"{row.backend:<7} {row.connections:>5}  {row.kind:<19} {row.uploads:>5} {row.per_second:>9.1f} "
        f"{row.p50_ms:>7.2f} {row.p99_ms:>7.2f}",
        f"{vs_bare:>7.0%}" if vs_bare is not None else f"{'':>7}",
        f"{vs_ceiling:>7.0%}" if vs_ceiling is not None else f"{'':>7}",
        f"{row.server_cpu_ms[0]:>5.2f}+{row.server_cpu_ms[1]:<5.2f}" if row.server_cpu_ms else f"{'':>11}",
        f"{row.client_cpu_share:>6.0%}" if row.client_cpu_share is not None else f"{'':>6}",
    ]
    print(
        " ".join(cells)
        + ("  " + requests if requests else "")
        + (f"  ERRORS {row.errors}" if row.errors else ""),
        flush=True,
    )


def check_targets(rows: list[Row]) -> list[tuple[str, bool]]:
    """Issue 2's targets, on the local default."""
    results: list[tuple[str, bool]] = []
    for row in (r for r in rows if r.backend == "local" and r.kind in ("submission", "status")):
        name = f"{row.kind} x{row.connections}"
        vs_bare, vs_ceiling = _ratio(row, rows, "bare"), _ratio(row, rows, f"ceiling {row.kind}")
        if vs_bare is not None:
            results.append((f"{name}: {vs_bare:.0%} of bare-endpoint throughput (>= 35%)", vs_bare >= 0.35))
        if vs_ceiling is not None:
            results.append((f"{name}: {vs_ceiling:.0%} of storage ceiling (>= 70%)", vs_ceiling >= 0.70))
        if row.connections == 64:
            results.append((f"{name}: p99 {row.p99_ms:.1f} ms (< 50 ms)", row.p99_ms < 50))
    for row in (r for r in rows if r.errors):
        results.append((f"{row.backend} {row.kind} x{row.connections}: {row.errors} requests failed", False))
    for row in (r for r in rows if r.kind in ("submission", "status") and r.storage_requests):
        limit = 3 if row.kind == "submission" else 2
        total = sum((row.storage_requests or {}).values())
        results.append(
            (
                f"{row.backend} {row.kind} x{row.connections}: {total:.2f} storage requests "
                f"per upload (<= {limit})",
                total <= limit + 1e-9,
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--uploads",
        type=int,
        help="uploads per level and phase (default 2000 on local, 400 on s3, where moto is the bottleneck)",
    )
    parser.add_argument(
        "--backends",
        default="local,s3",
        help="comma-separated: local, s3, and memory (diagnostic: the collector's own cost, nothing durable)",
    )
    parser.add_argument("--levels", default="1,16,64", help="concurrent connections, comma-separated")
    parser.add_argument("--workers", type=int, default=1, help="collector server processes")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="interleaved rounds per level, so that "
        "background load drifting during the run affects every phase alike",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where the local backend stores (default: a temp "
        "folder on the same disk as the repo, removed afterwards)",
    )
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    run = datetime.now(UTC).strftime("%H%M%S")
    RESULTS_DIR.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-collector-", dir=RESULTS_DIR))
    print(
        f"Collector benchmark: {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}), "
        f"workers={args.workers}, levels {levels}; "
        f"load generator in its own process (raw HTTP/1.1 keep-alive, uvloop); logs in {scratch}"
    )
    print(
        "cpu usr+sys = server CPU ms per request (ceilings: this process's); client = load generator "
        "CPU, share of one core;\nceiling = the same storage requests from a thread pool, no HTTP\n"
    )
    print(HEADER)
    rows: list[Row] = []
    moto: subprocess.Popen[bytes] | None = None
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as loader:
            for backend in backends:
                uploads = args.uploads or (400 if backend == "s3" else 2000)
                if backend == "local":
                    root = args.data_dir or scratch / "data"
                    env = {"LOCAL_STORAGE_DIR": str(root)}
                    store: ObjectStore = LocalStore(root)
                elif backend == "s3":
                    if moto is None:
                        moto, endpoint = start_moto(scratch / "moto.log")
                    env = {
                        "S3_ENDPOINT_URL": endpoint,
                        "R2_ACCESS_KEY_ID": "test",
                        "R2_SECRET_ACCESS_KEY": "test",
                        "S3_REGION": "us-east-1",
                        "R2_BUCKET_NAME": S3_BUCKET,
                    }
                    store = S3Store(
                        S3_BUCKET,
                        endpoint_url=endpoint,
                        access_key_id="test",
                        secret_access_key="test",
                        region="us-east-1",
                    )
                elif backend == "memory":
                    env, store = {"LOCAL_STORAGE_DIR": str(scratch / "unused")}, MemoryStore()
                else:
                    parser.error(f"unknown backend {backend!r}")
                server = Server(
                    backend,
                    env,
                    args.workers,
                    scratch / f"server-{backend}.log",
                    scratch / f"counts-{backend}",
                )
                server.start()
                try:
                    rows += bench_backend(
                        backend, server, store, loader, levels, uploads, args.workers, args.rounds, run
                    )
                finally:
                    server.stop()
                    store.close()
    finally:
        if moto is not None:
            stop(moto)
    load = os.getloadavg()[0]
    print(
        f"\nLoad average at the end: {load:.1f}"
        + (" (other work shared the machine: figures are noisy, rerun when idle)" if load > 1.5 else "")
    )
    print("\nTargets (issue 2):")
    targets = check_targets(rows)
    for text, met in targets:
        print(f"  {'met' if met else 'MISSED':<6}  {text}")
    out = RESULTS_DIR / f"collector-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "cores": os.cpu_count(),
                "workers": args.workers,
                "levels": levels,
                "rows": [asdict(r) for r in rows],
                "targets": [{"target": t, "met": m} for t, m in targets],
            },
            indent=2,
        )
    )
    print(f"\nJSON: {out.relative_to(REPO)}")
    if args.data_dir is None:
        shutil.rmtree(scratch / "data", ignore_errors=True)


if __name__ == "__main__":
    main()
