"""Research-team records under ``{prefix}/audit/``: append-only, never participant data.

Each record is written once, create-if-absent, at ``KeyLayout.audit_key``:
``{prefix}/audit/{kind}/{YYYY-MM-DD_HH-MM-SS}_{participantId}_{8 hex}.json``; an unfinished
operation's intent beside them (``KeyLayout.erasure_intent_key``). Every write under
``{prefix}/audit/`` goes through here (docs/bucket-layout.md §5).
"""

from __future__ import annotations

import json
from typing import Any

from .storage import ObjectStore


def encode_record(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_record(store: ObjectStore, key: str, record: dict[str, Any]) -> None:
    """Create the record; ``AlreadyExists`` if a record already has that key (never overwritten)."""
    store.put(key, encode_record(record), if_absent=True)


def save_intent(store: ObjectStore, key: str, intent: dict[str, Any]) -> None:
    """Write an operation's intent (``KeyLayout.erasure_intent_key``), replacing what it held:
    unlike a record, an intent grows while its operation runs and is deleted when it ends."""
    store.put(key, encode_record(intent))
