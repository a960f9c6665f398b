"""The object-store interface every backend implements, and the errors it raises.

Usage::

    store = LocalStore(Path("./data"))          # or S3Store(...), MemoryStore()
    etag = store.put(key, body, if_absent=True)  # raises AlreadyExists if the key exists
    current = store.get(key)                     # StoredObject(body, etag) or raises ObjectNotFound
    store.put(key, new_body, if_match=current.etag)  # raises PreconditionFailed if it changed
    store.delete(key)                            # idempotent: a missing key is fine

    # The same on the event loop (the upload path):
    async with store.names_synced_at_end_async():
        etag = await store.put_async(key, body, if_absent=True)
        current = await store.get_async(key)

Two conditional writes are all the collector needs for exactly-once semantics across processes:
*create if absent* for append-only submissions and *compare-and-swap on the ETag* for
``status.json``. A backend raises ``StorageError`` (or ``TransientStorageError`` when a retry
might succeed) for anything else that goes wrong.

The ``*_async`` forms are what the upload path awaits. By default they run the sync method in a
worker thread (``asyncio.to_thread`` copies the caller's context variables, so a shared retry
deadline still applies there); a backend that can do better overrides them: the local folder
writes on the event loop and waits for one committer thread's sync, the memory store answers at
once.
"""

from __future__ import annotations

import asyncio
import hashlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime


class StorageError(Exception):
    """The store failed in a way the caller cannot fix by changing the request."""


class TransientStorageError(StorageError):
    """The store failed in a way that a retry may fix (timeouts, 5xx, throttling, resets)."""


class LowOnSpace(StorageError):
    """The store refuses writes: free space or inodes are under the configured minimum.

    Not transient in the retry sense (retrying within one upload will not free space), but the
    upload is answered 503 + Retry-After like any storage failure, and nothing is stored.
    """


class ObjectNotFound(StorageError):
    """The key does not exist."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object changed, or appeared, since the caller looked."""


class AlreadyExists(PreconditionFailed):
    """``if_absent=True`` and the key already exists."""


@dataclass(frozen=True)
class StoredObject:
    body: bytes
    etag: str


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime


