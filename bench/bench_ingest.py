"""Ingest benchmark (issue 11): the collector against a naive server, a bare endpoint, and a distant bucket.

Two parts, each printing its ratios measured in the same run:

**local**: three servers up at once, measured in turn at each number of connections, so drifting
background load hits all alike:

* ``collector``: ``python -m collector serve`` with ``WORKERS=2`` on a local folder (every 200
  durable: group-committed ``syncfs``);
* ``naive``: ``bench/naive_server.py``, Flask under gunicorn (2 workers x 8 threads), two plain
  file writes, no fsync (what a team would write in twenty lines; a crash loses data);
* ``bare``: ``bench/bare_server.py``, FastAPI parsing the same JSON and storing nothing (2 workers).

**s3**: one collector process against ``bench/s3_standin.py``, an in-memory S3 stand-in that
honours conditional writes and adds a fixed latency per request, and counts requests. At 0 ms
(what the CPU allows) and at 30 ms (a distant bucket), at 64 and 256 connections, for submissions
(each a new participant) and status uploads (to those participants); uploads/s next to the ideal
``min(connections / (requests per upload x 30 ms), the same uploads/s at 0 ms)``; plus one
collector process on the local folder, for the S3-vs-local ratio.

Load comes from ``wrk`` (C, epoll; Debian's package, installed when missing), 2 threads, keep-alive,
each request a new participant with a ~3 KB submission (``bench/wrk_upload.lua``). CPU per upload
is the server process tree's user+system CPU over the run, divided by the requests answered; wrk's
own CPU is shown as a share of one core. Per-address rate limiting is off (RATE_LIMIT_PER_MINUTE=0).
wrk waits ``--client-timeout`` seconds for an answer (2, its own default); requests it gave up on
are counted apart (``t/o``) as well as in the errors. The collectors' ``UPLOAD_QUEUE_SECONDS`` is
half of it (the default 10 s is under the browser module's 15 s), so an upload that waited that
long is answered 503 + Retry-After (an error here, as wrk does not retry) instead of timing out.
uploads/s counts 2xx answers only.

At the end, issue 18's targets, each with its figure from this run: at 64 connections on the local
folder, the collector's ratio to the naive server (>= 1.5x) and to the bare endpoint (>= 0.35x),
its p99 (< 50 ms), errors (0) and CPU per upload (<= 600 us); storage requests per submission
(<= 2) and per status upload (<= 1), of new participants and of participants the process wrote
last; at 30 ms, uploads/s against the ideal (>= 90 %) and client timeouts (0), at each level.

``--granian`` adds the collector's own app served by granian instead of uvicorn to the local part
(the measurement that kept uvicorn); ``--checkout PATH`` runs another checkout's collector code
with this script (a before figure measured the same way).

Usage (bounded: about 5 minutes with the defaults on 2 busy cores)::

    .venv/bin/python bench/bench_ingest.py
    .venv/bin/python bench/bench_ingest.py --parts local --levels 64 --seconds 10
    .venv/bin/python bench/bench_ingest.py --parts requests   # storage requests per upload only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from bench_collector import free_port, process_tree_cpu, stop, upload_document, wait_for_port  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
BUCKET = "bench-ingest"
# Seconds wrk waits for an answer before counting a timeout (--client-timeout; 2 s is wrk's own
# default, with which issue 18 counted 130 timeouts at 256 connections and 30 ms).
CLIENT_TIMEOUT = 2.0
# Whose collector code runs (--checkout: another checkout's, for a before figure in the same way).
CHECKOUT = REPO
VENV_BIN = Path(sys.executable).parent


# --- servers -------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.port = self.port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("R2_", "S3_", "LOCAL_STORAGE"))}
        env.update(self.env, PORT=str(self.port), HOST="127.0.0.1")
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process, timeout=60)
        return self

    def cpu(self) -> float:
        assert self.process is not None
        user, system = process_tree_cpu(self.process.pid)
        return user + system

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


def collector(name: str, workers: int, env: dict[str, str], scratch: Path) -> Server:
    return Server(
        name,
        [sys.executable, "-m", "collector", "serve"],
        {
            "WORKERS": str(workers),
            "RATE_LIMIT_PER_MINUTE": "0",
            # Under the client's timeout, as the default 10 s is under the browser module's 15 s:
            # an upload that waited this long is answered 503 + Retry-After, not left to time out.
            "UPLOAD_QUEUE_SECONDS": f"{CLIENT_TIMEOUT / 2:g}",
            "ADMIN_PASSWORD": "bench-admin-secret-1",
            "PYTHONPATH": str(CHECKOUT / "backend"),
            **env,
        },
        scratch / f"{name}.log",
    )


def collector_on_granian(name: str, workers: int, env: dict[str, str], scratch: Path) -> Server:
    """The same app and settings as ``collector``, served by granian (a Rust HTTP server) instead
    of ``collector serve``'s uvicorn: the comparison that chose the server (``--granian``)."""
    server = collector(name, workers, env, scratch)
    server.command = [
        *(str(VENV_BIN / "granian"), "--interface", "asgi", "--factory", "--workers", str(workers)),
        *("--loop", "uvloop", "--host", "127.0.0.1", "--port", "{port}", "--no-access-log"),
        *("--log-level", "warning", "collector.app:create_app_from_environment"),
    ]
    return server


