"""What each stored submission says for the research tools, read once per process.

A submission is created once and never rewritten (only an erasure deletes it), so what reading
it told (readable or not, marked unverified or not, which trial sessions it names) stays true for
as long as the listing shows the object with the same size and time. The dashboard's index and
its participant page share one ``SubmissionFacts``: a page then reads only the submissions it
has not met yet, however many are stored.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ..storage import ObjectInfo, ObjectNotFound, ObjectStore, StorageError
from ..trials.sessions import submission_session_ids
from .records import is_unverified
from .scan import decode_object, read_many

# Larger objects are not read here (the collector never stores a submission this large).
MAX_READ_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Submission:
    """One submission as the research tools see it."""

    problem: str | None  # why it cannot be read, or None for a readable JSON object
    unverified: bool = False  # marked "keyVerified": false (reading.records.is_unverified)
    key_verified: bool | None = None  # the stored keyVerified, when it is a boolean
    session_ids: frozenset[str] = frozenset()  # the trial sessions it names

    @property
    def counts(self) -> bool:
        """Does it speak for the participant (counts, completion, "Last upload")?"""
        return not self.unverified


def read_submission(body: bytes) -> Submission:
    try:
        document = decode_object(body)
    except ValueError as exc:
        return Submission(str(exc))
    flag = document.get("keyVerified")
    return Submission(
        None,
        is_unverified(document),
        flag if isinstance(flag, bool) else None,
        frozenset(submission_session_ids(document)),
    )


class SubmissionFacts:
    """``Submission`` per listed object, cached by (key, size, time); at most ``entries`` kept."""

    def __init__(self, entries: int = 200_000) -> None:
        self.entries = entries
        self._cache: OrderedDict[str, tuple[tuple[int, datetime], Submission]] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, info: ObjectInfo) -> Submission | None:
        with self._lock:
            hit = self._cache.get(info.key)
        return hit[1] if hit is not None and hit[0] == (info.size, info.last_modified) else None

    def of(
        self, store: ObjectStore, infos: Iterable[ObjectInfo], *, workers: int = 8, raise_errors: bool = True
    ) -> dict[str, Submission]:
        """Each listed submission's facts, reading only those not met before (concurrently).

        One deleted since it was listed is answered as such (not remembered); any other storage
        error is raised, or with ``raise_errors=False`` answered as a problem (not remembered:
        read again next time).
        """
        found: dict[str, Submission] = {}
        missing: dict[str, ObjectInfo] = {}
        for info in infos:
            hit = self.known(info)
            if hit is not None:
                found[info.key] = hit
            elif info.size > MAX_READ_BYTES:
                found[info.key] = Submission(f"too large to check ({info.size} bytes)")
            else:
                missing[info.key] = info
        for key, body in read_many(store, list(missing), workers=workers):
            if isinstance(body, ObjectNotFound):
                found[key] = Submission("deleted since it was listed")
                continue
            if isinstance(body, StorageError):
                if raise_errors:
                    raise body
                found[key] = Submission(f"cannot be read now: {body}")
                continue
            found[key] = read_submission(body)
            self._remember(missing[key], found[key])
        return found

    def _remember(self, info: ObjectInfo, submission: Submission) -> None:
        with self._lock:
            self._cache[info.key] = ((info.size, info.last_modified), submission)
            self._cache.move_to_end(info.key)
            while len(self._cache) > self.entries:
                self._cache.popitem(last=False)
