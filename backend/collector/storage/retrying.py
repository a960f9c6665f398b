"""Retries a store's transient failures with exponential backoff and full jitter, within a deadline.

Each call has its own deadline; ``shared_deadline`` makes several calls (all the requests of
one upload) share one, so an upload answers 503 after about ``deadline_seconds`` of a failing
store, not after that much per request it makes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from ..metrics import Metrics
from .base import ForwardingStore, ObjectStore, StorageError, StoredObject, TransientStorageError

T = TypeVar("T")


@dataclass
class _Budget:
    deadline: float
    failed: bool = False  # a call inside has met a transient failure


_budget: ContextVar[_Budget | None] = ContextVar("storage_budget", default=None)


@contextmanager
def shared_deadline(seconds: float | None, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Calls inside share one retry deadline; once it has passed after a failure, none is tried again.

    ``None`` (or 0): no shared deadline, each call keeps its own.
    """
    if not seconds:
        yield
        return
    token = _budget.set(_Budget(clock() + seconds))
    try:
        yield
    finally:
        _budget.reset(token)


class RetryingStore(ForwardingStore):
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
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self.metrics = metrics
        self.deadline_seconds = deadline_seconds
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._clock = clock

    def _call(self, operation: str, action: Callable[[], T]) -> T:
        deadline, budget = self._deadline(operation)
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                return action()
            except TransientStorageError:
                delay = self._backoff(operation, attempt, deadline, budget)
                if delay is None:
                    raise
                self._sleep(delay)
                attempt += 1
            except StorageError as exc:
                self._count_permanent(operation, exc)
                raise
            finally:
                self.metrics.storage_seconds.labels(operation).observe(time.perf_counter() - started)

    async def _call_async(self, operation: str, action: Callable[[], Awaitable[T]]) -> T:
        """``_call`` for a coroutine: the same deadline, backoff and metrics; it sleeps on the loop.

        The shared deadline is the task's context variable, so an upload's async calls and any
        sync call it hands to a thread (which copies the context) draw on one budget.
        """
        deadline, budget = self._deadline(operation)
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                return await action()
            except TransientStorageError:
                delay = self._backoff(operation, attempt, deadline, budget)
                if delay is None:
                    raise
                await self._async_sleep(delay)
                attempt += 1
            except StorageError as exc:
                self._count_permanent(operation, exc)
                raise
            finally:
                self.metrics.storage_seconds.labels(operation).observe(time.perf_counter() - started)

    def _deadline(self, operation: str) -> tuple[float, _Budget | None]:
        """When this call must stop retrying, and the shared budget it draws on (if any)."""
        deadline = self._clock() + self.deadline_seconds
        budget = _budget.get()
        if budget is not None:
            deadline = min(deadline, budget.deadline)
            if budget.failed and self._clock() >= deadline:
                # The upload already spent its time on a failing store: answer now, not later.
                self.metrics.storage_failures.labels(operation).inc()
                raise TransientStorageError(f"storage deadline passed before {operation}")
        return deadline, budget

    def _backoff(self, operation: str, attempt: int, deadline: float, budget: _Budget | None) -> float | None:
        """After a transient failure: how long to wait before the next try; None past the deadline."""
        if budget is not None:
            budget.failed = True
        # Full jitter: a uniform wait up to the exponential cap spreads retrying writers.
        delay = random.uniform(0, min(self.max_delay, self.first_delay * 2**attempt))
        if self._clock() + delay >= deadline:
            self.metrics.storage_failures.labels(operation).inc()
            return None
        self.metrics.storage_retries.labels(operation).inc()
        return delay

    def _count_permanent(self, operation: str, exc: StorageError) -> None:
        if type(exc) is StorageError:
            self.metrics.storage_failures.labels(operation).inc()

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        return self._call("put", lambda: self.inner.put(key, body, if_absent=if_absent, if_match=if_match))

    def get(self, key: str) -> StoredObject:
        return self._call("get", lambda: self.inner.get(key))

    def delete(self, key: str) -> None:
        # Safe to retry: deleting is idempotent.
        self._call("delete", lambda: self.inner.delete(key))

    async def put_async(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        return await self._call_async(
            "put", lambda: self.inner.put_async(key, body, if_absent=if_absent, if_match=if_match)
        )

    async def get_async(self, key: str) -> StoredObject:
        return await self._call_async("get", lambda: self.inner.get_async(key))

    async def delete_async(self, key: str) -> None:
        await self._call_async("delete", lambda: self.inner.delete_async(key))

    # list() is passed through as is: listing is for the research tools, and a failure mid-way
    # surfaces to them unretried.

    def check(self) -> None:
        self._call("check", self.inner.check)