def naive(scratch: Path) -> Server:
    return Server(
        "naive",
        [
            *(str(VENV_BIN / "gunicorn"), "-w", "2", "-k", "gthread", "--threads", "8"),
            *("-b", "127.0.0.1:{port}", "--chdir", str(BENCH_DIR), "--log-level", "warning"),
            "naive_server:app",
        ],
        {"NAIVE_DATA_DIR": str(scratch / "naive-data")},
        scratch / "naive.log",
    )


def bare(scratch: Path) -> Server:
    return Server(
        "bare",
        [
            *(sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(BENCH_DIR)),
            "bare_server:create",
            *("--workers", "2", "--host", "127.0.0.1", "--port", "{port}", "--no-access-log"),
            *("--log-level", "warning"),
        ],
        {},
        scratch / "bare.log",
    )


# --- load ----------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing Debian's package (apt-get install -y wrk)", flush=True)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


_TEMPLATE_TIME = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def write_template(scratch: Path, kind: str) -> Path:
    """The upload with ``@@PID@@`` where the participant id goes (wrk fills it per request)."""
    path = scratch / f"template-{kind}.json"
    path.write_text(json.dumps(upload_document("@@PID@@", kind, _TEMPLATE_TIME)))
    return path


@dataclass
class Row:
    part: str
    server: str
    kind: str
    latency_ms: float
    connections: int
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers, socket errors and client timeouts
    timeouts: int  # requests wrk gave up on (no answer within --client-timeout)
    cpu_us: float  # server CPU per request answered
    client_cpu: float  # wrk's CPU, share of one core
    storage_requests: float | None = None  # per upload, counted at the S3 endpoint
    seen_requests: float | None = None  # per submission to a participant this process wrote last
    ideal: float | None = None


def run_wrk(
    wrk: str, server: Server, template: Path, prefix: str, connections: int, seconds: float
) -> dict[str, Any]:
    command = [wrk, "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds:g}s"]
    command += ["--timeout", f"{CLIENT_TIMEOUT:g}s", "-s", str(BENCH_DIR / "wrk_upload.lua")]
    command += [f"http://127.0.0.1:{server.port}", "--", str(template), prefix]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = server.cpu()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    cpu_after = server.cpu()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRKJSON "))
    result = json.loads(line.removeprefix("WRKJSON "))
    result["server_cpu"] = cpu_after - cpu_before
    result["client_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def measure(
    wrk: str,
    part: str,
    server: Server,
    kind: str,
    template: Path,
    prefix: str,
    connections: int,
    seconds: float,
    latency_ms: float = 0.0,
) -> Row:
    result = run_wrk(wrk, server, template, prefix, connections, seconds)
    duration = result["duration_us"] / 1e6
    n = max(1, result["requests"])
    return Row(
        part,
        server.name,
        kind,
        latency_ms,
        connections,
        result["requests"],
        (result["requests"] - result["status_errors"]) / duration,  # answered 2xx: stored
        result["p50_us"] / 1000,
        result["p99_us"] / 1000,
        result["status_errors"] + result["socket_errors"] + result["timeouts"],
        result["timeouts"],
        1e6 * result["server_cpu"] / n,
        result["client_cpu"] / duration,
    )


HEADER = (
    f"{'part':<5} {'server':<14} {'kind':<10} {'lat':>4} {'conns':>5} {'n':>6} {'uploads/s':>9} "
    f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'t/o':>4} {'cpu us':>7} {'wrk':>5}"
)


