"""Bounded views of participant-controlled data: capped columns, truncated cells, paged rows.

Anything a participant uploads may be wide (a sessionHistory record with thousands of keys),
long (a 4 MiB string) or deep; what the dashboard shows of it is bounded here, so one upload
can never make a page that takes seconds to render or megabytes to send.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_COLUMNS = 12  # session-history columns, the "other fields" JSON column included
MAX_CELL_CHARS = 200
MAX_FIELD_CHARS = 2000
MAX_FIELDS = 200
PAGE_ROWS = 50
MAX_VIEW_CHARS = 256 * 1024  # of a file shown on the page; the download is always whole
MAX_PARSE_BYTES = 16 * 1024 * 1024  # larger objects are offered for download, not read here
OTHER_COLUMN = "other fields (JSON)"


def cell_text(value: Any, limit: int = MAX_CELL_CHARS) -> str:
    """A value for a table cell: text as is, anything else as JSON, cut to ``limit`` characters."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else _json(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):  # deeper than json can write back: say so, do not fail
        return "(nested too deeply to show)"


def utc_text(moment: datetime) -> str:
    """Any datetime (year 1 to 9999) as ``YYYY-MM-DD HH:MM:SS UTC``, never an exception."""
    if moment.tzinfo is not None:
        with contextlib.suppress(OverflowError, ValueError):
            moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} UTC"
    )


@dataclass(frozen=True)
class Page:
    number: int
    pages: int
    total: int
    start: int  # index of the first row on this page

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + PAGE_ROWS)


def page_of(total: int, requested: int) -> Page:
    pages = max(1, math.ceil(total / PAGE_ROWS))
    number = min(max(requested, 1), pages)
    return Page(number, pages, total, (number - 1) * PAGE_ROWS)


@dataclass(frozen=True)
class SessionTable:
    columns: list[str]  # at most MAX_COLUMNS, the last being OTHER_COLUMN when fields were folded
    rows: list[tuple[int, list[str]]]  # (index in sessionHistory, cells)
    page: Page
    folded: int  # how many field names went into the OTHER_COLUMN


def session_table(
    records: list[dict[str, Any]],
    preferred: tuple[str, ...],
    requested_page: int,
    columns: tuple[list[str], int] | None = None,
) -> SessionTable:
    """The session-history table for one page of records (``columns``: from ``session_columns``,
    when the caller kept them from an earlier page of the same document)."""
    columns, folded = columns or session_columns(records, preferred)
    shown = set(columns)
    page = page_of(len(records), requested_page)
    rows = []
    for offset, record in enumerate(records[page.slice]):
        cells = [cell_text(record.get(name)) for name in columns]
        if folded:
            rest = {name: value for name, value in record.items() if name not in shown}
            cells.append(cell_text(rest) if rest else "")
        rows.append((page.start + offset, cells))
    return SessionTable([*columns, OTHER_COLUMN] if folded else columns, rows, page, folded)


def session_columns(records: list[dict[str, Any]], preferred: tuple[str, ...]) -> tuple[list[str], int]:
    """The columns shown, and how many field names are folded into the JSON column.

    The preferred names found in any record, then the most frequent other names, up to
    ``MAX_COLUMNS``; every other field of a record goes into one JSON cell.
    """
    counts: dict[str, int] = {}
    for record in records:
        for name in record:
            counts[name] = counts.get(name, 0) + 1
    known = [name for name in preferred if name in counts]
    others = sorted((name for name in counts if name not in preferred), key=lambda n: (-counts[n], n))
    columns = [*known, *others]
    folded = 0
    if len(columns) > MAX_COLUMNS:
        folded = len(columns) - (MAX_COLUMNS - 1)
        columns = columns[: MAX_COLUMNS - 1]
    return columns, folded


def status_fields(
    status: dict[str, Any], hidden: tuple[str, ...] = ("sessionHistory",)
) -> tuple[list[tuple[str, str]], int]:
    """Top-level status fields (without the ``hidden`` ones) as (name, text), at most ``MAX_FIELDS``;
    and how many more there are."""
    names = [name for name in status if name not in hidden]
    fields = [
        (cell_text(name, MAX_CELL_CHARS), cell_text(status[name], MAX_FIELD_CHARS))
        for name in names[:MAX_FIELDS]
    ]
    return fields, max(0, len(names) - MAX_FIELDS)
