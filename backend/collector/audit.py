"""Research-team records under ``{prefix}/audit/``: append-only, never participant data.

Each record is written once, create-if-absent, at
``{prefix}/audit/{kind}/{YYYY-MM-DD_HH-MM-SS}_{participantId}_{8 hex}.json`` (docs/bucket-layout.md).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .keys import KeyLayout
from .storage import ObjectStore

AUDIT_DIR = "audit"
_NAME_TIME_FORMAT = "%Y-%m-%d_%H-%M-%S"


def audit_dir(layout: KeyLayout, kind: str) -> str:
    return f"{layout.prefix}/{AUDIT_DIR}/{kind}/"


def audit_record_key(layout: KeyLayout, kind: str, participant_id: str, moment: datetime, token: str) -> str:
    """The record's key; ``token`` (8 hex) keeps two records of the same second apart."""
    layout.participant_dir(participant_id)  # refuses an ID that could leave the folder
    stamp = moment.astimezone(UTC).strftime(_NAME_TIME_FORMAT)
    if len(stamp) < 19:  # strftime drops leading zeros of years before 1000 on some platforms
        stamp = stamp.zfill(19)
    return f"{audit_dir(layout, kind)}{stamp}_{participant_id}_{token}.json"


def is_audit_key(layout: KeyLayout, key: str) -> bool:
    return key.startswith(f"{layout.prefix}/{AUDIT_DIR}/")


def encode_record(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_record(store: ObjectStore, key: str, record: dict[str, Any]) -> None:
    """Create the record; ``AlreadyExists`` if a record already has that key (never overwritten)."""
    store.put(key, encode_record(record), if_absent=True)