def show(row: Row, note: str = "") -> None:
    extra = ""
    if row.storage_requests is not None:
        extra += f"  {row.storage_requests:.2f} storage req/upload"
    if row.ideal is not None:
        extra += f"  ideal {row.ideal:.0f}/s -> {row.per_second / row.ideal:.0%} of ideal"
    print(
        f"{row.part:<5} {row.server:<14} {row.kind:<10} {row.latency_ms:>4.0f} {row.connections:>5} "
        f"{row.requests:>6} {row.per_second:>9.0f} {row.p50_ms:>7.1f} {row.p99_ms:>7.1f} {row.errors:>6} "
        f"{row.timeouts:>4} "
        f"{row.cpu_us:>7.0f} {row.client_cpu:>5.0%}{extra}{note}",
        flush=True,
    )


# --- parts ---------------------------------------------------------------------------------------


def local_part(
    wrk: str, scratch: Path, levels: list[int], seconds: float, run: str, granian: bool = False
) -> list[Row]:
    template = write_template(scratch, "submission")
    servers = [
        collector("collector", 2, {"LOCAL_STORAGE_DIR": str(scratch / "collector-data")}, scratch),
        naive(scratch),
        bare(scratch),
    ]
    if granian:
        data = {"LOCAL_STORAGE_DIR": str(scratch / "granian-data")}
        servers.insert(1, collector_on_granian("collector-granian", 2, data, scratch))
    rows: list[Row] = []
    try:
        for server in servers:
            server.start()
            run_wrk(wrk, server, template, f"{run}warm{server.name}", 16, 2)  # imports, first dirs
        for level in levels:
            for server in servers:
                row = measure(wrk, "local", server, "submission", template, f"{run}L{level}", level, seconds)
                rows.append(row)
                show(row)
    finally:
        for server in servers:
            server.stop()
    return rows


def _standin(port: int, path: str) -> dict[str, int]:
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST")) as r:
        return json.loads(r.read())


COUNTED_UPLOADS = 20


def count_requests(
    server: Server, standin_port: int, templates: dict[str, Path], run: str
) -> dict[str, float]:
    """Storage requests per upload, sequential uploads counted at the endpoint.

    ``submission``: each to a new participant (what wrk sends: two creates); ``status``:
    to those participants, which this process saw last (the status cache's common path);
    ``submission-seen``: another submission to each of them (the cache's path for submissions);
    and ``status-new``: a status upload that is a new participant's first upload.
    """
    per_upload: dict[str, float] = {}
    for kind in ("submission", "status", "submission-seen", "status-new"):
        _standin(standin_port, "/__reset")
        template = templates[kind.removesuffix("-seen").removesuffix("-new")].read_text()
        if kind == "submission-seen":  # a later submission (another second, so another file name)
            later = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            template = template.replace(f'"{_TEMPLATE_TIME}"', f'"{later}"')
        for number in range(COUNTED_UPLOADS):
            participant = f"{run}{'fresh' if kind == 'status-new' else 'count'}{number}"
            body = template.replace("@@PID@@", participant).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{server.port}/api/upload-user-data",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request) as answer:
                assert answer.status == 200
        counts = _standin(standin_port, "/__counts")
        per_upload[kind] = sum(v for k, v in counts.items() if k.split()[1] != "bucket") / COUNTED_UPLOADS
    return per_upload


def show_counts(per_upload: dict[str, float]) -> None:
    print(
        f"s3    storage requests counted at the endpoint, {COUNTED_UPLOADS} sequential uploads each: "
        f"{per_upload['submission']:.2f} per submission of a new participant, "
        f"{per_upload['submission-seen']:.2f} per submission of a participant this process wrote "
        f"last, {per_upload['status-new']:.2f} per status upload of a new participant and "
        f"{per_upload['status']:.2f} of a participant this process wrote last (status cache on, "
        "the default)",
        flush=True,
    )


def s3_standin(scratch: Path) -> tuple[Server, int, dict[str, str]]:
    """The S3 stand-in (not started), its port, and the environment of a collector using it."""
    port = free_port()
    standin = Server(
        "s3-standin",
        [sys.executable, str(BENCH_DIR / "s3_standin.py"), "--port", "{port}", "--bucket", BUCKET],
        {},
        scratch / "standin.log",
        port=port,
    )
    env = {
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "R2_ACCESS_KEY_ID": "bench",
        "R2_SECRET_ACCESS_KEY": "bench",
        "S3_REGION": "us-east-1",
        "R2_BUCKET_NAME": BUCKET,
    }
    return standin, port, env


def requests_part(scratch: Path, run: str) -> dict[str, float]:
    """Only the sequential request count of the s3 part: a few seconds, no load, no wrk."""
    templates = {kind: write_template(scratch, kind) for kind in ("submission", "status")}
    standin, standin_port, s3_env = s3_standin(scratch)
    s3_collector = collector("collector-s3", 1, s3_env, scratch)
    try:
        standin.start()
        s3_collector.start()
        per_upload = count_requests(s3_collector, standin_port, templates, run)
        show_counts(per_upload)
    finally:
        for server in (s3_collector, standin):
            server.stop()
    return per_upload


