"""An in-process index of every participant, for a dashboard that stays fast at 10,000 of them.

Built from one listing of the bucket (submission times come from it) plus every
``status.json``, read concurrently. A rebuild re-reads only the status files whose size or
modification time changed. Submissions are read only where they can change what is shown (a
participant who holds or held a key may have unverified ones, which do not count; one with trials
has sessions they complete), each once per process (``reading.submissions``). The index is a cache
of the bucket, not state: each worker process keeps its own; it is served for ``ttl`` seconds,
then refreshed in the background while the previous one is still served, and the Refresh button
rebuilds it fully.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..keys import KeyLayout
from ..participant_keys import HASH_FIELD
from ..reading.records import (
    as_bool,
    as_float,
    as_int,
    as_text,
    session_completed,
    session_moment,
    session_records,
)
from ..reading.scan import (
    DEFAULT_READERS,
    BucketListing,
    ParticipantObjects,
    decode_object,
    key_released,
    list_bucket,
    read_many,
)
from ..reading.submissions import Submission, SubmissionFacts
from ..storage import ObjectInfo, ObjectStore, StorageError
from ..tombstone import is_tombstone

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParticipantSummary:
    participant_id: str
    has_status: bool
    status_readable: bool
    flags: tuple[bool, bool, bool, bool]  # setup, welcome, tutorial, tutorial completed
    sessions_started: int | None
    sessions_completed: int | None
    total_hours: float | None
    volcano: str | None
    mode: str | None
    # Server receipt time (the listing's last_modified) of status.json or of a submission that
    # speaks for the participant: an unverified one (reading.records.is_unverified) never moves it.
    last_upload: datetime | None
    submission_count: int  # submissions that speak for the participant
    submission_times: tuple[datetime, ...] = ()  # their server receipt times, from the listing
    completed_session_times: tuple[datetime, ...] = ()  # the browser's own dates: may be anything
    erased: bool = False  # status.json is an erasure tombstone
    unverified_count: int = 0  # submissions marked keyVerified: false, shown apart
    trial_count: int = 0
    trial_session_count: int = 0
    milestones: tuple[bool, ...] = ()  # the study's milestone fields, in order (True when reached)


@dataclass
class Snapshot:
    participants: list[ParticipantSummary]  # by participant ID
    built_at: float = field(default_factory=time.monotonic)
    built_wall: float = field(default_factory=time.time)

    @property
    def submission_count(self) -> int:
        return sum(p.submission_count for p in self.participants)


class ParticipantIndex:
    """``get()`` answers from the cache; the first call (or ``refresh()``) reads the bucket."""

    def __init__(
        self,
        store: ObjectStore,
        layout: KeyLayout,
        *,
        ttl: float = 30.0,
        workers: int = DEFAULT_READERS,
        milestones: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.layout = layout
        self.milestones = milestones  # a registered study's funnel fields (collector.studies)
        self.ttl = ttl
        self.workers = workers
        # What each submission says, read once per process; the participant page shares it.
        self.submissions = SubmissionFacts()
        self._snapshot: Snapshot | None = None
        self._statuses: dict[str, tuple[tuple[int, datetime], dict[str, Any] | None]] = {}
        self._build_lock = threading.Lock()
        self._refreshing = False

    def get(self) -> Snapshot:
        """The current index; a stale one is served while a background refresh replaces it."""
        snapshot = self._snapshot
        if snapshot is None:
            return self.refresh(full=False)
        if time.monotonic() - snapshot.built_at > self.ttl and not self._refreshing:
            self._refreshing = True
            threading.Thread(target=self._background_refresh, name="index-refresh", daemon=True).start()
        return snapshot

    def refresh(self, *, full: bool = True) -> Snapshot:
        """Rebuild now; ``full`` re-reads every status.json, not only the changed ones."""
        with self._build_lock:
            if full:
                self._statuses = {}
            self._snapshot = self._build()
            return self._snapshot

    def _background_refresh(self) -> None:
        try:
            self.refresh(full=False)
        except StorageError as exc:
            logger.warning("Admin index refresh failed, serving the previous one: %s", exc)
        finally:
            self._refreshing = False

    def _build(self) -> Snapshot:
        started = time.perf_counter()
        listing = list_bucket(self.store, self.layout)
        stale = [
            entry.status
            for entry in listing.participants.values()
            if entry.status and self._statuses.get(entry.status.key, (None,))[0] != _version(entry.status)
        ]
        versions = {info.key: _version(info) for info in stale}
        for key, body in read_many(self.store, versions, workers=self.workers):
            document = None
            if not isinstance(body, StorageError):
                try:
                    document = decode_object(body)
                except ValueError:
                    logger.warning("Admin index: %r is not a JSON object", key)
            self._statuses[key] = (versions[key], document)
        statuses = {
            pid: self._statuses.get(entry.status.key, (None, None))[1] if entry.status else None
            for pid, entry in listing.participants.items()
        }
        # A submission that cannot be read now counts as before (it is read again next time),
        # like an unreadable status: storage trouble must not take the whole dashboard down.
        to_read = _submissions_to_read(listing, self.layout, statuses)
        facts = self.submissions.of(self.store, to_read, workers=self.workers, raise_errors=False)
        summaries = [
            _with_trials(
                _summary(entry, statuses[entry.participant_id], facts),
                entry.trials,
                statuses[entry.participant_id],
                self.milestones,
            )
            for entry in listing.participants.values()
        ]
        logger.info(
            "Admin index: %d participants (%d status files read) in %.2f s",
            len(summaries),
            len(stale),
            time.perf_counter() - started,
        )
        return Snapshot(summaries)


def _version(info: ObjectInfo) -> tuple[int, datetime]:
    return info.size, info.last_modified


def _submissions_to_read(
    listing: BucketListing, layout: KeyLayout, statuses: dict[str, dict[str, Any] | None]
) -> list[ObjectInfo]:
    """The submissions whose content the index needs: of participants who hold (or held) a key,
    since only theirs can be unverified, and of those with trials, whose sessions they complete.

    A submission is marked unverified only when a key hash was stored at the time, so a
    participant who never held a key needs none read (the listing tells the rest).
    """
    released = key_released(listing, layout)
    return [
        info
        for pid, entry in listing.participants.items()
        if entry.trials or pid in released or (statuses[pid] or {}).get(HASH_FIELD)
        for info in entry.submissions
    ]


def _summary(
    entry: ParticipantObjects, status: dict[str, Any] | None, facts: dict[str, Submission]
) -> ParticipantSummary:
    doc = status or {}
    status_info = entry.status
    # Server receipt times (when the object was stored), from the listing, and no client clock,
    # which may say 9999 or 1970 (see docs/api.md on timestamps); unverified submissions apart.
    unverified = [info for info in entry.submissions if info.key in facts and not facts[info.key].counts]
    apart = {info.key for info in unverified}
    times = tuple(info.last_modified for info in entry.submissions if info.key not in apart)
    status_time = status_info.last_modified if status_info else None
    uploads = [*times, status_time] if status_time else list(times)
    completed = tuple(
        moment
        for record in session_records(doc)
        if session_completed(record) and (moment := session_moment(record)) is not None
    )
    flags = ("hasSeenParticipantSetup", "hasSeenWelcome", "hasSeenTutorial", "tutorialCompleted")
    return ParticipantSummary(
        participant_id=entry.participant_id,
        has_status=status_info is not None,
        status_readable=status is not None,
        flags=tuple(as_bool(doc.get(name)) is True for name in flags),  # type: ignore[arg-type]
        sessions_started=as_int(doc.get("totalSessionsStarted")),
        sessions_completed=as_int(doc.get("totalSessionsCompleted")),
        total_hours=_hours(doc),
        volcano=as_text(doc.get("selectedVolcano")),
        mode=as_text(doc.get("selectedMode")),
        last_upload=max(uploads) if uploads else None,
        submission_count=len(times),
        submission_times=times,
        completed_session_times=completed,
        erased=is_tombstone(status),
        unverified_count=len(unverified),
    )


def _with_trials(
    summary: ParticipantSummary,
    trials: list[ObjectInfo],
    status: dict[str, Any] | None,
    milestones: tuple[str, ...],
) -> ParticipantSummary:
    """The summary with the participant's trial counts and milestones (from the listing and status)."""
    doc = status or {}
    # A participant who sent only trials has no other upload time: their last trial's receipt.
    last_trial = max((info.last_modified for info in trials), default=None)
    return replace(
        summary,
        trial_count=len(trials),
        trial_session_count=len({info.key.rsplit("/", 2)[-2] for info in trials}),
        last_upload=summary.last_upload or last_trial,
        milestones=tuple(as_bool(doc.get(name)) is True for name in milestones),
    )


def _hours(doc: dict[str, Any]) -> float | None:
    hours = as_float(doc.get("totalSessionTimeHours"))
    if hours is None and (ms := as_float(doc.get("totalSessionTime"))) is not None:
        hours = ms / 3_600_000
    return hours
