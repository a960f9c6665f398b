"""A limit on uploads in progress in one process, so a burst cannot exhaust memory or threads.

Each upload in progress may hold a body of up to ``MAX_UPLOAD_BYTES`` and a storage thread; the
limit bounds both. An upload over the limit waits for a slot (its body still unread) for up to
``queue_seconds``, then is refused with ``Overloaded`` (503 + ``Retry-After``): the browser
module retries it later, so nothing is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..errors import Overloaded
from ..settings import Settings


class ConcurrencyLimit:
    """A FastAPI dependency with ``yield``: holds one slot for the whole request."""

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

    async def __call__(self) -> AsyncIterator[None]:
        try:
            if self._slots.locked():
                # Only a waiting upload pays for a timer; asyncio.timeout, unlike wait_for, makes no task.
                async with asyncio.timeout(self.queue_seconds):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()  # free: taken at once, without yielding
        except TimeoutError:
            raise Overloaded(
                "the collector is busy; the upload was not stored, please retry",
                retry_after=self.retry_after,
            ) from None
        try:
            yield
        finally:
            self._slots.release()