def content_etag(body: bytes) -> str:
    """The ETag S3 gives a single-part upload: the hex MD5 of the body (not for security)."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


class ObjectStore(ABC):
    """A flat key → bytes store with conditional writes. Implementations must be thread-safe."""

    @abstractmethod
    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        """Store ``body`` durably under ``key`` and return its ETag.

        ``if_absent``: fail with ``AlreadyExists`` if the key exists.
        ``if_match``: fail with ``PreconditionFailed`` unless the stored ETag equals it
        (a missing key also fails). With neither, overwrite unconditionally.
        """

    @abstractmethod
    def get(self, key: str) -> StoredObject:
        """The object's body and ETag; ``ObjectNotFound`` if absent."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` durably. Idempotent: deleting a missing key is not an error.

        Only an erasure the research team asked for deletes anything (docs/bucket-layout.md).
        """

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""

    @abstractmethod
    def check(self) -> None:
        """Raise ``StorageError`` unless the store is reachable and usable."""

    def get_or_none(self, key: str) -> StoredObject | None:
        """Like ``get``, but None for a missing key."""
        try:
            return self.get(key)
        except ObjectNotFound:
            return None

    def names_synced_at_end(self) -> AbstractContextManager[None]:
        """A block whose writes may share their last sync: each is durable once the block exits.

        Inside it, a ``put`` may return before its name is on disk (a local folder defers that
        sync to the next write's or to the block's end, so one upload's writes share a barrier);
        other stores write durably at once and need nothing here.
        """
        return nullcontext()

    # --- the same on the event loop --------------------------------------------------------------

    @property
    def native_async(self) -> bool:
        """Whether ``put_async`` and ``get_async`` are the store's own, not a worker thread per call.

        A caller may run a whole upload in one thread for a store without them, and use
        ``names_synced_at_end`` there, rather than pay a thread hop per request.
        A subclass that changes ``put`` or ``get`` below the class giving their async forms (a
        test's blocking store) is not native: those async forms would skip its change.
        """
        return all(_async_form_is_own(type(self), name) for name in ("put", "get"))

    async def put_async(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        """``put`` for a coroutine: the same contract, without blocking the event loop."""
        return await asyncio.to_thread(self.put, key, body, if_absent=if_absent, if_match=if_match)

    async def get_async(self, key: str) -> StoredObject:
        """``get`` for a coroutine."""
        return await asyncio.to_thread(self.get, key)

    async def get_or_none_async(self, key: str) -> StoredObject | None:
        """``get_or_none`` for a coroutine."""
        try:
            return await self.get_async(key)
        except ObjectNotFound:
            return None

    async def delete_async(self, key: str) -> None:
        """``delete`` for a coroutine."""
        await asyncio.to_thread(self.delete, key)

    def names_synced_at_end_async(self) -> AbstractAsyncContextManager[None]:
        """``names_synced_at_end`` for a coroutine: ``async with store.names_synced_at_end_async():``.

        The block belongs to the task that opened it (a context variable, not a thread): every
        ``put_async`` of that task inside it, and every ``put`` a worker thread makes for it,
        is durable once the block exits.
        """
        return _nothing_to_sync()

    def prune_empty_folders(self, prefix: str) -> None:  # noqa: B027 - only a local folder has any
        """Remove folders left empty under ``prefix`` (after an erasure); a bucket has none."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections or handles."""

    def temporaries(self) -> Iterator[ObjectInfo]:
        """Leftover temporary files of interrupted writes (only a local folder has any)."""
        return iter(())


def _async_form_is_own(kind: type[ObjectStore], name: str) -> bool:
    def owner(attribute: str) -> type:
        return next(c for c in kind.__mro__ if attribute in c.__dict__)

    async_form = f"{name}_async"
    if getattr(kind, async_form) is getattr(ObjectStore, async_form):
        return False  # the default: the blocking call in a worker thread
    return issubclass(owner(async_form), owner(name))


@asynccontextmanager
async def _nothing_to_sync() -> AsyncIterator[None]:
    yield


class ForwardingStore(ObjectStore):
    """A store that passes every call to ``inner``: the base of wrappers that change only a few.

    An async call goes to ``inner``'s async form, except where a subclass changes the sync method
    and not its async form (a test's faulty bucket overriding only ``put``): there the async call
    runs that sync method in a thread, so the wrapper's change is never skipped.
    """

    _sync_only: frozenset[str] = frozenset()  # sync methods overridden without their async form

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._sync_only = frozenset(
            name
            for name in ("put", "get", "delete")
            if getattr(cls, name) is not getattr(ForwardingStore, name)
            and getattr(cls, f"{name}_async") is getattr(ForwardingStore, f"{name}_async")
        )

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    @property
    def native_async(self) -> bool:
        return super().native_async and self.inner.native_async

    async def put_async(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        if "put" in self._sync_only:
            return await super().put_async(key, body, if_absent=if_absent, if_match=if_match)
        return await self.inner.put_async(key, body, if_absent=if_absent, if_match=if_match)

    async def get_async(self, key: str) -> StoredObject:
        if "get" in self._sync_only:
            return await super().get_async(key)
        return await self.inner.get_async(key)

    async def delete_async(self, key: str) -> None:
        if "delete" in self._sync_only:
            await super().delete_async(key)
            return
        await self.inner.delete_async(key)

    def names_synced_at_end_async(self) -> AbstractAsyncContextManager[None]:
        return self.inner.names_synced_at_end_async()

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

    def get(self, key: str) -> StoredObject:
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def check(self) -> None:
        self.inner.check()

    def names_synced_at_end(self) -> AbstractContextManager[None]:
        return self.inner.names_synced_at_end()

    def close(self) -> None:
        self.inner.close()

    def temporaries(self) -> Iterator[ObjectInfo]:
        return self.inner.temporaries()

    def prune_empty_folders(self, prefix: str) -> None:
        self.inner.prune_empty_folders(prefix)
