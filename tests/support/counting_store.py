"""A store wrapper that counts the storage requests made through it (to show what a feature costs)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from collector.storage import ObjectInfo, ObjectStore, StoredObject


class CountingStore(ObjectStore):
    """Passes every call to ``inner`` and counts it by operation (``get``, ``put``, ``list``)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, operation: str) -> None:
        with self._lock:
            self.counts[operation] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        self._count("put")
        return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

    def get(self, key: str) -> StoredObject:
        self._count("get")
        return self.inner.get(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._count("list")
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        # Passed through when the store has it (erasure adds ``delete`` to the interface).
        self._count("delete")
        self.inner.delete(key)  # type: ignore[attr-defined]

    def check(self) -> None:
        self.inner.check()

    def close(self) -> None:
        self.inner.close()
