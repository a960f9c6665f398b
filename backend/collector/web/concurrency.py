"""Limits on uploads in progress in one process, so a burst cannot exhaust memory or threads.

Two limits, taken in this order by the participant routes:

1. ``BodiesInFlight``: bodies still arriving, per client address. A body on its way costs a
   connection and a buffer but no slot; an address with ``MAX_BODIES_IN_FLIGHT_PER_ADDRESS``
   bodies arriving at once has its next request refused (429 + ``Retry-After``, connection
   closed, body unread), so one address trickling bodies cannot hold the others' capacity.
2. ``ConcurrencyLimit``: uploads being parsed and stored, taken only once the body has arrived.
   Each holds a whole body of up to ``MAX_UPLOAD_BYTES`` and a storage thread; the limit bounds
   both. An upload over it waits for a slot for up to ``queue_seconds``, then is refused with
   ``Overloaded`` (503 + ``Retry-After``): the browser module retries it later, so nothing is lost.

``queue_seconds`` bounds all of an upload's waiting before it is stored, counted from when it
asked for a slot: what is left of it after the slot bounds the wait for the large-body parse
(``within_wait_budget``), and the storage thread never waits (``STORAGE_THREADS`` must exceed
``MAX_CONCURRENT_UPLOADS``, settings.py). Under overload an upload is therefore answered, 200 or
503 + ``Retry-After``, rather than left waiting until the client gives up; once its first
write has begun it is finished, never abandoned halfway.

Before the body had to arrive first, 64 connections that sent headers and no body held every
slot for the body timeout, and real uploads waited 10 s for a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from ..errors import Overloaded, TooManyBodies
from ..settings import Settings


@dataclass(frozen=True)
class _WaitBudget:
    deadline: float  # event loop time past which the upload stops waiting
    retry_after: int


# Set while a task holds an upload slot: its remaining budget for waiting.
_WAIT_BUDGET: ContextVar[_WaitBudget | None] = ContextVar("upload_wait_budget", default=None)


def _overloaded(retry_after: int) -> Overloaded:
    return Overloaded(
        "the collector is busy; the upload was not stored, please retry", retry_after=retry_after
    )


@asynccontextmanager
async def within_wait_budget(lock: asyncio.Semaphore) -> AsyncIterator[None]:
    """Hold ``lock``, waiting for it no longer than the upload slot's budget has left
    (``Overloaded`` past it). Outside an upload slot the wait is not bounded."""
    budget = _WAIT_BUDGET.get()
    if budget is None or not lock.locked():
        await lock.acquire()
    else:
        try:
            async with asyncio.timeout_at(budget.deadline):
                await lock.acquire()
        except TimeoutError:
            raise _overloaded(budget.retry_after) from None
    try:
        yield
    finally:
        lock.release()


class ConcurrencyLimit:
    """Uploads handled at once (``async with limit.slot():``), on one event loop."""

    def __init__(self, limit: int, *, queue_seconds: float, retry_after: int) -> None:
        self.limit = limit
        self.queue_seconds = queue_seconds
        self.retry_after = retry_after
        self._slots = asyncio.Semaphore(limit)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConcurrencyLimit:
        return cls(
            settings.max_concurrent_uploads,
            queue_seconds=settings.upload_queue_seconds,
            retry_after=settings.retry_after_seconds,
        )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        deadline = asyncio.get_running_loop().time() + self.queue_seconds
        try:
            if self._slots.locked():
                # Only a waiting upload pays for a timer; asyncio.timeout, unlike wait_for, makes no task.
                async with asyncio.timeout_at(deadline):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()  # free: taken at once, without yielding
        except TimeoutError:
            raise _overloaded(self.retry_after) from None
        budget = _WAIT_BUDGET.set(_WaitBudget(deadline, self.retry_after))
        try:
            yield
        finally:
            _WAIT_BUDGET.reset(budget)
            self._slots.release()


class BodiesInFlight:
    """Bodies being received, counted per client address (``with bodies.receiving(address):``)."""

    def __init__(self, per_address: int, *, retry_after: int) -> None:
        self.per_address = per_address
        self.retry_after = retry_after
        self._counts: dict[str, int] = {}  # only addresses with a body arriving: bounded by them

    @classmethod
    def from_settings(cls, settings: Settings) -> BodiesInFlight:
        return cls(settings.max_bodies_in_flight_per_address, retry_after=settings.retry_after_seconds)

    @contextmanager
    def receiving(self, client: str) -> Iterator[None]:
        # On the event loop only: no lock needed between the check and the count.
        count = self._counts.get(client, 0)
        if count >= self.per_address:
            raise TooManyBodies(
                "too many uploads from this address are still arriving; please retry later",
                retry_after=self.retry_after,
            )
        self._counts[client] = count + 1
        try:
            yield
        finally:
            left = self._counts[client] - 1
            if left:
                self._counts[client] = left
            else:
                del self._counts[client]
