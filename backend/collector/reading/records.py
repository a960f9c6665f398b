"""What the study's stored documents mean, for the research tools (dashboard, export).

The study app evolves faster than the collector, so every reader here is lenient: a field of an
unexpected type reads as ``None`` (never an exception), and the caller decides whether to keep
the raw value elsewhere. Session records in ``sessionHistory`` have no fixed shape in the
contract; the names tried for their start, end, duration and completion are listed below.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from ..compact_json import compact_json_bytes
from ..keys import parse_timestamp
from ..participant_keys import HASH_FIELD, KEY_FIELD

# The completion funnel (status flags, docs/browser-module.md §2), in the order a participant meets them.
FUNNEL_FLAGS = ("hasSeenParticipantSetup", "hasSeenWelcome", "hasSeenTutorial", "tutorialCompleted")

SESSION_START_NAMES = ("startTime", "start", "startedAt", "sessionStart", "startDate")
SESSION_END_NAMES = ("endTime", "end", "endedAt", "completedAt", "sessionEnd", "endDate")
SESSION_DURATION_NAMES = ("duration", "durationMs", "sessionDuration", "elapsed")
SESSION_COMPLETED_NAMES = ("completed", "isCompleted", "complete")


def as_bool(value: Any) -> bool | None:
    """True/False, also from the strings ``"true"``/``"false"`` that localStorage holds."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def as_text(value: Any) -> str | None:
    """Strings as they are; numbers as their JSON text; anything else is not text."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    return None


def as_moment(value: Any) -> datetime | None:
    """An ISO-8601 string or epoch milliseconds (what ``Date.now()`` gives) as UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return parse_timestamp(value)


def first_present(record: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if record.get(name) is not None:
            return record[name]
    return None


def session_records(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``sessionHistory`` records that are objects (others are skipped)."""
    history = status.get("sessionHistory")
    if not isinstance(history, list):
        return []
    return [record for record in history if isinstance(record, dict)]


def session_completed(record: dict[str, Any]) -> bool:
    """Completed when it says so; a record without a completion field counts if it has an end."""
    flag = as_bool(first_present(record, SESSION_COMPLETED_NAMES))
    if flag is not None:
        return flag
    return as_moment(first_present(record, SESSION_END_NAMES)) is not None


def session_moment(record: dict[str, Any]) -> datetime | None:
    """When the session ended, else when it started."""
    return as_moment(first_present(record, SESSION_END_NAMES)) or as_moment(
        first_present(record, SESSION_START_NAMES)
    )


def flatten_responses(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``participantResponses`` as (question, answer) pairs; nested objects give dotted paths.

    Arrays are answers (a multiple choice), not further flattened.
    """
    if isinstance(value, dict):
        for key, child in value.items():
            yield from flatten_responses(child, f"{path}.{key}" if path else str(key))
    elif path:
        yield path, value


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def is_unverified(document: Mapping[str, Any]) -> bool:
    """Was this upload stored without the participant's key (``"keyVerified": false``)?

    The one rule for what speaks for a participant in the research tools: completion, a trial
    session's submission, "Last upload" and submission counts use every upload *not* so marked,
    which is those sent with the key and those of a participant who held no key when they came
    (docs/trust-model.md). Anyone may send an upload for any ID, so a marked one is kept and shown
    apart, counted separately, and never decides what the participant did.
    """
    return document.get("keyVerified") is False


# Fields no research tool shows or exports: the hash of the participant's key (kept in
# status.json to check uploads, docs/bucket-layout.md §2), and the key itself should a document
# ever hold one. Anyone who saw the hash could test guesses of the key against it offline.
PRIVATE_FIELDS = (HASH_FIELD, KEY_FIELD)


def without_private_fields(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document to show or export: every top-level field but ``PRIVATE_FIELDS``."""
    return {name: value for name, value in document.items() if name not in PRIVATE_FIELDS}


def shareable_body(body: bytes) -> bytes:
    """A stored object's bytes to hand out (a download, a zip): as stored, unless the document
    holds a private field; then the same document without it, re-encoded."""
    if not any(name.encode() in body for name in PRIVATE_FIELDS):
        return body  # the common case, decided without decoding a large file
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return body  # not JSON: nothing the collector wrote, and no field to remove
    if not isinstance(document, dict) or not any(name in document for name in PRIVATE_FIELDS):
        return body
    return compact_json_bytes(without_private_fields(document))


def stored_moment(document: dict[str, Any]) -> datetime | None:
    """When the server received the document, else the upload's own timestamp."""
    return parse_timestamp(document.get("serverReceivedAt")) or parse_timestamp(document.get("timestamp"))
