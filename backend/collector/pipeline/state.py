"""Step 2 of the pipeline: what is known of a participant's ``status.json`` when an upload is decided.

Either *read* now (one GET: the only source a decision that writes no status may come from) or
*assumed*, from what this process last read or wrote (``collector.status_cache``), or, for a
participant it has not met, assumed absent. An assumed state may only decide a plan that starts
with a conditional write of ``status.json``: that write fails unless the stored status is still
the assumed one, and the upload then reads and decides again (``collector.pipeline.run``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..keys import KeyLayout, parse_timestamp
from ..server_fields import ERASED_AT, KEY_HASH
from ..status_cache import CachedStatus, StatusCache
from ..storage import ObjectNotFound, ObjectStore, StoredObject
from ..tombstone import is_tombstone

OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StatusState:
    """What one read of ``status.json`` found (also read by the erasure and the key release)."""

    stored: StoredObject | None
    document: dict[str, Any] | None  # None when absent or unreadable

    @classmethod
    def of(cls, stored: StoredObject | None) -> StatusState:
        document = None
        if stored is not None:
            try:
                decoded = json.loads(stored.body)
                document = decoded if isinstance(decoded, dict) else None
            except ValueError:
                document = None  # unreadable: replaced by the next upload, as before
        return cls(stored, document)

    @property
    def exists(self) -> bool:
        return self.stored is not None

    @property
    def erased(self) -> bool:
        """A tombstone: the research team erased this participant."""
        return is_tombstone(self.document)

    @property
    def key_hash(self) -> str | None:
        value = (self.document or {}).get(KEY_HASH)
        return value if isinstance(value, str) and value else None


def status_moment(document: Any, clock_skew: timedelta) -> datetime:
    """When a status document was made, for the newest-wins rule; none or unreadable: oldest.

    A stored timestamp further than ``clock_skew`` ahead of its own receipt time (a status from
    before this rule, e.g. one dated 2099) counts by its receipt time, so it cannot freeze the status.
    """
    try:
        claimed = parse_timestamp(document.get("timestamp"))
        received = parse_timestamp(document.get("serverReceivedAt"))
    except (ValueError, AttributeError):
        return OLDEST
    if claimed is not None and received is not None and claimed > received + clock_skew:
        return received
    return claimed or received or OLDEST


@dataclass(frozen=True, slots=True)
class ParticipantState:
    """The participant's ``status.json`` as the decision sees it."""

    read: bool  # True: read just now; False: assumed (the status cache, or never met: absent)
    exists: bool
    etag: str | None
    key_hash: str | None
    moment: datetime  # the stored status's moment (newest wins); OLDEST when none
    erased: bool
    erased_at: datetime | None
    confirmed_at: float  # fence clock: when the read (or the cached write or read) began
    # A trial's "new participant?" needs more than status.json: anything stored (a trial) or
    # met here. None: not looked at (status and submission uploads, which never list).
    has_objects: bool | None = None
    seen_here: bool = False

    @property
    def known(self) -> bool:
        """Whether this participant is known to exist (for the per-address cap and the studies)."""
        return self.exists or self.seen_here or bool(self.has_objects)


class StateLoader:
    """Loads a participant's state: from the status cache, or by one read of ``status.json``."""

    def __init__(
        self,
        store: ObjectStore,
        layout: KeyLayout,
        *,
        clock_skew: timedelta,
        clock: Callable[[], float],
        cache: Callable[[], StatusCache | None],
        blocking: Callable[..., Awaitable[Any]] = asyncio.to_thread,
    ) -> None:
        self.store = store
        self.layout = layout
        self.clock_skew = clock_skew
        self._clock = clock
        self._cache = cache  # looked up on each use: tests swap the cache for one on a fake clock
        self._blocking = blocking  # how a blocking call (the listing) is made: pipeline.calls

    @property
    def cache(self) -> StatusCache | None:
        return self._cache()

    def fence_clock(self) -> float:
        """The clock confirmations are measured on: the status cache's when there is one."""
        cache = self.cache
        return cache.clock() if cache is not None else self._clock()

    def assumed(self, participant_id: str) -> ParticipantState | None:
        """The remembered state (absent when never met); None without a cache (always read)."""
        cache = self.cache
        if cache is None:
            return None
        cached = cache.get(participant_id)
        if cached is None:
            return ParticipantState(False, False, None, None, OLDEST, False, None, self.fence_clock())
        return _remembered(cached, seen_here=cached.exists)

    def fresh(self, participant_id: str, max_age: float) -> ParticipantState | None:
        """The remembered state if confirmed within ``max_age`` seconds (a trial's only shortcut)."""
        cache = self.cache
        cached = cache.fresh(participant_id, max_age) if cache is not None else None
        return _remembered(cached, seen_here=True) if cached is not None else None

    async def read(self, participant_id: str, *, look_for_objects: bool = False) -> ParticipantState:
        """Read ``status.json`` (and remember it; a tombstone is never remembered).

        ``look_for_objects``: for a trial, list the participant's folder when there is no status
        and this process never met them, so that one listing tells a known participant from a new one.
        """
        cache = self.cache
        seen_here = cache is not None and cache.get(participant_id) is not None
        confirmed_at = self.fence_clock()
        try:
            stored: StoredObject | None = await self.store.get_async(self.layout.status_key(participant_id))
        except ObjectNotFound:
            stored = None
        status = StatusState.of(stored)
        moment = status_moment(status.document, self.clock_skew)
        if status.erased:
            self.forget(participant_id)
        else:
            self.remember(
                participant_id, stored.etag if stored else None, status.key_hash, moment, confirmed_at
            )
        has_objects = None
        if look_for_objects and not status.exists and not seen_here:
            has_objects = await self._has_objects(participant_id)
        erased_at = parse_timestamp((status.document or {}).get(ERASED_AT)) if status.erased else None
        return ParticipantState(
            True,
            status.exists,
            stored.etag if stored else None,
            status.key_hash,
            moment,
            status.erased,
            erased_at,
            confirmed_at,
            has_objects,
            seen_here,
        )

    async def is_erased(self, participant_id: str) -> bool:
        """One read of ``status.json``: does it hold a tombstone now (the erasure fence's check)?"""
        return (await self.read(participant_id)).erased

    async def _has_objects(self, participant_id: str) -> bool:
        return await self._blocking(has_objects, self.store, self.layout, participant_id)

    def remember(
        self,
        participant_id: str,
        etag: str | None,
        key_hash: str | None,
        moment: datetime,
        confirmed_at: float,
    ) -> None:
        cache = self.cache
        if cache is not None:
            cache.remember(participant_id, etag, key_hash, moment, confirmed_at)

    def forget(self, participant_id: str, etag: str | None = None) -> None:
        cache = self.cache
        if cache is not None:
            cache.forget(participant_id, etag)


def _remembered(cached: CachedStatus, *, seen_here: bool) -> ParticipantState:
    return ParticipantState(
        False,
        cached.exists,
        cached.etag,
        cached.key_hash,
        cached.moment,
        False,  # a tombstone is never remembered
        None,
        cached.confirmed_at,
        seen_here=seen_here,
    )


def has_objects(store: ObjectStore, layout: KeyLayout, participant_id: str) -> bool:
    """Whether anything is stored in the participant's folder (one listing request, first page)."""
    listing = store.list(layout.participant_dir(participant_id))
    try:
        return next(iter(listing), None) is not None
    finally:
        close = getattr(listing, "close", None)
        if close is not None:
            close()
