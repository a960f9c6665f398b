"""A bounded loopback load against one real collector process: throughput, latency percentiles,
errors and the server's memory over the run, then the same verdict as the fault scenarios."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from collector.keys import KeyLayout
from tests.faults.clients import ClientStats, RetryPolicy, Upload, make_uploads, run_clients
from tests.faults.collector import KillableCollector
from tests.faults.scenarios import collector_settings, direct_store, make_bucket
from tests.faults.verdict import Verdict, judge


@dataclass
class LoadResult:
    backend: str
    uploads: int
    concurrency: int
    seconds: float
    stats: ClientStats
    verdict: Verdict
    rss_samples: list[tuple[int, int]] = field(default_factory=list)  # (uploads answered, RSS KiB)
    peak_rss_kib: int = 0

    @property
    def throughput(self) -> float:
        return self.uploads / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        """Answers other than 200 (and no-answers), plus uploads never stored."""
        return sum(n for status, n in self.stats.answers.items() if status != 200) + self.stats.abandoned

    def rss_at(self, fraction: float) -> int:
        """RSS (KiB) at the first sample once this share of the uploads was answered."""
        goal = self.uploads * fraction
        return next((rss for answered, rss in self.rss_samples if answered >= goal), self.rss_samples[-1][1])


def run_load(
    backend: str,
    *,
    uploads: int,
    concurrency: int,
    workdir: Path,
    moto_endpoint: str | None,
    participants: int | None = None,
    policy: RetryPolicy | None = None,
) -> LoadResult:
    """Send ``uploads`` uploads over ``concurrency`` keep-alive connections and judge the store.

    Rate limiting is off: every upload comes from one address here, unlike a real study.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    endpoint = bucket = None
    if backend == "s3":
        assert moto_endpoint is not None
        endpoint, bucket = moto_endpoint, make_bucket(moto_endpoint)
    settings = collector_settings(backend, workdir, endpoint=endpoint, bucket=bucket).model_copy(
        # The production deadlines, not the fault scenarios' short ones.
        update={"storage_deadline_seconds": 5.0, "storage_timeout_seconds": 3.0, "retry_after_seconds": 1}
    )
    batch = make_uploads(uploads, participants=participants or max(1, uploads // 5), prefix=f"L{backend[0]}")
    collector = KillableCollector(settings, log_path=workdir / f"collector-load-{backend}.log").start()
    stats = ClientStats()
    answered = [0]
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((answered[0], collector.rss_kib()[0]))
            stop.wait(0.5)

    def count(_: Upload) -> None:
        answered[0] += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        asyncio.run(
            run_clients(
                batch,
                host="127.0.0.1",
                port=collector.port,
                concurrency=concurrency,
                policy=policy or RetryPolicy(),
                stats=stats,
                on_answered=count,
            )
        )
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        samples.append((answered[0], collector.rss_kib()[0]))
        peak = collector.rss_kib()[1]
    finally:
        stop.set()
        collector.stop()
    store = direct_store(backend, settings, moto_endpoint)
    try:
        verdict = judge(store, KeyLayout(settings.data_prefix), batch)
    finally:
        store.close()
    return LoadResult(backend, uploads, concurrency, seconds, stats, verdict, samples, peak)
