"""The erasure tombstone: what ``status.json`` holds once a participant's data was erased.

``{"participantId": id, "erased": true, "erasedAt": "<UTC ISO>"}``, plus the participant's
``participantKeyHash`` when they held a key, and nothing else (docs/bucket-layout.md §6). Uploads
and restore already read ``status.json``, so recognising the tombstone there costs the common
upload path no extra storage request. The key hash stays so that only the participant's own
browser learns of the erasure (410); a request without that key is answered as for any claimed
participant (docs/trust-model.md).

Only the collector writes ``erased`` (``server_fields``): uploads never store it. A status that
holds ``erased`` beside ``serverReceivedAt`` was written by an upload (before uploads dropped the
field), never by an erasure, so it is not a tombstone.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .compact_json import compact_json_bytes
from .keys import format_timestamp
from .server_fields import ERASED, ERASED_AT, KEY_HASH, RECEIVED_AT

# The fence between an erasure and the uploads racing it (docs/reliability.md, "Erasure is final").
# Every upload that stores an object for a participant first confirms that status.json holds no
# tombstone (its read, its compare-and-swap or create-if-absent of status.json, or a cache entry
# confirmed that way), and its writes must complete within CONFIRM_WINDOW_SECONDS of the start
# of that confirmation; one that took longer reads status.json again after writing, and on
# finding the tombstone removes what it wrote and answers 410. The erasure, after writing the
# tombstone, waits ERASURE_SETTLE_SECONDS (a setting, 1.25 s by default, refused at start unless
# longer than the window) before its last listing: every object an upload confirmed before the
# tombstone is then already listed and deleted, and none can appear afterwards. Both sides
# measure elapsed time on their own monotonic clock, so processes need no shared clock.
# The window is a protocol constant, not a setting: every process of a collector must agree on
# it, and a settle time set for one command cannot shorten it.
CONFIRM_WINDOW_SECONDS = 1.0


def tombstone_document(
    participant_id: str, erased_at: datetime, key_hash: str | None = None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "participantId": participant_id,
        ERASED: True,
        ERASED_AT: format_timestamp(erased_at),
    }
    if key_hash is not None:
        document[KEY_HASH] = key_hash
    return document


def encode_tombstone(participant_id: str, erased_at: datetime, key_hash: str | None = None) -> bytes:
    return compact_json_bytes(tombstone_document(participant_id, erased_at, key_hash))


def is_tombstone(document: Any) -> bool:
    """True for a decoded status document that marks an erased participant."""
    return isinstance(document, dict) and document.get(ERASED) is True and RECEIVED_AT not in document


def body_is_tombstone(body: bytes) -> bool:
    """The same test on a stored body; anything unreadable is not a tombstone."""
    try:
        return is_tombstone(json.loads(body))
    except (UnicodeDecodeError, ValueError):
        return False
