"""Stores uploads exactly once: append-only submissions and a newest-wins ``status.json``.

Correctness across collector processes comes from the store's conditional writes, never from
memory in this process. An upload writes ``status.json`` first, without reading it, whenever
this process can say what is stored (``status_cache``):

- a participant it read or wrote last: a compare-and-swap on the remembered ETag;
- a participant it has not seen stored: a create-if-absent, decided as for a new participant
  (claimed by the upload's key, if any; the per-address new-participant cap, whose token is
  given back if the create is refused);

then creates the submission, if any (``submission_names``: at most three names). That is 2
requests per submission and 1 per status upload, for new and known participants alike; a trial
then costs its one write. Either status write fails unless the stored status is still the one
the decision assumed, and then (someone else wrote, erased, or the participant existed after
all) nothing is written yet and the upload takes the read path:

1. reads ``status.json`` and decides from it: erased (410), the participant key
   (``participant_keys.decide``), a new participant (the per-address cap);
2. creates the submission;
3. replaces ``status.json`` by compare-and-swap on the ETag it read, and only with an upload
   whose timestamp is not older than the stored one, so racing writers end at the newest.

Decisions that write no status (a refused key, a submission kept without the key, a superseded
status) always come from that read, since no write would confirm them. A participant stored by
another process and not yet met here costs one refused create more (4 requests for a submission,
3 for a status upload), once per process. ``status_cache`` explains why skipping the read can
save requests but never change an outcome. The participant key costs no request of its own.
Without a status cache (``STATUS_CACHE_SIZE=0``) every upload takes the read path.

Every path that stores an object confirms first that ``status.json`` holds no tombstone (its
read, or its swap) and keeps to the erasure fence of ``collector.tombstone``: writes that end
later than ``CONFIRM_WINDOW_SECONDS`` after that confirmation are checked again and withdrawn
if the participant was erased meanwhile, so an erasure that has returned is final.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .compact_json import compact_json_bytes
from .errors import (
    NotFound,
    ParticipantErased,
    ParticipantKeyMismatch,
    RateLimited,
    storage_unavailable,
)
from .keys import KeyLayout, format_timestamp, parse_timestamp
from .models import PRIVATE_STATUS_FIELDS, Upload
from .participant_keys import HASH_FIELD, KeyVerdict, StatusState, decide, key_matches
from .server_fields import ERASED_AT
from .status_cache import StatusCache
from .storage import ObjectStore, PreconditionFailed, StorageError
from .storage.retrying import shared_deadline
from .submission_names import store_submission
from .tombstone import CONFIRM_WINDOW_SECONDS

logger = logging.getLogger(__name__)

MAX_STATUS_ATTEMPTS = 200
NOT_FOUND_MESSAGE = "no status stored for this participant"


@dataclass(frozen=True)
class UploadResult:
    participant_id: str
    timestamp: str
    files_uploaded: list[str]
    status_superseded: bool  # a newer status.json was already stored; this one was not written
    key_verified: bool | None = None  # False: stored, but the participant key was missing or wrong

    def as_response(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "success",
            "participantId": self.participant_id,
            "timestamp": self.timestamp,
            "filesUploaded": self.files_uploaded,
        }
        if self.status_superseded:
            body["statusSuperseded"] = True
        if self.key_verified is False:
            body["keyVerified"] = False
        return body


class UploadService:
    """Writes validated uploads into a store under a key layout."""

    def __init__(
        self,
        store: ObjectStore,
        layout: KeyLayout,
        *,
        retry_after: int,
        deadline_seconds: float | None,
        participant_keys: bool,
        clock_skew: timedelta,
        clock: Callable[[], float] = time.monotonic,
        status_cache: StatusCache | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.retry_after = retry_after
        # One retry deadline for all the storage requests of an upload (see storage.retrying).
        self.deadline_seconds = deadline_seconds
        self.participant_keys = participant_keys
        self.clock_skew = clock_skew
        self._clock = clock
        # None: every upload reads status.json first (tools, and STATUS_CACHE_SIZE=0).
        self.status_cache = status_cache
        # How long a cached status may decide a trial (which no conditional write confirms): the
        # erasure fence's window (collector.tombstone); a later write is confirmed after it.
        self.trial_fresh_seconds = CONFIRM_WINDOW_SECONDS

    def store_upload(
        self,
        upload: Upload,
        *,
        received_at: datetime,
        on_new_participant: Callable[[], Callable[[], None] | None] | None = None,
        on_unverified: Callable[[int], None] | None = None,
    ) -> UploadResult:
        """Store one upload.

        Raises ``ParticipantErased`` (410), ``ParticipantKeyMismatch`` (403, status uploads only),
        whatever ``on_new_participant`` raises for a participant with nothing stored (the
        per-address cap; it returns what gives its token back, called if the participant existed),
        whatever ``on_unverified`` raises when told the size of a submission about to be stored
        without the participant's key (the per-participant cap), and
        ``StorageUnavailable`` when the store fails past its deadline.
        """
        pid = upload.participant_id
        stamped = {**upload.document, "serverReceivedAt": format_timestamp(received_at)}
        status_key = self.layout.status_key(pid)
        deadline = shared_deadline(self.deadline_seconds, self._clock)
        unavailable = storage_unavailable(
            "storage is unavailable right now; the upload was not stored, please retry",
            retry_after=self.retry_after,
            log_context=f"{pid}, {upload.upload_type} upload",
        )
        # The upload's writes share their last sync (a local folder: 3 barriers, not 4); all are
        # durable when the block exits, before the log line and the 200.
        try:
            with unavailable, deadline, self.store.names_synced_at_end():
                outcome = self._store_status_first(upload, stamped, status_key, on_new_participant)
                if outcome is None:
                    outcome = self._store_from_read(
                        upload, stamped, status_key, on_new_participant, on_unverified
                    )
        except _AnsweredAsClaimed as answered:
            logger.info("Upload for erased participant %s without its key: nothing stored", pid)
            return answered.result
        status_written, submission_key, verdict = outcome
        files = ([status_key] if status_written else []) + ([submission_key] if submission_key else [])
        if verdict.verified is False:
            logger.warning("⚠️ Stored a submission for %s without a valid participant key: %s", pid, files)
        else:
            logger.info("✅ Uploaded user data for %s: %s", pid, files)
        superseded = verdict.may_change_status and not status_written
        return UploadResult(pid, upload.timestamp_text, files, superseded, verdict.verified)

    def _store_status_first(
        self,
        upload: Upload,
        stamped: dict[str, Any],
        status_key: str,
        on_new_participant: Callable[[], Callable[[], None] | None] | None,
    ) -> tuple[bool, str | None, KeyVerdict] | None:
        """Write ``status.json`` without reading it first, then the submission; None: read instead.

        A participant this process knows to exist: a swap on the cached ETag. One it has not
        seen stored (not remembered, or remembered as absent): a create-if-absent, decided as for
        a new participant. Either write fails unless the stored status is still what the decision
        was made from, so it confirms that decision (and that no tombstone is there). Decisions
        that write no status (a refusal, an unverified key, a superseded status) are made from a
        fresh read (``status_cache``). Without a status cache every upload reads first.
        """
        if self.status_cache is None:
            return None
        pid = upload.participant_id
        cached = self.status_cache.get(pid)
        if cached is not None and cached.exists:
            verdict = decide(self.participant_keys, pid, cached.key_hash, upload.participant_key)
            if not verdict.may_change_status or cached.moment > upload.moment:
                return None
            return self._write_status_then_submission(upload, stamped, status_key, verdict, cached.etag)
        # Nothing stored as far as this process knows: claim the new-participant token first
        # and give it back if the participant existed, so the cap counts exactly the statuses
        # created. A spent cap leaves it to the read to tell a known participant from a new one.
        give_back = None
        if on_new_participant is not None:
            try:
                give_back = on_new_participant()
            except RateLimited:
                return None
        verdict = decide(self.participant_keys, pid, None, upload.participant_key)
        outcome = self._write_status_then_submission(upload, stamped, status_key, verdict, None)
        if outcome is None and give_back is not None:
            give_back()
        return outcome

    def _write_status_then_submission(
        self,
        upload: Upload,
        stamped: dict[str, Any],
        status_key: str,
        verdict: KeyVerdict,
        etag: str | None,
    ) -> tuple[bool, str | None, KeyVerdict] | None:
        """Swap ``status.json`` on ``etag`` (None: create it), then create the submission.

        Status first, so that an erasure made meanwhile fails the write before anything is
        stored. None when the write is refused (someone else wrote, erased, or created it):
        nothing is written yet, and the upload reads and decides again.
        """
        pid = upload.participant_id
        document = _status_document(stamped, verdict)
        confirmed_at = self.fence_clock()
        try:
            if etag is None:
                written = self.store.put(status_key, compact_json_bytes(document), if_absent=True)
            else:
                written = self.store.put(status_key, compact_json_bytes(document), if_match=etag)
        except PreconditionFailed:  # S3's 409 on a racing create too: the read tells what is there
            self._forget(pid, etag)
            return None
        moment = _document_moment(document, self.clock_skew)
        self._remember(pid, written, verdict.hash_to_store, moment, confirmed_at)
        submission_key = None
        if upload.upload_type == "submission":
            document = stamped if verdict.verified is None else {**stamped, "keyVerified": verdict.verified}
            submission_key = store_submission(self.store, self.layout, upload, document)
            self._confirm_not_erased(pid, confirmed_at, [submission_key])
        return True, submission_key, verdict

    def _store_from_read(
        self,
        upload: Upload,
        stamped: dict[str, Any],
        status_key: str,
        on_new_participant: Callable[[], Callable[[], None] | None] | None,
        on_unverified: Callable[[int], None] | None,
    ) -> tuple[bool, str | None, KeyVerdict]:
        """Read status.json, decide, create the submission, swap the status (see module docstring)."""
        pid = upload.participant_id
        confirmed_at = self.fence_clock()
        state = self._read(pid, status_key, confirmed_at)
        if state.erased and not self._may_learn_erasure(pid, state, upload.participant_key):
            # Only the participant's own browser (their key) learns of the erasure (410).
            self._answer_as_claimed(upload, state)
        if upload.upload_type == "status" and self._superseded(upload, state):
            # Nothing to write, whoever asks: the answer says nothing of the key (or claim).
            return False, None, KeyVerdict(True, None, None)
        verdict = self._decide(upload, state)
        if not state.exists and on_new_participant is not None:
            on_new_participant()
        if verdict.verified is not None:
            stamped = {**stamped, "keyVerified": verdict.verified}
        submission_key = None
        if upload.upload_type == "submission":
            before_write = on_unverified if verdict.verified is False else None
            submission_key = store_submission(self.store, self.layout, upload, stamped, before_write)
        written = [submission_key] if submission_key else []
        status_written = False
        if verdict.may_change_status:
            try:
                status_written, verdict = self._store_status(status_key, upload, stamped, state, verdict)
            except ParticipantErased:
                self._withdraw(written)  # erased since the read: this upload leaves nothing
                raise
        if not status_written:  # a swap after the submission confirms it; otherwise, the window
            self._confirm_not_erased(pid, confirmed_at, written)
        return status_written, submission_key, verdict

    def _superseded(self, upload: Upload, state: StatusState) -> bool:
        """A newer status is stored than this upload's (a tombstone is decided apart)."""
        if not state.exists or state.erased:
            return False
        return _document_moment(state.document, self.clock_skew) > upload.moment

    def _may_learn_erasure(self, participant_id: str, state: StatusState, key: str | None) -> bool:
        """Whether a request may be told of an erasure: with the key the tombstone kept, or when
        there is no key to ask for (keys off, or the participant never held one)."""
        if not self.participant_keys or state.key_hash is None:
            return True
        return key_matches(state.key_hash, participant_id, key)

    def _answer_as_claimed(self, upload: Upload, state: StatusState) -> None:
        """Raise the answer a claimed participant gets for this keyless or wrong-key upload.

        Status: superseded when older than the erasure, else 403. A submission: 200 with
        ``keyVerified: false`` under the name it would have had. Nothing is stored.
        """
        erased_at = parse_timestamp((state.document or {}).get(ERASED_AT)) or _OLDEST
        pid = upload.participant_id
        if upload.upload_type == "status":
            if erased_at > upload.moment:
                raise _AnsweredAsClaimed(UploadResult(pid, upload.timestamp_text, [], True, None))
            raise ParticipantKeyMismatch("participant key does not match; status not changed")
        name = self.layout.submission_key(pid, upload.moment)
        raise _AnsweredAsClaimed(UploadResult(pid, upload.timestamp_text, [name], False, False))

    def _decide(self, upload: Upload, state: StatusState) -> KeyVerdict:
        if state.erased:
            raise ParticipantErased(_erased_message(upload.participant_id))
        verdict = decide(self.participant_keys, upload.participant_id, state.key_hash, upload.participant_key)
        if upload.upload_type == "status" and not verdict.may_change_status:
            raise ParticipantKeyMismatch("participant key does not match; status not changed")
        return verdict

    def _store_status(
        self, key: str, upload: Upload, stamped: dict[str, Any], state: StatusState, verdict: KeyVerdict
    ) -> tuple[bool, KeyVerdict]:
        """Compare-and-swap ``status.json`` from the state read first; (written?, final verdict).

        Not written when a newer status is stored, or when a racing upload claimed the participant
        with another key in the meantime (the verdict then says so).
        """
        pid = upload.participant_id
        for _ in range(MAX_STATUS_ATTEMPTS):
            document = _status_document(stamped, verdict)
            body = compact_json_bytes(document)
            try:
                if state.stored is None:
                    etag = self.store.put(key, body, if_absent=True)
                elif _stored_moment(state.stored.body, self.clock_skew) > upload.moment:
                    return False, verdict
                else:
                    etag = self.store.put(key, body, if_match=state.stored.etag)
            except PreconditionFailed:
                # Another writer got there first: look again, and decide again (it may have
                # claimed the participant, or the research team may have erased it).
                state = self._read(pid, key)
                if state.erased:
                    raise ParticipantErased(_erased_message(pid)) from None
                again = decide(self.participant_keys, pid, state.key_hash, upload.participant_key)
                if not again.may_change_status:
                    return False, again
                verdict = again
                continue
            self._remember(pid, etag, verdict.hash_to_store, _document_moment(document, self.clock_skew))
            return True, verdict
        raise StorageError(f"status.json for {upload.participant_id} is too contended")

    def trial_verdict(self, participant_id: str, key: str | None) -> TrialVerdict:
        """Whether a trial's key is verified, and when that was confirmed; ``ParticipantErased`` if erased.

        One read of ``status.json``. A trial never claims a participant nor changes its status:
        an experiment sends trials before any status, and a forged trial must not lock anyone out.
        Without that read when this process saw the status within ``trial_fresh_seconds`` and
        the key is accepted; a ``keyVerified: false`` decision is always confirmed by the read.
        The caller passes ``confirmed_at`` to ``confirm_not_erased`` once the trial is written.
        """
        seen_here = False  # this process read or wrote the participant before: not new
        if self.status_cache is not None:
            seen_here = self.status_cache.get(participant_id) is not None
            cached = self.status_cache.fresh(participant_id, self.trial_fresh_seconds)
            if cached is not None:
                verdict = self._trial_key_verdict(participant_id, cached.key_hash, key)
                if verdict is not False:
                    return TrialVerdict(verdict, cached.confirmed_at, True)
        confirmed_at = self.fence_clock()
        with storage_unavailable(retry_after=self.retry_after, log_context=f"{participant_id}, status read"):
            state = self._read(participant_id, self.layout.status_key(participant_id), confirmed_at)
            if state.erased:
                if not self._may_learn_erasure(participant_id, state, key):  # as if claimed
                    return TrialVerdict(False, confirmed_at, True, erased=True)
                raise ParticipantErased(_erased_message(participant_id))
            # A participant with trials only has no status.json: one listing (the first time
            # this process meets them) tells a known participant from a new one.
            known = state.exists or seen_here or self._has_objects(participant_id)
        return TrialVerdict(self._trial_key_verdict(participant_id, state.key_hash, key), confirmed_at, known)

    def _has_objects(self, participant_id: str) -> bool:
        return next(iter(self.store.list(self.layout.participant_dir(participant_id))), None) is not None

    def fence_clock(self) -> float:
        """The clock confirmations are measured on: the status cache's when there is one."""
        return self.status_cache.clock() if self.status_cache is not None else self._clock()

    def confirm_not_erased(self, participant_id: str, confirmed_at: float, written: list[str]) -> None:
        """After writing ``written``: raise ``ParticipantErased`` (having removed them) if erased since.

        The upload's side of the erasure fence (``collector.tombstone``): writes that completed
        within ``CONFIRM_WINDOW_SECONDS`` of ``confirmed_at`` need nothing more, later ones read
        ``status.json`` again. 503 when the store fails.
        """
        context = f"{participant_id}, erasure check"
        with storage_unavailable(retry_after=self.retry_after, log_context=context):
            self._confirm_not_erased(participant_id, confirmed_at, written)

    def _confirm_not_erased(self, participant_id: str, confirmed_at: float, written: list[str]) -> None:
        if not written or self.fence_clock() - confirmed_at <= CONFIRM_WINDOW_SECONDS:
            return
        if self._read(participant_id, self.layout.status_key(participant_id)).erased:
            self._withdraw(written)
            raise ParticipantErased(_erased_message(participant_id))

    def _withdraw(self, written: list[str]) -> None:
        """Delete what this upload wrote after its participant was erased (the erasure may be done)."""
        for key in written:
            self.store.delete(key)

    def _trial_key_verdict(
        self, participant_id: str, stored_hash: str | None, key: str | None
    ) -> bool | None:
        if not self.participant_keys or stored_hash is None:
            return None
        return key_matches(stored_hash, participant_id, key)

    def _read_state(self, participant_id: str, confirmed_at: float | None = None) -> StatusState:
        with storage_unavailable(retry_after=self.retry_after, log_context=f"{participant_id}, status read"):
            return self._read(participant_id, self.layout.status_key(participant_id), confirmed_at)

    def _read(self, participant_id: str, status_key: str, confirmed_at: float | None = None) -> StatusState:
        """Read status.json, and remember what it holds (a tombstone is never remembered).

        ``confirmed_at``: when the read started (the fence clock), taken before the call.
        """
        if confirmed_at is None:
            confirmed_at = self.fence_clock()
        state = StatusState.of(self.store.get_or_none(status_key))
        if state.erased:
            self._forget(participant_id)
        else:
            etag = state.stored.etag if state.stored is not None else None
            moment = _document_moment(state.document, self.clock_skew)
            self._remember(participant_id, etag, state.key_hash, moment, confirmed_at)
        return state

    def _remember(
        self,
        participant_id: str,
        etag: str | None,
        key_hash: str | None,
        moment: datetime,
        confirmed_at: float | None = None,
    ) -> None:
        if self.status_cache is not None:
            self.status_cache.remember(participant_id, etag, key_hash, moment, confirmed_at)

    def _forget(self, participant_id: str, etag: str | None = None) -> None:
        if self.status_cache is not None:
            self.status_cache.forget(participant_id, etag)

    def forget(self, participant_id: str) -> None:
        """Drop what this process remembers of the participant (after an erasure or key release here)."""
        self._forget(participant_id)

    def read_status(self, participant_id: str, key: str | None) -> dict[str, Any]:
        """The participant's stored status without private fields, for restore.

        Raises ``NotFound`` with one message for an unknown, erased, or differently keyed
        participant, so the answer tells a guesser nothing.
        """
        status_key = self.layout.status_key(participant_id)
        with storage_unavailable(retry_after=self.retry_after, log_context=f"{participant_id}, status read"):
            stored = self.store.get_or_none(status_key)
        if self.participant_keys:
            # The same work whether the ID is unknown or known with a wrong key: find the hash
            # by a scan of the raw bytes (none for an unknown ID) and compare it in constant
            # time; the document is parsed only once the key matched (docs/trust-model.md).
            scanned = _scan_key_hash(stored.body if stored is not None else b"")
            if not key_matches(scanned or "0" * 64, participant_id, key) or scanned is None:
                raise NotFound(NOT_FOUND_MESSAGE)
        state = StatusState.of(stored)
        if self.participant_keys and state.key_hash != scanned:
            raise NotFound(NOT_FOUND_MESSAGE)  # the scan found a nested field, not the real hash
        if state.document is None or state.erased:
            raise NotFound(NOT_FOUND_MESSAGE)
        return {k: v for k, v in state.document.items() if k not in PRIVATE_STATUS_FIELDS}