def s3_part(
    wrk: str, scratch: Path, levels: list[int], seconds: float, run: str
) -> tuple[list[Row], dict[str, float]]:
    templates = {kind: write_template(scratch, kind) for kind in ("submission", "status")}
    standin, standin_port, s3_env = s3_standin(scratch)
    s3_collector = collector("collector-s3", 1, s3_env, scratch)
    local_collector = collector("collector-local1", 1, {"LOCAL_STORAGE_DIR": str(scratch / "one")}, scratch)
    rows: list[Row] = []
    try:
        standin.start()
        for server in (s3_collector, local_collector):
            server.start()
            run_wrk(wrk, server, templates["submission"], f"{run}warm{server.name}", 16, 2)
        per_upload = count_requests(s3_collector, standin_port, templates, run)
        show_counts(per_upload)
        at_zero: dict[tuple[str, int], float] = {}
        for latency in (0.0, 30.0):
            _standin(standin_port, f"/__latency?ms={latency:g}")
            for level in levels:
                prefix = f"{run}S{latency:g}x{level}"
                if latency == 0.0:
                    template, name = templates["submission"], prefix + "l"
                    row = measure(wrk, "s3", local_collector, "submission", template, name, level, seconds)
                    rows.append(row)
                    show(row)
                for kind in ("submission", "status"):  # status: to the participants just created
                    _standin(standin_port, "/__reset")
                    row = measure(
                        wrk, "s3", s3_collector, kind, templates[kind], prefix, level, seconds, latency
                    )
                    counts = _standin(standin_port, "/__counts")
                    # Exact, from the sequential count: under load, requests still in flight when
                    # wrk stops are counted at the endpoint but their uploads are not.
                    row.storage_requests = per_upload[kind]
                    if kind == "submission":
                        row.seen_requests = per_upload["submission-seen"]
                    if latency == 0.0:
                        at_zero[(kind, level)] = row.per_second
                    else:
                        row.ideal = min(
                            level / (row.storage_requests * latency / 1000), at_zero[(kind, level)]
                        )
                    rows.append(row)
                    show(row, f"  counts {dict(counts)}" if latency else "")
    finally:
        for server in (s3_collector, local_collector, standin):
            server.stop()
    return rows, per_upload


# --- report --------------------------------------------------------------------------------------


def find(rows: list[Row], **match: Any) -> Row | None:
    return next((r for r in rows if all(getattr(r, k) == v for k, v in match.items())), None)


def targets(rows: list[Row], per_upload: dict[str, float] | None) -> list[tuple[str, bool]]:
    """Issue 18's targets, each with the figure measured in this run."""
    out: list[tuple[str, bool]] = []
    for level in sorted({r.connections for r in rows if r.part == "local"}):
        ours = find(rows, part="local", server="collector", connections=level)
        theirs = find(rows, part="local", server="naive", connections=level)
        ceiling = find(rows, part="local", server="bare", connections=level)
        if ours and theirs and ceiling:
            print(
                f"  local x{level}: collector/naive {ours.per_second / theirs.per_second:.2f}x, "
                f"collector/bare {ours.per_second / ceiling.per_second:.2f}x; CPU us/upload collector "
                f"{ours.cpu_us:.0f}, naive {theirs.cpu_us:.0f}, bare {ceiling.cpu_us:.0f}"
            )
        granian = find(rows, part="local", server="collector-granian", connections=level)
        if ours and granian:
            print(
                f"  local x{level}: the collector on granian {granian.per_second / ours.per_second:.2f}x "
                f"on uvicorn (p99 {granian.p99_ms:.1f} against {ours.p99_ms:.1f} ms, CPU us/upload "
                f"{granian.cpu_us:.0f} against {ours.cpu_us:.0f}, {granian.errors} errors against "
                f"{ours.errors})"
            )
        if level != 64 or not ours:
            continue
        if theirs:
            ratio = ours.per_second / theirs.per_second
            out.append((f"local x64: {ratio:.2f}x the naive server (>= 1.5x)", ratio >= 1.5))
        if ceiling:
            ratio = ours.per_second / ceiling.per_second
            out.append((f"local x64: {ratio:.2f}x the bare FastAPI endpoint (>= 0.35x)", ratio >= 0.35))
        out.append((f"local x64: p99 {ours.p99_ms:.1f} ms (< 50 ms)", ours.p99_ms < 50))
        out.append((f"local x64: {ours.errors} errors (0)", ours.errors == 0))
        out.append((f"local x64: {ours.cpu_us:.0f} us of CPU per upload (<= 600)", ours.cpu_us <= 600))
    if per_upload:
        for kind, label, limit in (
            ("submission", "submission, new participant", 2.0),
            ("submission-seen", "submission, participant seen", 2.0),
            ("status-new", "status upload, new participant", 1.0),
            ("status", "status upload, participant seen", 1.0),
        ):
            requests = per_upload[kind]
            out.append((f"s3: {requests:.2f} storage requests per {label} (<= {limit:g})", requests <= limit))
    for level in sorted({r.connections for r in rows if r.part == "s3"}):
        s3 = find(
            rows, part="s3", server="collector-s3", kind="submission", latency_ms=0.0, connections=level
        )
        local = find(rows, part="s3", server="collector-local1", connections=level)
        if s3 and local:
            share = s3.per_second / local.per_second
            print(f"  s3 at 0 ms x{level}: {share:.0%} of the local folder, one process")
        for kind in ("submission", "status"):
            row = find(rows, part="s3", kind=kind, latency_ms=30.0, connections=level)
            if row and row.ideal:
                share = row.per_second / row.ideal
                out.append((f"s3 at 30 ms x{level} {kind}: {share:.0%} of ideal (>= 90%)", share >= 0.9))
                out.append(
                    (
                        f"s3 at 30 ms x{level} {kind}: {row.timeouts} client timeouts "
                        f"(0; wrk waits {CLIENT_TIMEOUT:g} s)",
                        row.timeouts == 0,
                    )
                )
    return out


