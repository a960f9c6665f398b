"""Participant keys, trust on first use (docs/trust-model.md).

The browser makes a random key per participant and sends it with every upload and restore. The
collector keeps only a hash of it, in ``status.json``; the first upload carrying a key claims an
unclaimed participant. This module holds the key's hash and its constant-time check; what an
upload may do with a key is decided with everything else in ``collector.pipeline.decide``
(``key_verdict``), from the ``status.json`` the upload reads or writes anyway, so a key costs no
extra storage request.

The release of a key (a participant changed device) lives here too, shared by the CLI and the
dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from .audit import write_record
from .compact_json import compact_json_bytes
from .errors import NotFound
from .keys import KeyLayout, format_timestamp
from .pipeline.state import StatusState
from .server_fields import KEY_HASH
from .storage import ObjectStore, PreconditionFailed, StorageError

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
