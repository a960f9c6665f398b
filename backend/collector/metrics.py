"""Prometheus metrics, one registry per app so tests can build several apps side by side.

With ``WORKERS`` > 1 each process keeps its own counters; scrape each worker or read them as
per-process samples.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.uploads = Counter(
            "collector_uploads",
            "Uploads handled, by upload type and outcome.",
            ["upload_type", "outcome"],
            registry=self.registry,
        )
        self._upload_counters: dict[tuple[str, str], Counter] = {}
        self.storage_seconds = Histogram(
            "collector_storage_request_seconds",
            "Latency of one storage request.",
            ["operation"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.storage_retries = Counter(
            "collector_storage_retries",
            "Storage requests retried after a transient failure.",
            ["operation"],
            registry=self.registry,
        )
        self.storage_failures = Counter(
            "collector_storage_failures",
            "Storage requests that failed for good.",
            ["operation"],
            registry=self.registry,
        )

    def count_upload(self, upload_type: str, outcome: str) -> None:
        """Count one upload in ``collector_uploads_total`` (its outcomes: ``pipeline.answer.outcome``)."""
        # Each labelled counter is kept: ``labels()`` checks its arguments and takes a lock on
        # every call, and uploads are the hot path. A few at most (upload types x outcomes).
        counter = self._upload_counters.get((upload_type, outcome))
        if counter is None:
            counter = self._upload_counters[upload_type, outcome] = self.uploads.labels(upload_type, outcome)
        counter.inc()

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
