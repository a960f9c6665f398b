"""Reading the two outside ledgers ``collector reconcile`` compares with the bucket.

**Qualtrics responses export.** Qualtrics writes one, two or three header rows before the
data, depending on the export and its age:

* current: row 1 column IDs, row 2 question text (may hold commas and newlines, quoted),
  row 3 ``{"ImportId": ...}`` JSON per column, then data;
* legacy: row 1 column IDs, row 2 question text, then data;
* one header row: a CSV saved again by a spreadsheet or an API export with the extra rows removed;
* the oldest, "V-numbered": row 1 ``V1, V2, ...``, row 2 the column names (``ResponseID``,
  ``Status``, ``Finished``, embedded data), then data.

Row 1 is the column IDs (row 2 in the V-numbered layout). Whether the next rows are headers is
decided from what they hold, never from their position alone: an ``ImportId`` cell, or the
question text Qualtrics writes for its own columns ("Response ID", "Recorded Date", "Response
Type"), make a header row; a ``R_...`` response ID, a date in ``RecordedDate`` or a Status
code make a data row. A row with signs of both, or of neither, is kept as data and reported as
uncertain (the warning names the row), so a response is never lost to a guess.

``Status`` comes as a code or as its text (the export's "numeric values" or "choice text"
setting): 0 IP Address, 1 Survey Preview, 2 Survey Test, 4 Imported, 8 Spam, 9 Preview Spam,
12 Imported Spam, 16 Offline, 17 Offline Survey Preview. Previews, tests, spam and imported
responses are excluded; anything else (0, 16, an unknown code) is a real response.

**Prolific submissions export** ("Download summary" on a study's submissions page). Current
exports name their columns ``Submission id, Participant id, Status, Started at, Completed at,
Reviewed at, Archived at, Time taken, Completion code, ...`` followed by demographics; older
ones ``session_id, participant_id, status, started_datetime, completed_date_time, time_taken,
entered_code, ...``. Both are recognised (names compared without case, spaces or underscores).
``Status`` is one of APPROVED, AWAITING REVIEW, RETURNED, TIMED-OUT, REJECTED (and, while a
study runs, ACTIVE or SCREENED OUT); spellings with a space, ``-`` or ``_`` are the same.

Both readers drop a UTF-8 BOM, compare participant IDs after stripping surrounding spaces, and
count every row of the file: header rows, blank lines, rows without an ID and data rows, so
that the summary accounts for the whole file.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NotAnExport

STATUS_REAL = {"0": "IP Address", "16": "Offline"}
STATUS_EXCLUDED = {
    "1": "Survey Preview",
    "2": "Survey Test",
    "4": "Imported",
    "8": "Spam",
    "9": "Preview Spam",
    "12": "Imported Spam",
    "17": "Offline Survey Preview",
}
_EXCLUDED_TEXT = {text.lower() for text in STATUS_EXCLUDED.values()}
_KNOWN_STATUS = {*STATUS_REAL, *STATUS_EXCLUDED, *(t.lower() for t in STATUS_REAL.values()), *_EXCLUDED_TEXT}
_MAX_FIELD = 16 * 1024 * 1024  # a long free-text answer must not stop the reader
_RESPONSE_ID = re.compile(r"R_[A-Za-z0-9]+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}")
# Question text Qualtrics writes in row 2 for its own columns (normalised: lower case, no spaces).
_QUESTION_TEXT = {"ResponseId": "responseid", "RecordedDate": "recordeddate", "Status": "responsetype"}
_HEADER_ROWS_AT_MOST = 2  # after the column IDs

# Prolific status -> what it means for the reconciliation.
PROLIFIC_PAID = ("APPROVED", "AWAITING REVIEW")  # paid, or paid unless the lab rejects it
PROLIFIC_LEFT = ("RETURNED", "TIMED-OUT")  # the participant gave up or ran out of time: not paid
PROLIFIC_REJECTED = ("REJECTED",)
_PROLIFIC_COLUMNS = {
    "participant": ("participantid",),
    "status": ("status",),
    "submission": ("submissionid", "sessionid"),
    "code": ("completioncode", "enteredcode", "studycode"),
    "started": ("startedat", "starteddatetime"),
    "completed": ("completedat", "completeddatetime"),
}


@dataclass
class RowCounts:
    """What became of every row of a ledger file; ``total`` is every CSV record in it."""

    header: int = 0
    blank: int = 0
    without_id: int = 0
    data: int = 0  # rows with a participant ID

    @property
    def total(self) -> int:
        return self.header + self.blank + self.without_id + self.data

    def describe(self) -> str:
        parts = [f"{self.total} rows: {self.header} header, {self.data} with a participant ID"]
        if self.without_id:
            parts.append(f"{self.without_id} without an ID")
        if self.blank:
            parts.append(f"{self.blank} blank")
        return ", ".join(parts)


@dataclass
class QualtricsRow:
    response_id: str
    finished: str
    recorded_date: str
    excluded: bool


@dataclass
class QualtricsExport:
    layout: str  # "current" (3 header rows), "legacy" (2) or "one-header-row"
    columns: list[str]
    rows_by_id: dict[str, list[QualtricsRow]]
    counts: RowCounts = field(default_factory=RowCounts)
    warnings: list[str] = field(default_factory=list)

    @property
    def rows_without_id(self) -> int:
        return self.counts.without_id


@dataclass
class ProlificRow:
    submission_id: str
    status: str  # upper case, words separated by a space except TIMED-OUT
    completion_code: str
    started_at: str
    completed_at: str


@dataclass
class ProlificExport:
    columns: list[str]
    rows_by_id: dict[str, list[ProlificRow]]
    counts: RowCounts = field(default_factory=RowCounts)
    warnings: list[str] = field(default_factory=list)


def status_excluded(value: str) -> bool:
    """Preview, test, spam or imported, whether the export gives the code or its text."""
    text = _status_text(value)
    return text in STATUS_EXCLUDED or text.lower() in _EXCLUDED_TEXT


def _status_text(value: str) -> str:
    text = value.strip()
    if text.endswith(".0") and text[:-2].isdigit():  # a spreadsheet turned 1 into 1.0
        return text[:-2]
    return text


def read_csv_records(path: Path, what: str) -> list[list[str]]:
    """Every CSV record of a UTF-8 file (BOM dropped); ``NotAnExport`` when it is not one."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotAnExport(f"{path} is not UTF-8 text ({exc.reason}); export it as CSV") from None
    csv.field_size_limit(_MAX_FIELD)
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise NotAnExport(f"{path} is not a readable CSV file: {exc}") from None
    if not records or not any(cell.strip() for cell in records[0]):
        raise NotAnExport(f"{path} is not a {what}: it has no header row")
    return records


