"""Reliability run (issue 5): every fault scenario, large, then a loopback load; prints, per
scenario, acknowledged / stored / duplicated / lost, and for the load throughput, latency
percentiles, errors and the collector's memory. Exit status 1 if anything was lost or doubled.

The scenarios and the load are the ones the test suite runs small (``tests/faults/``): real
collector processes (``python -m collector serve``), moto's standalone S3 server in its own
process, a fault-injecting proxy between them, browser-like retrying clients.

Usage::

    .venv/bin/python bench/reliability.py                  # the default run (about 10 minutes)
    .venv/bin/python bench/reliability.py --scenario-uploads 500 --load-local 5000 --load-s3 500
    .venv/bin/python bench/reliability.py --only load

Results are also written as JSON to ``bench/results/`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the harness lives with the tests

import httpx  # noqa: E402

from tests.faults.clients import RetryPolicy  # noqa: E402
from tests.faults.load import LoadResult, run_load  # noqa: E402
from tests.faults.scenarios import ScenarioResult, Size, run_scenario, scenario_ids  # noqa: E402
from tests.support.collector_process import free_port  # noqa: E402


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto's standalone server in its own process, so it does not share our GIL."""
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto_server did not start")


def scenario_row(result: ScenarioResult) -> dict[str, Any]:
    v, s = result.verdict, result.stats
    return {
        "scenario": result.name,
        "backend": result.backend,
        "acknowledged": v.acknowledged,
        "stored": v.stored,
        "duplicated": v.duplicated,
        "lost": v.lost,
        "partial": v.partial,
        "stale_status": v.stale_status,
        "retries": s.retries,
        "answers_503": s.answers[503],
        "no_answer": s.answers[0],
        "answers_500": s.answers[500],
        "abandoned": s.abandoned,
        "faults": {k: n for k, n in result.faults.items() if k != "requests"},
        "kills": result.kills,
        "temporaries_left": v.temporaries,
        "log_leaks": len(result.log_leaks),
        "seconds": round(result.seconds, 1),
        "ok": result.ok,
        "problems": v.problems[:5],
    }


def load_row(result: LoadResult) -> dict[str, Any]:
    v = result.verdict
    return {
        "backend": result.backend,
        "uploads": result.uploads,
        "concurrency": result.concurrency,
        "seconds": round(result.seconds, 1),
        "uploads_per_second": round(result.throughput, 1),
        "p50_ms": round(result.stats.percentile(50) * 1000, 1),
        "p99_ms": round(result.stats.percentile(99) * 1000, 1),
        "errors": result.errors,
        "rss_mib_at_10pct": round(result.rss_at(0.1) / 1024, 1),
        "rss_mib_at_end": round(result.rss_at(1.0) / 1024, 1),
        "peak_rss_mib": round(result.peak_rss_kib / 1024, 1),
        "acknowledged": v.acknowledged,
        "stored": v.stored,
        "duplicated": v.duplicated,
        "lost": v.lost,
        "ok": v.ok and not result.errors,
    }


def print_scenarios(rows: list[dict[str, Any]]) -> None:
    print("\nFault scenarios")
    header = (
        f"{'scenario':24} {'backend':7} {'acknowledged':>12} {'stored':>7} {'duplicated':>10} {'lost':>5} "
        f"{'partial':>7} {'stale':>5} {'retries':>7} {'503s':>5} {'faults/kills':>12} {'s':>6}  verdict"
    )
    print(header)
    for r in rows:
        injected = r["kills"] or sum(r["faults"].values())
        print(
            f"{r['scenario']:24} {r['backend']:7} {r['acknowledged']:>12} {r['stored']:>7} "
            f"{r['duplicated']:>10} {r['lost']:>5} {r['partial']:>7} {r['stale_status']:>5} "
            f"{r['retries']:>7} {r['answers_503']:>5} {injected:>12} {r['seconds']:>6}  "
            + ("OK" if r["ok"] else "FAILED " + "; ".join(r["problems"]))
        )


def print_loads(rows: list[dict[str, Any]]) -> None:
    print("\nLoad")
    print(
        f"{'backend':7} {'uploads':>8} {'conns':>5} {'s':>6} {'uploads/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'RSS MiB @10%':>12} {'@end':>6} {'peak':>6} {'dup':>4} {'lost':>4}  verdict"
    )
    for r in rows:
        print(
            f"{r['backend']:7} {r['uploads']:>8} {r['concurrency']:>5} {r['seconds']:>6} "
            f"{r['uploads_per_second']:>9} {r['p50_ms']:>7} {r['p99_ms']:>7} {r['errors']:>6} "
            f"{r['rss_mib_at_10pct']:>12} {r['rss_mib_at_end']:>6} {r['peak_rss_mib']:>6} "
            f"{r['duplicated']:>4} {r['lost']:>4}  " + ("OK" if r["ok"] else "FAILED")
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario-uploads", type=int, default=1500, help="uploads per fault scenario")
    parser.add_argument("--scenario-concurrency", type=int, default=32)
    parser.add_argument("--load-local", type=int, default=100_000, help="uploads in the local load (0: skip)")
    parser.add_argument("--load-s3", type=int, default=3000, help="uploads in the S3 load (0: skip)")
    parser.add_argument("--concurrency", type=int, default=64, help="connections in the load")
    parser.add_argument("--only", choices=["faults", "load"], help="run only one half")
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    args = parser.parse_args()

    moto, moto_url = start_moto()
    scenario_rows: list[dict[str, Any]] = []
    load_rows: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
            if args.only != "load":
                size = Size(
                    uploads=args.scenario_uploads,
                    participants=max(1, args.scenario_uploads // 10),
                    concurrency=args.scenario_concurrency,
                    policy=RetryPolicy(give_up_seconds=300),
                )
                for name, backend in scenario_ids():
                    if args.scenario and name not in args.scenario:
                        continue
                    result = run_scenario(
                        name,
                        backend,
                        workdir=Path(tmp) / f"{name}-{backend}",
                        moto_endpoint=moto_url,
                        size=size,
                    )
                    scenario_rows.append(scenario_row(result))
                    print_scenarios_line(scenario_rows[-1])
            if args.only != "faults":
                for backend, uploads in (("local", args.load_local), ("s3", args.load_s3)):
                    if uploads:
                        result = run_load(
                            backend,
                            uploads=uploads,
                            concurrency=args.concurrency,
                            workdir=Path(tmp) / f"load-{backend}",
                            moto_endpoint=moto_url,
                        )
                        load_rows.append(load_row(result))
                        print(
                            f"  load ({backend}): {load_rows[-1]['uploads_per_second']} uploads/s", flush=True
                        )
    finally:
        moto.terminate()
        moto.wait(10)
    if scenario_rows:
        print_scenarios(scenario_rows)
    if load_rows:
        print_loads(load_rows)
    total = time.monotonic() - started
    print(f"\n{total:.0f} s in all; command: {' '.join(sys.argv)}")
    out = REPO / "bench" / "results" / f"reliability-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"argv": sys.argv, "seconds": total, "scenarios": scenario_rows, "load": load_rows}, indent=2
        )
    )
    print(f"written to {out.relative_to(REPO)}")
    return 0 if all(r["ok"] for r in scenario_rows + load_rows) else 1


def print_scenarios_line(row: dict[str, Any]) -> None:
    """Progress: one line per finished scenario (the full table comes at the end)."""
    print(
        f"  {row['scenario']} ({row['backend']}): acknowledged {row['acknowledged']}, "
        f"stored {row['stored']}, duplicated {row['duplicated']}, lost {row['lost']} in {row['seconds']} s",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
