"""Step 3 of the pipeline: ``decide(state, upload)``, pure, returns a plan, a refusal, or "read first".

Everything an upload may do is decided here, from the participant's state (``pipeline.state``)
and the upload alone: no storage request, no clock, no memory. The rules, each stated once:

- **Erased.** A tombstone refuses every upload (410), but only a request with the key the
  tombstone kept (or when there is no key to ask for) learns of it; any other is answered as for
  a claimed participant without its key, and nothing is stored (docs/trust-model.md).
- **The participant key** (trust on first use, ``key_verdict``): a claimed participant needs
  its key; the first upload with a key claims an unclaimed one. A status upload without it is
  refused (403); a submission or trial without it is kept apart, marked ``keyVerified: false``.
  A trial never claims anyone.
- **Newest wins.** ``status.json`` is replaced only by an upload whose moment is not older than
  the stored status's (``state.status_moment``); an older status upload is answered
  ``statusSuperseded`` and writes nothing.
- **New participant?** One whose ``status.json`` does not exist (and, for a trial, whose folder
  is empty and whom this process never met: ``ParticipantState.known``). Only a new participant
  is counted by the per-address cap and admitted to a study (closed, full).
- **An assumed state** (not read just now) decides only a plan that starts with the conditional
  write of ``status.json`` that confirms it; any other decision asks to read first (``READ_FIRST``).
  A trial writes no status: it may use a state confirmed within ``CONFIRM_WINDOW_SECONDS``, and
  only to accept its key.

The plan lists the writes in the one order every upload keeps: ``status.json`` first (its
compare-and-swap or create-if-absent fails against a tombstone, so nothing is written for an
erased participant), then the submission or trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from ..compact_json import compact_json_bytes
from ..errors import ParticipantErased, ParticipantKeyMismatch, Refusal
from ..keys import KeyLayout, format_timestamp
from ..models import Upload
from ..participant_keys import key_hash, key_matches
from ..server_fields import KEY_HASH, KEY_VERIFIED, RECEIVED_AT
from ..trials.model import TrialUpload
from ..trials.service import content_suffix, stored_document
from .state import OLDEST, ParticipantState, status_moment


@dataclass(frozen=True)
class Rules:
    """What a decision depends on besides the state and the upload."""

    participant_keys: bool  # PARTICIPANT_KEYS
    layout: KeyLayout
    clock_skew: timedelta  # CLOCK_SKEW_SECONDS: how far ahead of its receipt a timestamp may be


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """What an upload may do, given the stored hash and the key it carries."""

    may_change_status: bool
    verified: bool | None  # True: right key (or claims); False: wrong/missing; None: keys not in play
    hash_to_store: str | None  # participantKeyHash for the status.json this upload writes


def key_verdict(enabled: bool, participant_id: str, stored_hash: str | None, key: str | None) -> KeyVerdict:
    """Trust on first use: a claimed participant needs its key; an unclaimed one is claimed by a key."""
    if not enabled:
        # Keys ignored, but a claim made while they were on is carried forward, not lost.
        return KeyVerdict(True, None, stored_hash)
    if stored_hash is not None:
        if key_matches(stored_hash, participant_id, key):
            return KeyVerdict(True, True, stored_hash)
        return KeyVerdict(False, False, None)
    if key is not None:
        return KeyVerdict(True, True, key_hash(participant_id, key))
    return KeyVerdict(True, None, None)  # legacy, keyless participant: open until a key claims it


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """Write ``status.json``: a compare-and-swap on ``etag``, or a create-if-absent when None."""

    body: bytes
    etag: str | None
    key_hash: str | None
    moment: datetime


@dataclass(frozen=True, slots=True)
class SubmissionWrite:
    """Create the submission under its first free name (``submission_names``)."""

    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TrialWrite:
    """Create the trial under its key; a different trial already there is kept (``duplicate``)."""

    key: str
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Plan:
    """The writes of one upload, in order (status, then the item), and what its answer says."""

    status: StatusWrite | None = None
    item: SubmissionWrite | TrialWrite | None = None
    verified: bool | None = None  # the answer's keyVerified (False: stored without the key)
    # A new participant: the per-address cap and the study's admission come before any write.
    admit_new: bool = False
    superseded: bool = False  # a status upload older than the stored status: nothing written
    # Erased, asked without the key the tombstone kept: answered with this name, nothing stored.
    as_claimed: str | None = None


class _ReadFirst:
    def __repr__(self) -> str:
        return "READ_FIRST"


# The state was assumed, and the decision would write no status.json to confirm it: read first.
READ_FIRST: Final = _ReadFirst()

Decision = Plan | Refusal | _ReadFirst


def decide(
    state: ParticipantState, upload: Upload | TrialUpload, received_at: datetime, rules: Rules
) -> Decision:
    """What ``upload`` may do to a participant in ``state`` (see the module docstring)."""
    if isinstance(upload, TrialUpload):
        return _decide_trial(state, upload, received_at, rules)
    pid = upload.participant_id
    stamped = {**upload.document, RECEIVED_AT: format_timestamp(received_at)}
    if state.erased:
        if not _may_learn_erasure(state, pid, upload.participant_key, rules):
            return _as_claimed(state, upload, rules)
        return ParticipantErased.refusal(erased_message(pid))
    newest = not state.moment > upload.moment  # newest wins: never replace a newer status
    if upload.upload_type == "status" and not newest:
        # Nothing to write, whoever asks: decided before the key, so the answer says nothing of it.
        return Plan(superseded=True) if state.read else READ_FIRST
    verdict = key_verdict(rules.participant_keys, pid, state.key_hash, upload.participant_key)
    status = None
    if verdict.may_change_status and newest:
        document = _status_document(stamped, verdict)
        moment = status_moment(document, rules.clock_skew)
        status = StatusWrite(compact_json_bytes(document), state.etag, verdict.hash_to_store, moment)
    if not state.read and status is None:
        return READ_FIRST  # only a conditional status write may confirm an assumed state
    if upload.upload_type == "status":
        if not verdict.may_change_status:
            return ParticipantKeyMismatch.refusal(KEY_MISMATCH_MESSAGE)
        return Plan(status=status, verified=verdict.verified, admit_new=not state.exists)
    if verdict.verified is not None:
        stamped[KEY_VERIFIED] = verdict.verified
    return Plan(
        status=status,
        item=SubmissionWrite(stamped),
        verified=verdict.verified,
        admit_new=not state.exists,
        superseded=verdict.may_change_status and not newest,
    )


def _decide_trial(
    state: ParticipantState, trial: TrialUpload, received_at: datetime, rules: Rules
) -> Decision:
    """A trial never writes status.json: it never claims a participant nor changes its status
    (an experiment sends trials before any status, and a forged trial must not lock anyone out)."""
    pid = trial.participant_id
    if state.erased:
        if not _may_learn_erasure(state, pid, trial.participant_key, rules):
            return Plan(verified=False, as_claimed=_trial_key(trial, False, rules))
        return ParticipantErased.refusal(erased_message(pid))
    verified = None
    if rules.participant_keys and state.key_hash is not None:
        verified = key_matches(state.key_hash, pid, trial.participant_key)
    if not state.read and verified is False:
        return READ_FIRST  # a keyVerified: false decision is always confirmed by a read
    accepted = verified is not False
    document = stored_document(trial, received_at=received_at, verified=accepted)
    return Plan(
        item=TrialWrite(_trial_key(trial, accepted, rules), document),
        verified=verified,
        admit_new=not state.known,
    )


def _trial_key(trial: TrialUpload, verified: bool, rules: Rules) -> str:
    """A verified trial's key is its (session, index); an unverified one is kept apart, by content."""
    layout = rules.layout
    if verified:
        return layout.trial_key(trial.participant_id, trial.session_id, trial.trial_index)
    suffix = content_suffix(trial)
    return layout.unverified_trial_key(trial.participant_id, trial.session_id, trial.trial_index, suffix)


