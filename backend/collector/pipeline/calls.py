"""How the pipeline calls the store: on the event loop, or all of one upload in one worker thread.

The pipeline is written once, as coroutines that call ``put_async`` and ``get_async``. A store
with native async methods (an event-loop write and a committer thread, say) is called as it is,
and the pipeline's few blocking calls (a listing, the study's admission, a withdrawal) go to a
worker thread each. A store with only the default methods (each call a worker thread of its own)
would cost a thread hop per request and lose what a local folder gains from one upload's writes
sharing their last sync (``ObjectStore.names_synced_at_end``). For such a store the whole upload
runs in *one* worker thread instead, with every call made right there (``Inline``), the coroutine
driven to its end without an event loop (``drive``): one hop per upload, and the upload's writes
share their last sync, all durable before the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from typing import Any, TypeVar

from ..storage import ObjectStore, StoredObject
from ..storage.base import ForwardingStore

T = TypeVar("T")

# Runs a blocking function for a coroutine of the pipeline: in a worker thread, or right here.
Blocking = Callable[..., Awaitable[Any]]


class Inline(ForwardingStore):
    """The store's blocking calls behind its async methods, made in the calling thread.

    Only for a coroutine driven in a worker thread (``drive``): on the event loop it would block it.
    """

    async def put_async(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

    async def get_async(self, key: str) -> StoredObject:
        return self.inner.get(key)


async def call_here(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``Blocking`` for a coroutine that already runs in its own worker thread."""
    return function(*args, **kwargs)


class StoreCalls:
    """The store as the pipeline calls it, and how one upload's coroutine is run."""

    def __init__(self, store: ObjectStore) -> None:
        # Every layer down to the real store must have its own async methods (ObjectStore.native_async).
        self.native = store.native_async
        self.store: ObjectStore = store if self.native else Inline(store)
        self.blocking: Blocking = asyncio.to_thread if self.native else call_here
        self._store = store

    def one_upload(self) -> AbstractAsyncContextManager[None]:
        """Around one upload's calls: a local folder's writes share their last sync."""
        if self.native:
            return self._store.names_synced_at_end_async()
        return _entered_here(self._store.names_synced_at_end())

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work`` on the event loop (native), or drive it in one worker thread."""
        if self.native:
            return await work
        return await asyncio.to_thread(drive, work)


@asynccontextmanager
async def _entered_here(block: AbstractContextManager[None]) -> AsyncIterator[None]:
    """A blocking block for a coroutine driven in its worker thread (it never suspends)."""
    with block:
        yield


def drive(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (every call it awaits is ``Inline`` or ``call_here``)."""
    try:
        work.send(None)
    except StopIteration as done:
        return done.value
    work.close()
    raise RuntimeError("a pipeline coroutine suspended outside the event loop")
