"""Retries a store's transient failures with exponential backoff and full jitter, within a deadline."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..metrics import Metrics
from .base import ObjectInfo, ObjectStore, StorageError, StoredObject, TransientStorageError

T = TypeVar("T")


class RetryingStore(ObjectStore):
    """Wraps a store: each call is retried on ``TransientStorageError`` until ``deadline_seconds``.

    Precondition failures, missing objects and permanent errors pass straight through; they are
    answers, not faults. Every request is timed into ``metrics``.
    """

    def __init__(
        self,
        inner: ObjectStore,
        metrics: Metrics,
        *,
        deadline_seconds: float,
        first_delay: float = 0.05,
        max_delay: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.metrics = metrics
        self.deadline_seconds = deadline_seconds
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._sleep = sleep

    def _call(self, operation: str, action: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.deadline_seconds
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                return action()
            except TransientStorageError:
                # Full jitter: a uniform wait up to the exponential cap spreads retrying writers.
                delay = random.uniform(0, min(self.max_delay, self.first_delay * 2**attempt))
                if time.monotonic() + delay >= deadline:
                    self.metrics.storage_failures.labels(operation).inc()
                    raise
                self.metrics.storage_retries.labels(operation).inc()
                self._sleep(delay)
                attempt += 1
            except StorageError as exc:
                if type(exc) is StorageError:
                    self.metrics.storage_failures.labels(operation).inc()
                raise
            finally:
                self.metrics.storage_seconds.labels(operation).observe(time.perf_counter() - started)

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        return self._call("put", lambda: self.inner.put(key, body, if_absent=if_absent, if_match=if_match))

    def get(self, key: str) -> StoredObject:
        return self._call("get", lambda: self.inner.get(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Listing is for the research tools; a failure mid-way surfaces to them as is.
        return self.inner.list(prefix)

    def check(self) -> None:
        self._call("check", self.inner.check)

    def close(self) -> None:
        self.inner.close()