def _may_learn_erasure(state: ParticipantState, participant_id: str, key: str | None, rules: Rules) -> bool:
    """With the key the tombstone kept, or when there is no key to ask for (keys off, or the
    participant never held one)."""
    if not rules.participant_keys or state.key_hash is None:
        return True
    return key_matches(state.key_hash, participant_id, key)


def _as_claimed(state: ParticipantState, upload: Upload, rules: Rules) -> Decision:
    """The answer a claimed participant gets for a keyless or wrong-key upload; nothing is stored.

    Status: superseded when older than the erasure, else 403. A submission: 200 with
    ``keyVerified: false`` under the name it would have had.
    """
    if upload.upload_type == "status":
        if (state.erased_at or OLDEST) > upload.moment:
            return Plan(superseded=True)
        return ParticipantKeyMismatch.refusal(KEY_MISMATCH_MESSAGE)
    name = rules.layout.submission_key(upload.participant_id, upload.moment)
    return Plan(verified=False, as_claimed=name)


def _status_document(stamped: dict[str, Any], verdict: KeyVerdict) -> dict[str, Any]:
    """The status.json an upload writes: its document without the submission, with the key hash.

    The hash goes last: ``read_status`` finds it by one reverse scan of the bytes.
    """
    document = {k: v for k, v in stamped.items() if k not in ("submissionData", KEY_VERIFIED, KEY_HASH)}
    if verdict.hash_to_store is not None:
        document[KEY_HASH] = verdict.hash_to_store
    return document


KEY_MISMATCH_MESSAGE = "participant key does not match; status not changed"


def erased_message(participant_id: str) -> str:
    return f"participant {participant_id} was erased at the research team's request; nothing was stored"