def main() -> None:
    global CLIENT_TIMEOUT, CHECKOUT  # one setting for every run
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts", default="local,s3", help="local, s3, or requests (only the s3 request count, seconds)"
    )
    parser.add_argument("--levels", default="1,16,64,256", help="connections, local part")
    parser.add_argument("--s3-levels", default="64,256", help="connections, s3 part")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument(
        "--granian", action="store_true", help="local part: also the collector's app served by granian"
    )
    parser.add_argument(
        "--client-timeout", type=float, default=CLIENT_TIMEOUT, help="seconds wrk waits for an answer"
    )
    parser.add_argument(
        "--checkout", type=Path, default=REPO, help="run this checkout's collector code (a before figure)"
    )
    args = parser.parse_args()
    CLIENT_TIMEOUT = args.client_timeout
    CHECKOUT = args.checkout.resolve()
    parts = args.parts.split(",")
    wrk = ensure_wrk() if {"local", "s3"} & set(parts) else ""
    run = datetime.now(UTC).strftime("%H%M%S")
    RESULTS_DIR.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=RESULTS_DIR))
    print(
        f"Ingest benchmark: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; wrk 2 threads, "
        f"{args.seconds:g} s per row, answers awaited {CLIENT_TIMEOUT:g} s (t/o: timeouts, also counted "
        f"in errors); cpu us = server CPU per upload; wrk = load generator CPU (share of one core); "
        f"logs in {scratch.relative_to(REPO)}; collector code from {CHECKOUT}\n"
    )
    print(HEADER)
    rows: list[Row] = []
    per_upload: dict[str, float] | None = None
    started = time.monotonic()
    try:
        if "local" in parts:
            levels = [int(x) for x in args.levels.split(",")]
            rows += local_part(wrk, scratch, levels, args.seconds, run, args.granian)
        if "requests" in parts:
            per_upload = requests_part(scratch, run)
        if "s3" in parts:
            s3_levels = [int(x) for x in args.s3_levels.split(",")]
            s3_rows, per_upload = s3_part(wrk, scratch, s3_levels, args.seconds, run)
            rows += s3_rows
    finally:
        for data in ("collector-data", "granian-data", "naive-data", "one"):
            shutil.rmtree(scratch / data, ignore_errors=True)
    print(f"\nRatios (same run, {time.monotonic() - started:.0f} s, load average {os.getloadavg()[0]:.1f}):")
    results = targets(rows, per_upload)
    print("\nTargets (issue 18):")
    for text, met in results:
        print(f"  {'met' if met else 'MISSED':<6}  {text}")
    out = RESULTS_DIR / f"ingest-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(
        json.dumps(
            {"rows": [asdict(r) for r in rows], "targets": [{"t": t, "met": m} for t, m in results]}, indent=2
        )
    )
    print(f"\nJSON: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