def listed(columns: list[str], limit: int = 40) -> str:
    shown = ", ".join(columns[:limit])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")


def _blank(record: list[str]) -> bool:
    return not any(value.strip() for value in record)


class _Cells:
    """Cells of a record by column name (the first column of a repeated name wins)."""

    def __init__(self, columns: list[str]) -> None:
        self.index = {name: i for i, name in reversed(list(enumerate(columns)))}

    def get(self, record: list[str], name: str | None) -> str:
        position = self.index.get(name) if name is not None else None
        return record[position].strip() if position is not None and position < len(record) else ""


def _squashed(text: str) -> str:
    return re.sub(r"[\s_]+", "", text).lower()


def read_qualtrics(path: Path, id_column: str) -> QualtricsExport:
    """Parse a Qualtrics export; ``NotAnExport`` saying why (and listing the columns) when it does not fit."""
    id_column = id_column.strip()
    records = read_csv_records(path, "Qualtrics responses export")
    # The oldest exports put V1, V2, ... in row 1 and the column names in row 2.
    names_row = 1 if _v_numbered(records) else 0
    columns = [name.strip() for name in records[names_row]]
    response_column = next((c for c in ("ResponseId", "ResponseID") if c in columns), None)
    if response_column is None:
        raise NotAnExport(
            f"{path} is not a Qualtrics responses export: no ResponseId column. "
            f"Its columns: {listed(columns)}"
        )
    if id_column not in columns:
        raise NotAnExport(f"no column {id_column!r} in {path}. Its columns: {listed(columns)}")
    cells = _Cells(columns)
    export = QualtricsExport("one-header-row", columns, {}, RowCounts(header=names_row + 1))
    header_rows = 1
    looking_for_headers = True
    for number, record in enumerate(records[names_row + 1 :], start=names_row + 2):
        if _blank(record):
            export.counts.blank += 1
            continue
        if looking_for_headers and header_rows <= _HEADER_ROWS_AT_MOST:
            verdict = _header_verdict(record, cells, response_column, id_column)
            if verdict == "header":
                header_rows += 1
                export.counts.header += 1
                continue
            looking_for_headers = False
            if verdict == "unsure":
                export.warnings.append(
                    f"row {number} of {path.name} could be a header row or a response; kept as a "
                    f"response (ResponseId {cells.get(record, response_column)!r}): check it"
                )
        pid = cells.get(record, id_column)
        if not pid:
            export.counts.without_id += 1
            continue
        export.counts.data += 1
        export.rows_by_id.setdefault(pid, []).append(
            QualtricsRow(
                cells.get(record, response_column),
                cells.get(record, "Finished"),
                cells.get(record, "RecordedDate"),
                status_excluded(cells.get(record, "Status")),
            )
        )
    export.layout = {1: "one-header-row", 2: "legacy", 3: "current"}[header_rows]
    if names_row:
        export.layout = "legacy, V-numbered"
    return export


