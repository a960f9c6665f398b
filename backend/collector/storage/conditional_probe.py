"""Proof that the bucket honours the two conditional writes exactly-once storage rests on.

A bucket that ignores ``If-None-Match: *`` lets a second submission overwrite the first; one
that ignores ``If-Match`` lets two status writers overwrite each other. Both would still answer
200, so the collector would never notice: it proves both on one probe object instead
(``KeyLayout.conditional_probe_key``, docs/bucket-layout.md §9) before any upload is acknowledged,
and again the first time it reaches the bucket after an outage.

``ConditionalWriteGate`` wraps the store the app uses: until the proof has succeeded every call
fails as storage trouble (503 + Retry-After), and a bucket that ignores a condition is refused
for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from .base import (
    AlreadyExists,
    ForwardingStore,
    ObjectInfo,
    ObjectStore,
    PreconditionFailed,
    StorageError,
    StoredObject,
    TransientStorageError,
    content_etag,
)

logger = logging.getLogger("collector.storage")

T = TypeVar("T")

PROBE_BODY = json.dumps(
    {"purpose": "proves the bucket refuses conditional writes that must fail; holds no data"},
    sort_keys=True,
).encode("utf-8")
# An ETag the probe object never has: S3 and R2 give a single-part object the MD5 of its body.
_WRONG_ETAG = "0" * 32 if content_etag(PROBE_BODY) != "0" * 32 else "1" * 32

IF_NONE_MATCH = "If-None-Match: * (create only if absent)"
IF_MATCH = "If-Match (replace only an unchanged object)"


class ConditionalWritesIgnored(StorageError):
    """The bucket accepted a write its condition should have refused: exactly-once is impossible."""

    def __init__(self, condition: str) -> None:
        super().__init__(
            f"the bucket ignores {condition}: a write that had to be refused was stored. "
            "Without it, two uploads can overwrite each other. Use a store that honours conditional "
            "writes (Cloudflare R2, AWS S3, a recent MinIO) or STORAGE=local with a persistent folder"
        )
        self.condition = condition


def prove_conditional_writes(store: ObjectStore, key: str) -> None:
    """Raise ``ConditionalWritesIgnored`` unless ``store`` refuses both writes that must fail.

    A ``StorageError`` otherwise means the bucket could not be asked (unreachable, refused the
    credentials): nothing is proven either way. Costs 3 writes, all to ``key``.
    """
    with contextlib.suppress(AlreadyExists):
        store.put(key, PROBE_BODY, if_absent=True)  # make sure the probe object exists
    try:
        store.put(key, PROBE_BODY, if_absent=True)
    except AlreadyExists:
        pass
    else:
        raise ConditionalWritesIgnored(IF_NONE_MATCH)
    try:
        store.put(key, PROBE_BODY, if_match=_WRONG_ETAG)
    except PreconditionFailed:
        pass
    else:
        raise ConditionalWritesIgnored(IF_MATCH)


class ConditionalWriteGate(ForwardingStore):
    """Passes calls to ``inner`` once the bucket has proven its conditional writes.

    Unproven (at start, after an outage), a call first runs the proof, at most once per
    ``reprobe_seconds`` and never in two threads at once: the others fail at once as transient
    storage trouble (503 + Retry-After) rather than queue behind a sick bucket. A transient
    failure passing through marks the bucket unproven again. A bucket that ignores a condition
    is refused from then on (``ConditionalWritesIgnored``).
    """

    def __init__(
        self,
        inner: ObjectStore,
        probe_key: str,
        *,
        reprobe_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self.probe_key = probe_key
        self.reprobe_seconds = reprobe_seconds
        self._clock = clock
        self._proven = False
        self._refused: ConditionalWritesIgnored | None = None
        self._next_attempt = 0.0
        self._probing = threading.Lock()

    @property
    def proven(self) -> bool:
        return self._proven

    def prove(self) -> None:
        """Run the proof now unless it holds; raises what the proof raised."""
        if self._refused is not None:
            raise self._refused
        if self._proven:
            return
        with self._probing:
            self._attempt()

    def _ensure_proven(self) -> None:
        if self._proven:
            return
        if self._refused is not None:
            raise self._refused
        if self._clock() < self._next_attempt or not self._probing.acquire(blocking=False):
            raise TransientStorageError("the bucket's conditional writes are not proven yet")
        try:
            self._attempt()
        finally:
            self._probing.release()

    def _attempt(self) -> None:
        if self._proven:
            return
        try:
            prove_conditional_writes(self.inner, self.probe_key)
        except ConditionalWritesIgnored as exc:
            self._refused = exc
            logger.critical("❌ Refusing every upload: %s", exc)
            raise
        except StorageError:
            self._next_attempt = self._clock() + self.reprobe_seconds
            raise
        self._proven = True
        logger.info("✅ The bucket refuses conditional writes that must fail: exactly-once holds")

    def _guarded(self, action: Callable[[], T]) -> T:
        self._ensure_proven()
        try:
            return action()
        except TransientStorageError:
            self._unprove()
            raise

    def _unprove(self) -> None:
        """An outage: whatever answers next may not be the bucket that was proven."""
        if self._proven:
            logger.warning("⚠️ Storage failed; conditional writes will be proven again first")
        self._proven = False

    async def _guarded_async(self, action: Callable[[], Awaitable[T]]) -> T:
        """``_guarded`` for a coroutine: once proven (nearly always), no thread and no lock.

        The proof itself makes sync writes, so an unproven store runs it in a worker thread,
        never on the event loop.
        """
        if not self._proven:
            await asyncio.to_thread(self._ensure_proven)
        try:
            return await action()
        except TransientStorageError:
            self._unprove()
            raise

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        return self._guarded(lambda: self.inner.put(key, body, if_absent=if_absent, if_match=if_match))

    def get(self, key: str) -> StoredObject:
        return self._guarded(lambda: self.inner.get(key))

    def delete(self, key: str) -> None:
        self._guarded(lambda: self.inner.delete(key))

    async def put_async(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        return await self._guarded_async(
            lambda: self.inner.put_async(key, body, if_absent=if_absent, if_match=if_match)
        )

    async def get_async(self, key: str) -> StoredObject:
        return await self._guarded_async(lambda: self.inner.get_async(key))

    async def delete_async(self, key: str) -> None:
        await self._guarded_async(lambda: self.inner.delete_async(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._ensure_proven()
        return self.inner.list(prefix)

    def check(self) -> None:
        self._guarded(self.inner.check)
