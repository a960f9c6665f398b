"""Reading the bucket for the research tools: one listing grouped per participant, concurrent reads.

A listing costs one request per 1,000 keys, so everything that can be learnt from it (who has
a status, how many submissions, their times and sizes) comes from the listing. Only documents
whose content is needed are read, many at a time on a thread pool, because against S3 the
round trip, not the bytes, is what costs.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ..keys import KeyLayout, is_valid_participant_id
from ..participant_keys import KEY_RELEASES
from ..storage import ObjectInfo, ObjectStore, StorageError

logger = logging.getLogger(__name__)

DEFAULT_READERS = 32


@dataclass
class ParticipantObjects:
    """One participant's objects, as listed (nothing read yet)."""

    participant_id: str
    status: ObjectInfo | None = None
    submissions: list[ObjectInfo] = field(default_factory=list)  # in key order
    # Per-trial objects (session, then index order); not in ``keys``, which readers of
    # status and submissions use.
    trials: list[ObjectInfo] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return ([self.status.key] if self.status else []) + [info.key for info in self.submissions]


@dataclass
class BucketListing:
    participants: dict[str, ParticipantObjects]  # in participant-ID order
    stray: list[ObjectInfo]  # under the prefix, but not a key the layout makes
    # The research team's records (key releases, erasures) under {prefix}/audit/: not participant data.
    audit: list[ObjectInfo] = field(default_factory=list)

    @property
    def submission_count(self) -> int:
        return sum(len(p.submissions) for p in self.participants.values())


def list_bucket(store: ObjectStore, layout: KeyLayout) -> BucketListing:
    """Every object under the layout's prefix, grouped by participant with ``layout.parse``."""
    participants: dict[str, ParticipantObjects] = {}
    stray: list[ObjectInfo] = []
    audit: list[ObjectInfo] = []
    for info in store.list(f"{layout.prefix}/"):
        if info.key.startswith(layout.audit_root):
            audit.append(info)
            continue
        parsed = layout.parse(info.key)
        if parsed is None:
            stray.append(info)
            continue
        entry = participants.setdefault(parsed.participant_id, ParticipantObjects(parsed.participant_id))
        if parsed.kind == "status":
            entry.status = info
        elif parsed.kind == "trial":
            entry.trials.append(info)
        else:
            entry.submissions.append(info)
    # Listings come in key order, which already sorts participants; sort anyway, stores may differ.
    ordered = {pid: participants[pid] for pid in sorted(participants)}
    for entry in ordered.values():
        entry.submissions.sort(key=lambda info: info.key)
        entry.trials.sort(key=lambda info: info.key)
    return BucketListing(ordered, stray, audit)


def key_released(listing: BucketListing, layout: KeyLayout) -> set[str]:
    """Participants with a key-release record (``audit/key-releases/{stamp}_{id}_{8 hex}.json``).

    Their status.json no longer holds a key hash, yet submissions stored while it did may be
    marked unverified.
    """
    folder = f"{layout.audit_root}{KEY_RELEASES}/"
    released = set()
    for info in listing.audit:
        name = info.key[len(folder) :] if info.key.startswith(folder) else ""
        # {YYYY-MM-DD_HH-MM-SS}_ is 20 characters, _{8 hex}.json 14.
        participant_id = name[20:-14]
        if len(name) > 34 and is_valid_participant_id(participant_id):
            released.add(participant_id)
    return released


def read_many(
    store: ObjectStore, keys: Iterable[str], *, workers: int = DEFAULT_READERS
) -> Iterator[tuple[str, bytes | StorageError]]:
    """Each key with its body (or the ``StorageError`` reading it), in the order given.

    Reads run ``workers`` at a time; at most a few windows of bodies are held, so a bucket
    larger than memory streams through.
    """
    window = workers * 4
    remaining = iter(keys)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bucket-read") as pool:
        pending: deque[tuple[str, Future[bytes]]] = deque(
            (key, pool.submit(_read, store, key)) for key in islice(remaining, window)
        )
        try:
            while pending:
                key, future = pending.popleft()
                following = next(remaining, None)
                if following is not None:
                    pending.append((following, pool.submit(_read, store, following)))
                try:
                    yield key, future.result()
                except StorageError as exc:
                    yield key, exc
        finally:
            for _, future in pending:
                future.cancel()


def _read(store: ObjectStore, key: str) -> bytes:
    return store.get(key).body


def decode_object(body: bytes) -> dict[str, Any]:
    """A stored document as a JSON object; ``ValueError`` saying why when it is not one."""
    try:
        value = json.loads(body)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # nested deeper than the parser goes: unreadable here, not a crash
        raise ValueError("JSON nested too deeply to read") from None
    if not isinstance(value, dict):
        raise ValueError(f"JSON {type(value).__name__}, not an object")
    return value