@dataclass(frozen=True)
class TrialVerdict:
    """What decided a trial: its key verdict, when the status was confirmed, whether one exists."""

    verified: bool | None  # None: no key in play (unclaimed, or PARTICIPANT_KEYS=off)
    confirmed_at: float  # fence clock: when status.json was seen without a tombstone
    participant_known: bool  # a status.json (or a remembered one) exists
    # Erased, and the request lacks the key: answer as for a claimed participant, store nothing.
    erased: bool = False


class _AnsweredAsClaimed(Exception):
    """Carries the answer for an erased participant's keyless upload out of the storage block."""

    def __init__(self, result: UploadResult) -> None:
        super().__init__(result.participant_id)
        self.result = result


_HASH_MARK = f'"{HASH_FIELD}":"'.encode()


def _scan_key_hash(body: bytes) -> str | None:
    """The key hash a status body holds, found without parsing it (one reverse scan).

    The collector writes the hash as the status's last field, compact, so the last occurrence
    is the top-level one; ``read_status`` still checks it against the parsed document.
    """
    at = body.rfind(_HASH_MARK)
    if at < 0:
        return None
    start = at + len(_HASH_MARK)
    candidate = body[start : start + 64]
    try:
        text = candidate.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if len(text) == 64 and body[start + 64 : start + 65] == b'"' else None


