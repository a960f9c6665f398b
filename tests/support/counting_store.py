"""A store wrapper that counts the storage requests made through it (to show what a feature costs)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from collector.storage import ObjectInfo, ObjectStore, StoredObject


class CountingStore(ObjectStore):
    """Passes every call to ``inner``, counting it by operation and remembering (operation, key).

    Subclasses that count elsewhere (another process's memory, say) override ``_count``.
    """

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter()
        self.requests: list[tuple[str, str]] = []  # (operation, key or prefix), in order
        self.writes: list[str] = []  # keys of the puts that stored something
        self._lock = threading.Lock()

    def _count(self, operation: str, key: str) -> None:
        with self._lock:
            self.counts[operation] += 1
            self.requests.append((operation, key))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, operation: str, key: str | None = None) -> int:
        """Requests of ``operation`` (on ``key`` only, when given)."""
        with self._lock:
            return sum(1 for op, k in self.requests if op == operation and (key is None or k == key))

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.requests.clear()
            self.writes.clear()

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        self._count("put", key)
        etag = self.inner.put(key, body, if_absent=if_absent, if_match=if_match)
        with self._lock:
            self.writes.append(key)
        return etag

    def get(self, key: str) -> StoredObject:
        self._count("get", key)
        return self.inner.get(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._count("list", prefix)
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._count("delete", key)
        self.inner.delete(key)

    def check(self) -> None:
        self._count("check", "")
        self.inner.check()

    def close(self) -> None:
        self.inner.close()
