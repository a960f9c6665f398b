"""Participant keys, trust on first use (docs/trust-model.md).

The browser makes a random key per participant and sends it with every upload and restore. The
collector keeps only a hash of it, in ``status.json``; the first upload carrying a key claims an
unclaimed participant. Everything here is pure: the upload service reads ``status.json`` once
(the read its compare-and-swap needs anyway) and asks ``decide`` what the upload may do, so a key
costs no extra storage request.

The release of a key (a participant changed device) lives here too, shared by the CLI and the
dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .audit import write_record
from .compact_json import compact_json_bytes
from .errors import NotFound
from .keys import KeyLayout, format_timestamp
from .server_fields import KEY_HASH
from .storage import ObjectStore, PreconditionFailed, StorageError, StoredObject
from .tombstone import is_tombstone

logger = logging.getLogger(__name__)

KEY_FIELD = "participantKey"
HASH_FIELD = KEY_HASH
PARTICIPANT_KEY_PATTERN = r"^[A-Za-z0-9_-]{16,256}$"
_KEY = re.compile(PARTICIPANT_KEY_PATTERN)
_HASH_PURPOSE = b"participant-key-v1\0"
KEY_RELEASES = "key-releases"
_MAX_RELEASE_ATTEMPTS = 50


def is_valid_participant_key(value: object) -> bool:
    return isinstance(value, str) and _KEY.fullmatch(value) is not None


def key_hash(participant_id: str, key: str) -> str:
    """Hex SHA-256 of ``"participant-key-v1\\0" + participantId + "\\0" + key``.

    The participant ID is mixed in so one key hash cannot be replayed for another participant.
    A plain hash (not a slow KDF) is enough: the key is 128+ random bits, not a password.
    """
    material = _HASH_PURPOSE + participant_id.encode() + b"\0" + key.encode()
    return hashlib.sha256(material).hexdigest()


def key_matches(stored_hash: str, participant_id: str, key: str | None) -> bool:
    """Constant-time comparison; a missing or malformed key never matches."""
    candidate = key_hash(participant_id, key) if is_valid_participant_key(key) else ""
    # Hash something even when there is no key, so a wrong key takes as long as a missing one.
    if not candidate:
        key_hash(participant_id, "-" * 22)
    return hmac.compare_digest(candidate, stored_hash)


@dataclass(frozen=True)
class StatusState:
    """What the one read of ``status.json`` found."""

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
        value = (self.document or {}).get(HASH_FIELD)
        return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class KeyVerdict:
    """What an upload may do, given the stored hash and the key it carries."""

    may_change_status: bool
    verified: bool | None  # True: right key (or claims); False: wrong/missing; None: keys not in play
    hash_to_store: str | None  # participantKeyHash for the status.json this upload writes


def decide(enabled: bool, participant_id: str, stored_hash: str | None, key: str | None) -> KeyVerdict:
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


# --- Release ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRelease:
    participant_id: str
    released: bool  # False: the participant held no key (nothing to release; still recorded)
    audit_key: str


def release_key(
    store: ObjectStore,
    layout: KeyLayout,
    participant_id: str,
    *,
    reason: str,
    by: str,
    now: datetime | None = None,
) -> KeyRelease:
    """Remove ``participantKeyHash`` from the participant's status (compare-and-swap) and record it.

    The audit record is written first (create-if-absent), so no release goes unrecorded; it holds
    who, when and why, never the key, its hash or any participant data. Raises ``NotFound`` for
    an unknown or erased participant and ``StorageError`` when the store fails.
    """
    reason = reason.strip()
    if not reason:
        raise ValueError("a reason is required")
    moment = now or datetime.now(UTC)
    status_key = layout.status_key(participant_id)
    state = StatusState.of(store.get_or_none(status_key))
    if not state.exists or state.erased:
        raise NotFound(f"no participant {participant_id} to release")
    audit_key = layout.audit_key(KEY_RELEASES, participant_id, moment, secrets.token_hex(4))
    record = {
        "action": "key-release",
        "participantId": participant_id,
        "releasedAt": format_timestamp(moment),
        "by": by,
        "reason": reason[:1000],
        "heldKey": state.key_hash is not None,
    }
    write_record(store, audit_key, record)
    for _ in range(_MAX_RELEASE_ATTEMPTS):
        if state.key_hash is None or state.document is None or state.stored is None:
            logger.info("Key release for %s: it held no key (%s)", participant_id, audit_key)
            return KeyRelease(participant_id, False, audit_key)
        released = {k: v for k, v in state.document.items() if k != HASH_FIELD}
        body = compact_json_bytes(released)
        try:
            store.put(status_key, body, if_match=state.stored.etag)
        except PreconditionFailed:
            state = StatusState.of(store.get_or_none(status_key))  # an upload got there first
            if state.erased or not state.exists:
                raise NotFound(f"no participant {participant_id} to release") from None
            continue
        logger.info("Key released for %s by %s (%s)", participant_id, by, audit_key)
        return KeyRelease(participant_id, True, audit_key)
    raise StorageError(f"status.json for {participant_id} is too contended to release its key")