def _erased_message(participant_id: str) -> str:
    return f"participant {participant_id} was erased at the research team's request; nothing was stored"


def _status_document(stamped: dict[str, Any], verdict: KeyVerdict) -> dict[str, Any]:
    """The status.json an upload writes: its document without the submission, with the key hash."""
    document = {k: v for k, v in stamped.items() if k not in ("submissionData", "keyVerified")}
    document.pop(HASH_FIELD, None)
    if verdict.hash_to_store is not None:
        document[HASH_FIELD] = verdict.hash_to_store
    return document


_OLDEST = datetime.min.replace(tzinfo=UTC)


def _stored_moment(body: bytes, clock_skew: timedelta) -> datetime:
    """When the stored status was made; an unreadable one counts as oldest, so it gets replaced."""
    try:
        stored = json.loads(body)
    except ValueError:
        return _OLDEST
    return _document_moment(stored, clock_skew)


def _document_moment(stored: Any, clock_skew: timedelta) -> datetime:
    """``_stored_moment`` of a decoded status document (None or not an object: oldest).

    A stored timestamp further than ``clock_skew`` ahead of its own receipt time (a status from
    before this rule, e.g. one dated 2099) counts by its receipt time, so it cannot freeze the status.
    """
    oldest = _OLDEST
    try:
        claimed = parse_timestamp(stored.get("timestamp"))
        received = parse_timestamp(stored.get("serverReceivedAt"))
    except (ValueError, AttributeError):
        return oldest
    if claimed is not None and received is not None and claimed > received + clock_skew:
        return received
    return claimed or received or oldest
