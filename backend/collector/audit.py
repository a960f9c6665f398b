"""Research-team records under ``{prefix}/audit/``: append-only, never participant data.

Each record is written once, create-if-absent, at
``{prefix}/audit/{kind}/{YYYY-MM-DD_HH-MM-SS}_{participantId}_{8 hex}.json`` (docs/bucket-layout.md).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .keys import KeyLayout
from .storage import ObjectStore


def audit_dir(layout: KeyLayout, kind: str) -> str:
    return f"{layout.audit_root}{kind}/"


def audit_record_key(layout: KeyLayout, kind: str, participant_id: str, moment: datetime, token: str) -> str:
    """The record's key; ``token`` (8 hex) keeps two records of the same second apart."""
    return layout.audit_key(kind, participant_id, moment, token)


def encode_record(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_record(store: ObjectStore, key: str, record: dict[str, Any]) -> None:
    """Create the record; ``AlreadyExists`` if a record already has that key (never overwritten)."""
    store.put(key, encode_record(record), if_absent=True)
