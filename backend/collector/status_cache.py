"""Each participant's ``status.json`` as this process last read or wrote it, to skip the read.

An upload (``collector.pipeline``) needs the stored status for four decisions: erased?, does
the participant key match?, is the participant new?, is the stored status newer? and for the
ETag its compare-and-swap names. When this process was the last to read or write a
participant's status, it already knows all of that, so the upload can go straight to the write.
What is kept per participant is small (ETag, key hash, the stored status's moment, when it was
confirmed), never the document.

**The cache may save requests, never change an outcome.** The rules that make it so:

- *Only decisions that end in a conditional write of* ``status.json`` *are taken from the cache.*
  The write names the cached ETag (``If-Match``), so it succeeds only if the stored status is
  still the one the decision was made from (ETags change with the content); otherwise the store
  answers ``PreconditionFailed`` (a missing key too: both backends map S3's 404 on ``If-Match``
  to it), the entry is dropped, and the upload reads ``status.json`` and decides again, exactly
  as without the cache.
- *A decision that writes no status* (403 wrong key; a submission kept with
  ``keyVerified: false``; a superseded status; 410) is never taken from the cache: nothing would
  confirm it, so it is confirmed by reading first. These are rare, so the read costs the common
  path nothing. Tombstones are never cached: 410 always comes from a read.
- *A participant not remembered here* (or remembered as having nothing stored) is decided as
  a new one and its ``status.json`` is *created if absent*: that write succeeds only if nothing
  is stored, which is exactly what the decision assumed (no tombstone, no claim, nothing newer).
  If anything is there the create is refused and the upload reads and decides, as above. The
  per-address new-participant cap takes its token before the create and gets it back on a
  refusal, so it counts the participants created; with the cap spent, the read decides (a known
  participant is never capped).

**One order: status first, then the submission** (``collector.pipeline.decide``). Without a
read, the other order would store a submission for a participant erased meanwhile by another
process (the submission's create-if-absent succeeds; only the status write after it would see the
tombstone). Status first, the swap or create fails against a tombstone, and the upload then
reads, answers 410 and stores nothing. After a read the order is the same. Exactly-once does not
depend on the order: the submission's name is derived from the upload (``submission_names``)
and created if absent, so a retry after the status was written but the submission was not (503)
stores the submission once, and a retry after both were written finds it. A status left newer
than its submission by a failed request is what the client's retry completes.

**Trials** write no ``status.json``, so nothing validates a cached decision for them. A trial
uses a cache entry only while it is *fresh* (confirmed by this process within the erasure
fence's ``CONFIRM_WINDOW_SECONDS``, ``collector.tombstone``), and only for an accepting decision
(a ``keyVerified: false`` trial reads first). Its write must then complete within that window
of the entry's confirmation, or it reads ``status.json`` again and withdraws the trial if it
finds a tombstone; the erasure waits the window out before its last listing. So an erasure by
another process, once returned, is final here too. Experiments send trials every few seconds, so
a trial often costs a read and a write; the cache saves the read for trials sent in quick
succession.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class CachedStatus:
    """One participant's ``status.json`` as last seen here; ``etag`` None: nothing was stored."""

    etag: str | None
    key_hash: str | None
    moment: datetime  # the stored status's moment, ordering newer against older
    confirmed_at: float  # the cache clock when it was read or written

    @property
    def exists(self) -> bool:
        return self.etag is not None


class StatusCache:
    """A thread-safe, bounded (least recently used goes first) map of participant ID -> state."""

    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError("a status cache holds at least one participant")
        self.capacity = capacity
        self.clock = clock
        self._entries: OrderedDict[str, CachedStatus] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, participant_id: str) -> CachedStatus | None:
        with self._lock:
            entry = self._entries.get(participant_id)
            if entry is not None:
                self._entries.move_to_end(participant_id)
            return entry

    def fresh(self, participant_id: str, max_age: float) -> CachedStatus | None:
        """The entry if it was confirmed no more than ``max_age`` seconds ago."""
        entry = self.get(participant_id)
        if entry is None or self.clock() - entry.confirmed_at > max_age:
            return None
        return entry

    def remember(
        self,
        participant_id: str,
        etag: str | None,
        key_hash: str | None,
        moment: datetime,
        confirmed_at: float | None = None,
    ) -> None:
        """Keep the participant's state; ``confirmed_at`` (default now): when the read or write began."""
        confirmed = self.clock() if confirmed_at is None else confirmed_at
        entry = CachedStatus(etag, key_hash, moment, confirmed)
        with self._lock:
            self._entries[participant_id] = entry
            self._entries.move_to_end(participant_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def forget(self, participant_id: str, etag: str | None = None) -> None:
        """Drop the entry (only if it still names ``etag``, when given: a newer one stays)."""
        with self._lock:
            entry = self._entries.get(participant_id)
            if entry is not None and (etag is None or entry.etag == etag):
                del self._entries[participant_id]
