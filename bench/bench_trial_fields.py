"""Do many distinct trialData field names blow up the export? (a script that prints figures, not a test)

Seeds a temporary local folder with ``--trials`` trials of one participant whose trialData
fields all have distinct names (``--fields`` names in all, spread evenly over the trials: the
red team's 40 trials x 150,000 names), as a hostile or generated experiment could upload them.
Then, in the same run:

* ``export``: ``collector export`` (CSV) in a child process, its wall time and peak RSS
  (``ru_maxrss`` of the child);
* ``zip``: the same bucket served by a real ``collector serve`` process: ``/healthz`` latency
  probed one request at a time while ``/admin/export.zip`` is downloaded, next to a no-load
  baseline, and the collector's peak RSS.

    .venv/bin/python bench/bench_trial_fields.py [--trials 40] [--fields 150000] [--only export|zip]

Timings on a shared 2-core machine are inflated by whatever else runs: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers live in tests/support
from collector.keys import KeyLayout
from collector.storage import open_store
from tests.support.collector_process import REPO, CollectorProcess, collector_environment, free_port
from tests.support.settings import TEST_ADMIN_PASSWORD, local_settings

PID = "BENCHFIELDS"


def seed(folder: Path, trials: int, fields: int, *, shared: bool) -> None:
    """``shared``: every trial holds all ``fields`` names; else each holds its own share of them."""
    settings = local_settings(folder)
    layout = KeyLayout(settings.data_prefix)
    store = open_store(settings)
    per_trial = fields if shared else fields // trials
    for index in range(trials):
        first = 0 if shared else index * per_trial
        data = {f"f{n}": n for n in range(first, first + per_trial)}
        document = {
            "participantId": PID,
            "uploadType": "trial",
            "sessionId": "run-fields",
            "trialIndex": index,
            "trialData": data,
            "serverReceivedAt": "2026-12-01T10:00:00.000Z",
        }
        body = json.dumps(document, separators=(",", ":")).encode()
        store.put(layout.trial_key(PID, "run-fields", index), body)
    store.close()


def export_in_child(folder: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and the child's peak RSS (MB) of ``collector export`` over the folder."""
    env = {**collector_environment(local_settings(folder), free_port())}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "collector", "export", "--out", str(out), "--format", "csv"],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        print("  (peak RSS not above an earlier child's: figure is a lower bound)")
    return elapsed, peak / 1024


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms   "
        f"max {ordered[-1] * 1000:7.1f} ms   (n={len(ordered)})"
    )


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def zip_under_probe(folder: Path, interval: float) -> None:
    settings = local_settings(folder)
    with CollectorProcess(settings) as collector:
        http = httpx.Client(base_url=collector.url, timeout=600, follow_redirects=False)
        assert http.post("/admin/login", data={"password": TEST_ADMIN_PASSWORD}).status_code == 303
        baseline = [_timed(http, "/healthz") for _ in range(100)]
        done = threading.Event()
        result: dict[str, float] = {}

        def download() -> None:
            started = time.perf_counter()
            with http.stream("GET", "/admin/export.zip?format=csv") as answer:
                assert answer.status_code == 200
                size = sum(len(chunk) for chunk in answer.iter_bytes())
            result["seconds"] = time.perf_counter() - started
            result["bytes"] = size
            done.set()

        thread = threading.Thread(target=download, daemon=True)
        thread.start()
        loaded = []
        with httpx.Client(base_url=collector.url, timeout=600) as probe:
            while not done.is_set():
                loaded.append(_timed(probe, "/healthz"))
                time.sleep(interval)
        thread.join()
        rss = peak_rss_mb(collector.process.pid)
        http.close()
    print(f"/healthz, no load:            {percentiles(baseline)}")
    print(f"/healthz, during export.zip:  {percentiles(loaded)}")
    print(
        f"/admin/export.zip: {result['seconds']:.1f} s, {result['bytes'] / 1e6:.1f} MB; "
        f"collector peak RSS {rss:.0f} MB"
    )


def _timed(http: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    assert http.get(path).status_code == 200
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--fields", type=int, default=150_000, help="distinct trialData names in all")
    parser.add_argument(
        "--shared", action="store_true", help="every trial holds all the names (else each its own share)"
    )
    parser.add_argument("--only", choices=("export", "zip"))
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between /healthz probes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        started = time.perf_counter()
        seed(folder, args.trials, args.fields, shared=args.shared)
        size = sum(f.stat().st_size for f in folder.rglob("*.json"))
        shape = "in every trial" if args.shared else "spread over the trials"
        print(
            f"seeded {args.trials} trials, {args.fields} distinct field names {shape}, {size / 1e6:.1f} MB "
            f"in {time.perf_counter() - started:.1f} s (pid {os.getpid()})"
        )
        if args.only in (None, "export"):
            seconds, rss = export_in_child(folder, Path(tmp) / "out")
            print(f"collector export (CSV): {seconds:.1f} s, peak RSS {rss:.0f} MB")
        if args.only in (None, "zip"):
            zip_under_probe(folder, args.interval)


if __name__ == "__main__":
    main()