def _v_numbered(records: list[list[str]]) -> bool:
    """Row 1 is V1, V2, ... and row 2 names the columns, ResponseID among them."""
    first = [cell.strip() for cell in records[0]]
    named = [cell.strip() for cell in records[1]] if len(records) > 1 else []
    return (
        "ResponseId" not in first
        and "ResponseID" not in first
        and bool(first)
        and all(re.fullmatch(r"V\d+", cell) for cell in first[: min(len(first), 10)])
        and ("ResponseID" in named or "ResponseId" in named)
    )


def _header_verdict(record: list[str], cells: _Cells, response_column: str, id_column: str) -> str:
    """``header``, ``data`` or ``unsure`` for a row right after the column IDs, from its content."""
    header_signs = sum(
        (
            any(value.lstrip().startswith('{"ImportId"') for value in record),
            _squashed(cells.get(record, response_column)) == _QUESTION_TEXT["ResponseId"],
            _squashed(cells.get(record, "RecordedDate")) == _QUESTION_TEXT["RecordedDate"],
            _squashed(cells.get(record, "Status")) == _QUESTION_TEXT["Status"],
        )
    )
    status = _status_text(cells.get(record, "Status"))
    data_signs = sum(
        (
            bool(_RESPONSE_ID.fullmatch(cells.get(record, response_column))),
            bool(_DATE.match(cells.get(record, "RecordedDate"))),
            bool(status) and (status in _KNOWN_STATUS or status.lower() in _KNOWN_STATUS),
        )
    )
    if header_signs and not data_signs:
        return "header"
    if data_signs and not header_signs:
        return "data"
    return "unsure"


def prolific_status(value: str) -> str:
    """``AWAITING REVIEW`` from "Awaiting review", "AWAITING_REVIEW"; ``TIMED-OUT`` from "Timed out"."""
    words = re.sub(r"[\s_\-]+", " ", value.strip()).upper()
    return "TIMED-OUT" if words == "TIMED OUT" else words


def read_prolific(path: Path) -> ProlificExport:
    """Parse a Prolific submissions export; ``NotAnExport`` saying why when it does not fit."""
    records = read_csv_records(path, "Prolific submissions export")
    columns = [name.strip() for name in records[0]]
    by_squashed: dict[str, str] = {}
    for name in columns:
        by_squashed.setdefault(_squashed(name), name)
    found = {
        role: next((by_squashed[alias] for alias in aliases if alias in by_squashed), None)
        for role, aliases in _PROLIFIC_COLUMNS.items()
    }
    if found["participant"] is None or found["status"] is None:
        raise NotAnExport(
            f"{path} is not a Prolific submissions export: it needs the columns 'Participant id' and "
            f"'Status'. Its columns: {listed(columns)}"
        )
    cells = _Cells(columns)
    export = ProlificExport(columns, {}, RowCounts(header=1))
    for record in records[1:]:
        if _blank(record):
            export.counts.blank += 1
            continue
        pid = cells.get(record, found["participant"])
        if not pid:
            export.counts.without_id += 1
            continue
        export.counts.data += 1
        export.rows_by_id.setdefault(pid, []).append(
            ProlificRow(
                cells.get(record, found["submission"]),
                prolific_status(cells.get(record, found["status"])),
                cells.get(record, found["code"]),
                cells.get(record, found["started"]),
                cells.get(record, found["completed"]),
            )
        )
    unknown = sorted(
        {
            row.status
            for rows in export.rows_by_id.values()
            for row in rows
            if row.status not in (*PROLIFIC_PAID, *PROLIFIC_LEFT, *PROLIFIC_REJECTED)
        }
    )
    if unknown:
        export.warnings.append(
            f"{path.name}: status {', '.join(repr(s) for s in unknown)} counted as neither paid nor returned"
        )
    return export
