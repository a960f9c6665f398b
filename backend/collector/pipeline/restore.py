"""Restore: a participant's stored status, read back with their key (``POST /api/user-status``).

Not an upload, but the same ``status.json`` and the same key rule. An unknown participant, an
erased one, and a missing or wrong key all get one ``NotFound``, and the same work on the way
to it, so the answer tells a guesser nothing (docs/trust-model.md).
"""

from __future__ import annotations

from typing import Any

from ..errors import NotFound
from ..keys import KeyLayout
from ..models import PRIVATE_STATUS_FIELDS
from ..participant_keys import key_matches
from ..server_fields import KEY_HASH
from ..storage import ObjectNotFound, ObjectStore
from .state import StatusState

NOT_FOUND_MESSAGE = "no status stored for this participant"
_HASH_MARK = f'"{KEY_HASH}":"'.encode()


async def read_status(
    store: ObjectStore, layout: KeyLayout, participant_keys: bool, participant_id: str, key: str | None
) -> dict[str, Any]:
    """The participant's stored status without private fields; ``NotFound`` otherwise (one message)."""
    try:
        stored = await store.get_async(layout.status_key(participant_id))
    except ObjectNotFound:
        stored = None
    scanned = None
    if participant_keys:
        # The same work whether the ID is unknown or known with a wrong key: find the hash by a
        # scan of the raw bytes (none for an unknown ID) and compare it in constant time; the
        # document is parsed only once the key matched.
        scanned = scan_key_hash(stored.body if stored is not None else b"")
        if not key_matches(scanned or "0" * 64, participant_id, key) or scanned is None:
            raise NotFound(NOT_FOUND_MESSAGE)
    state = StatusState.of(stored)
    if participant_keys and state.key_hash != scanned:
        raise NotFound(NOT_FOUND_MESSAGE)  # the scan found a nested field, not the real hash
    if state.document is None or state.erased:
        raise NotFound(NOT_FOUND_MESSAGE)
    return {k: v for k, v in state.document.items() if k not in PRIVATE_STATUS_FIELDS}


def scan_key_hash(body: bytes) -> str | None:
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
