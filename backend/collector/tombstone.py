"""The erasure tombstone: what ``status.json`` holds once a participant's data was erased.

``{"participantId": id, "erased": true, "erasedAt": "<UTC ISO>"}`` and nothing else
(docs/bucket-layout.md). Uploads and restore already read ``status.json``, so recognising the
tombstone there costs the common upload path no extra storage request.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .keys import format_timestamp


def tombstone_document(participant_id: str, erased_at: datetime) -> dict[str, Any]:
    return {"participantId": participant_id, "erased": True, "erasedAt": format_timestamp(erased_at)}


def encode_tombstone(participant_id: str, erased_at: datetime) -> bytes:
    return json.dumps(tombstone_document(participant_id, erased_at), separators=(",", ":")).encode()


def is_tombstone(document: Any) -> bool:
    """True for a decoded status document that marks an erased participant."""
    return isinstance(document, dict) and document.get("erased") is True


def body_is_tombstone(body: bytes) -> bool:
    """The same test on a stored body; anything unreadable is not a tombstone."""
    try:
        return is_tombstone(json.loads(body))
    except (UnicodeDecodeError, ValueError):
        return False
