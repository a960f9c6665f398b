"""Stores trials exactly once per (participant, session, trial index), with one write per trial.

Only a trial whose key was accepted (or for a participant who holds no key) goes to the trial's
key. One sent without the key of a claimed participant is kept apart, under a key of its own
derived from its content (``KeyLayout.unverified_trial_key``): a forged trial sent first can
never take a real trial's place, and the real one is never answered ``duplicate`` because of it.

The key is derived from the trial itself (``trials/{sessionId}/{trialIndex:06d}.json``), so the
store's create-if-absent is the whole of exactly-once: the first write of a (session, index)
creates the object, and every later send of it (a retry, a second tab, another collector
process) finds the key taken and is answered with that same key. Nothing here is remembered in
memory, so any number of collector processes may share a bucket.

Requests per trial: one PUT when new; a PUT and a GET when the key is already taken.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..compact_json import compact_json_bytes
from ..errors import storage_unavailable
from ..keys import KeyLayout, format_timestamp
from ..storage import ObjectStore
from ..storage.create_once import create_once
from ..storage.retrying import shared_deadline
from .model import ENVELOPE_FIELDS, TrialUpload

logger = logging.getLogger(__name__)

# An S3 409 (a racing conditional write in flight) leaves the key free if that write fails;
# the PUT is tried again, a bounded number of times.
MAX_TRIAL_PUTS = 5


@dataclass(frozen=True)
class TrialResult:
    participant_id: str
    timestamp: str
    key: str
    duplicate: bool  # the key held a different trial: the first one is kept, this one is not stored
    key_verified: bool

    def as_response(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "success",
            "participantId": self.participant_id,
            "timestamp": self.timestamp,
            "filesUploaded": [self.key],
        }
        if not self.key_verified:
            body["keyVerified"] = False
        if self.duplicate:
            body["duplicate"] = True
            body["message"] = (
                "a different trial with this sessionId and trialIndex was stored first; "
                "it is kept and this one was not stored"
            )
        return body


class TrialService:
    """Writes validated trial uploads into a store under a key layout."""

    def __init__(
        self,
        store: ObjectStore,
        layout: KeyLayout,
        *,
        retry_after: int,
        deadline_seconds: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.layout = layout
        self.retry_after = retry_after
        self.deadline_seconds = deadline_seconds
        self._clock = clock

    def store_trial(
        self,
        trial: TrialUpload,
        *,
        received_at: datetime,
        verified: bool = True,
        before_write: Callable[[int], None] | None = None,
    ) -> TrialResult:
        """Store one trial unless its (session, index) is already stored; never touches status.json.

        ``verified`` is the participant-key check's outcome, made by the caller from the
        status.json it read first (that read also finds an erased participant, who gets a 410
        before this is called). False stores the trial marked ``"keyVerified": false``.
        ``before_write`` is told the stored body's size first, and may refuse by raising.
        Raises ``StorageUnavailable`` when the store fails past its deadline.
        """
        key = self._key(trial, verified)
        document = stored_document(trial, received_at=received_at, verified=verified)
        deadline = shared_deadline(self.deadline_seconds, self._clock)
        unavailable = storage_unavailable(
            "storage is unavailable right now; the trial was not stored, please retry",
            retry_after=self.retry_after,
            log_context=f"{trial.participant_id}, trial {key}",
        )
        body = compact_json_bytes(document)
        if before_write is not None:
            before_write(len(body))
        with unavailable, deadline:
            existing = create_once(self.store, key, body, attempts=MAX_TRIAL_PUTS)
        duplicate = existing is not None and not same_trial(existing.body, trial)
        if duplicate:
            logger.warning("Trial %s already holds a different trial; the first one is kept", key)
        return TrialResult(trial.participant_id, trial.timestamp_text(received_at), key, duplicate, verified)

    def answer_without_storing(self, trial: TrialUpload, *, received_at: datetime) -> TrialResult:
        """The answer an unverified trial gets, storing nothing: for an erased participant asked
        without their key, who must look like any claimed participant (docs/trust-model.md)."""
        key = self._key(trial, verified=False)
        return TrialResult(trial.participant_id, trial.timestamp_text(received_at), key, False, False)

    def _key(self, trial: TrialUpload, verified: bool) -> str:
        if verified:
            return self.layout.trial_key(trial.participant_id, trial.session_id, trial.trial_index)
        suffix = content_suffix(trial)
        return self.layout.unverified_trial_key(
            trial.participant_id, trial.session_id, trial.trial_index, suffix
        )


def stored_document(trial: TrialUpload, *, received_at: datetime, verified: bool) -> dict[str, Any]:
    """The upload as sent (already without the key and server fields), plus what the server adds."""
    document = dict(trial.document)
    document["serverReceivedAt"] = format_timestamp(received_at)
    if not verified:
        document["keyVerified"] = False
    return document


def same_trial(stored_body: bytes, trial: TrialUpload) -> bool:
    """Is the stored object this trial (a retry or another tab's send)? By content, envelope aside.

    The uploadId and timestamp are left out on purpose: two tabs of one run send the same trial
    with different ones, and it is still the same trial.
    """
    try:
        stored = json.loads(stored_body)
    except ValueError:
        return False
    if not isinstance(stored, dict):
        return False
    return _content(stored) == _content(trial.document)


def content_suffix(trial: TrialUpload) -> str:
    """8 hex of the trial's content (envelope aside): an unverified trial's name, the same for its retries."""
    return hashlib.sha256(compact_json_bytes(_content(trial.document), sort_keys=True)).hexdigest()[:8]


def _content(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in ENVELOPE_FIELDS}
