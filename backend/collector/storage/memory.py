"""An in-memory store for fast unit tests; it honours the same conditional writes as the real ones."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

from .base import (
    AlreadyExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StoredObject,
    content_etag,
)


class MemoryStore(ObjectStore):
    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, str, datetime]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        etag = content_etag(body)
        with self._lock:
            current = self._objects.get(key)
            if if_absent and current is not None:
                raise AlreadyExists(key)
            if if_match is not None and (current is None or current[1] != if_match):
                raise PreconditionFailed(key)
            self._objects[key] = (bytes(body), etag, datetime.now(UTC))
        return etag

    def get(self, key: str) -> StoredObject:
        with self._lock:
            current = self._objects.get(key)
        if current is None:
            raise ObjectNotFound(key)
        return StoredObject(current[0], current[1])

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._lock:
            items = sorted((k, v) for k, v in self._objects.items() if k.startswith(prefix))
        for key, (body, _, modified) in items:
            yield ObjectInfo(key, len(body), modified)

    def check(self) -> None:
        return None

    # Nothing here blocks: the async forms answer on the event loop, without a thread hop.

    async def put_async(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        return self.put(key, body, if_absent=if_absent, if_match=if_match)

    async def get_async(self, key: str) -> StoredObject:
        return self.get(key)

    async def delete_async(self, key: str) -> None:
        self.delete(key)
