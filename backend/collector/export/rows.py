"""Stored documents → table rows (dicts keyed by column name), with the columns' types."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from ..compact_json import compact_json
from ..keys import format_timestamp, parse_timestamp
from ..reading.records import (
    SESSION_DURATION_NAMES,
    SESSION_END_NAMES,
    SESSION_START_NAMES,
    as_bool,
    as_float,
    as_int,
    as_moment,
    as_text,
    first_present,
    flatten_responses,
    json_type,
    session_completed,
    without_private_fields,
)
from ..storage import ObjectInfo
from .columns import PARTICIPANTS, ColumnType

Row = dict[str, Any]

_CONVERTERS: dict[ColumnType, Callable[[Any], Any]] = {
    "string": as_text,
    "int64": as_int,
    "float64": as_float,
    "bool": as_bool,
}
# Fields that have their own table instead of a place in extra_json.
_OWN_TABLE = {"sessionHistory", "participantResponses", "participantId"}


def received_at(document: dict[str, Any], stored_at: datetime) -> datetime:
    """When the collector received a document: ``serverReceivedAt``, else when the object was stored.

    Never the browser's ``timestamp``: an upload that waited in a queue keeps its old one, and
    ``--since`` must still find it. The stored time is never earlier than ``serverReceivedAt``
    (written after it; a bucket copy only makes it later), so it may pre-select what to read.
    """
    return parse_timestamp(document.get("serverReceivedAt")) or stored_at


def participant_row(
    participant_id: str,
    key: str,
    status: dict[str, Any],
    submission_count: int = 0,
    unverified_submission_count: int = 0,
) -> Row:
    """The participants table's row; the counts split submissions by ``reading.records.is_unverified``."""
    row: Row = {"participant_id": participant_id, "status_key": key}
    extra = {k: v for k, v in without_private_fields(status).items() if k not in _OWN_TABLE}
    for column in PARTICIPANTS.columns:
        if column.source is None:
            continue
        raw = extra.pop(column.source, None)
        value = _CONVERTERS[column.type](raw) if raw is not None else None
        if raw is not None and value is None:
            extra[column.source] = raw  # kept, not lost, when its type is not the column's
        row[column.name] = value
    history = status.get("sessionHistory")
    row["session_count"] = len(history) if isinstance(history, list) else 0
    row["response_count"] = sum(1 for _ in flatten_responses(status.get("participantResponses")))
    row["submission_count"] = submission_count
    row["unverified_submission_count"] = unverified_submission_count
    row["extra_json"] = compact_json(extra, sort_keys=True) if extra else None
    return row


def session_rows(participant_id: str, status: dict[str, Any]) -> Iterator[Row]:
    history = status.get("sessionHistory")
    if not isinstance(history, list):
        return
    for index, record in enumerate(history):
        if not isinstance(record, dict):
            yield {
                "participant_id": participant_id,
                "session_index": index,
                "started_at": None,
                "ended_at": None,
                "duration_ms": None,
                "completed": None,
                "record_json": compact_json(record),
            }
            continue
        yield {
            "participant_id": participant_id,
            "session_index": index,
            "started_at": _moment_text(as_moment(first_present(record, SESSION_START_NAMES))),
            "ended_at": _moment_text(as_moment(first_present(record, SESSION_END_NAMES))),
            "duration_ms": as_float(first_present(record, SESSION_DURATION_NAMES)),
            "completed": session_completed(record),
            "record_json": compact_json(record),
        }


def response_rows(participant_id: str, status: dict[str, Any]) -> Iterator[Row]:
    for question, answer in flatten_responses(status.get("participantResponses")):
        yield {
            "participant_id": participant_id,
            "question": question,
            "value": answer if isinstance(answer, str) else compact_json(answer),
            "value_type": json_type(answer),
        }


def submission_row(
    participant_id: str, info: ObjectInfo, submitted_at: datetime | None, document: dict[str, Any]
) -> Row:
    return {
        "participant_id": participant_id,
        "key": info.key,
        "submitted_at": _moment_text(submitted_at),
        "size_bytes": info.size,
        "upload_type": as_text(document.get("uploadType")),
        "timestamp": as_text(document.get("timestamp")),
        "server_received_at": as_text(document.get("serverReceivedAt")),
        "upload_id": as_text(document.get("uploadId")),
        "key_verified": as_bool(document.get("keyVerified")),
        "submission_json": compact_json(without_private_fields(document)),
    }


def _moment_text(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment else None
