"""Reconciling the bucket with a Qualtrics responses export: who is where, and what to recover.

Reads both export layouts Qualtrics produces:

* current: row 1 column IDs, row 2 question text (may hold commas and newlines, quoted),
  row 3 ``{"ImportId": ...}`` JSON per column, data from row 4;
* legacy: row 1 column IDs, row 2 question text, data from row 3.

A UTF-8 BOM is dropped. ``Status`` comes as a code or as its text (the export's "numeric
values" or "choice text" setting): 0 IP Address, 1 Survey Preview, 2 Survey Test, 4 Imported,
8 Spam, 9 Preview Spam, 12 Imported Spam, 16 Offline, 17 Offline Survey Preview. Previews,
tests, spam and imported responses are excluded; anything else (0, 16, an unknown code) is a
real response. Column names and participant IDs are compared after stripping surrounding spaces.

Categories per participant ID: ``both``; ``backup_only`` (in the bucket, no real Qualtrics
response: Qualtrics lost it, recover from the bucket); ``qualtrics_only`` (a real response, no
backup: the backup is missing); ``qualtrics_excluded`` (only excluded responses, no backup).
Erased participants are not in the bucket's side.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .keys import KeyLayout
from .reading.records import stored_moment
from .reading.scan import decode_object, list_bucket, read_many
from .storage import ObjectStore, StorageError
from .tombstone import is_tombstone

CATEGORIES = ("both", "backup_only", "qualtrics_only", "qualtrics_excluded")
OUTPUT_COLUMNS = (
    "participantId",
    "category",
    "responseIds",
    "finished",
    "recordedDate",
    "backupSubmissions",
    "lastReceivedAt",
)
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
_MAX_FIELD = 16 * 1024 * 1024  # a long free-text answer must not stop the reader


class NotAnExport(ValueError):
    """The file is not a Qualtrics responses export, or lacks a column we need."""


@dataclass
class QualtricsRow:
    response_id: str
    finished: str
    recorded_date: str
    excluded: bool


@dataclass
class QualtricsExport:
    layout: str  # "current" or "legacy"
    columns: list[str]
    rows_by_id: dict[str, list[QualtricsRow]]
    rows_without_id: int = 0


@dataclass
class ReconcileRow:
    participant_id: str
    category: str
    response_ids: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    recorded_dates: list[str] = field(default_factory=list)
    backup_submissions: int = 0
    last_received_at: str = ""

    def as_csv(self) -> dict[str, str]:
        return {
            "participantId": self.participant_id,
            "category": self.category,
            "responseIds": ";".join(self.response_ids),
            "finished": ";".join(self.finished),
            "recordedDate": ";".join(self.recorded_dates),
            "backupSubmissions": str(self.backup_submissions),
            "lastReceivedAt": self.last_received_at,
        }


@dataclass
class Reconciliation:
    rows: list[ReconcileRow]
    export: QualtricsExport

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(CATEGORIES, 0)
        for row in self.rows:
            counts[row.category] += 1
        return counts


def status_excluded(value: str) -> bool:
    """Preview, test, spam or imported, whether the export gives the code or its text."""
    text = value.strip()
    if text in STATUS_EXCLUDED:
        return True
    if text.endswith(".0") and text[:-2] in STATUS_EXCLUDED:  # a spreadsheet turned 1 into 1.0
        return True
    return text.lower() in _EXCLUDED_TEXT


def read_export(path: Path, id_column: str) -> QualtricsExport:
    """Parse the export; ``NotAnExport`` saying why (and listing the columns) when it does not fit."""
    id_column = id_column.strip()
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotAnExport(f"{path} is not UTF-8 text ({exc.reason}); export it as CSV") from None
    csv.field_size_limit(_MAX_FIELD)
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise NotAnExport(f"{path} is not a readable CSV file: {exc}") from None
    if len(records) < 2 or not records[0]:
        raise NotAnExport(f"{path} is not a Qualtrics responses export: it has no header rows")
    columns = [name.strip() for name in records[0]]
    if "ResponseId" not in columns and "ResponseID" not in columns:
        raise NotAnExport(
            f"{path} is not a Qualtrics responses export: no ResponseId column. "
            f"Its columns: {_listed(columns)}"
        )
    if id_column not in columns:
        raise NotAnExport(f"no column {id_column!r} in {path}. Its columns: {_listed(columns)}")
    data_start, layout = 2, "legacy"
    if len(records) > 2 and records[2] and records[2][0].lstrip().startswith('{"ImportId"'):
        data_start, layout = 3, "current"
    index = {name: i for i, name in reversed(list(enumerate(columns)))}
    response_col = index.get("ResponseId", index.get("ResponseID"))

    def cell(record: list[str], name: str) -> str:
        position = index.get(name)
        return record[position].strip() if position is not None and position < len(record) else ""

    rows: dict[str, list[QualtricsRow]] = {}
    without_id = 0
    for record in records[data_start:]:
        if not any(value.strip() for value in record):
            continue  # blank line at the end
        pid = cell(record, id_column)
        if not pid:
            without_id += 1
            continue
        response_id = record[response_col].strip() if response_col < len(record) else ""
        rows.setdefault(pid, []).append(
            QualtricsRow(
                response_id,
                cell(record, "Finished"),
                cell(record, "RecordedDate"),
                status_excluded(cell(record, "Status")),
            )
        )
    return QualtricsExport(layout, columns, rows, without_id)


def _listed(columns: list[str], limit: int = 40) -> str:
    shown = ", ".join(columns[:limit])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")


@dataclass
class BackupParticipant:
    submissions: int
    last_received_at: str
    latest_submission_key: str | None
    status_key: str | None


def scan_backup(store: ObjectStore, layout: KeyLayout) -> dict[str, BackupParticipant]:
    """Every participant in the bucket (erased ones left out) with counts from the listing.

    ``lastReceivedAt`` is the status file's ``serverReceivedAt`` (else its timestamp), read
    concurrently; the listing gives the rest.
    """
    listing = list_bucket(store, layout)
    statuses = {e.status.key: pid for pid, e in listing.participants.items() if e.status}
    received: dict[str, str] = {}
    erased: set[str] = set()
    for key, body in read_many(store, statuses):
        if isinstance(body, StorageError):
            continue
        try:
            document = decode_object(body)
        except ValueError:
            continue
        if is_tombstone(document):
            erased.add(statuses[key])
            continue
        moment = stored_moment(document)
        if moment is not None:
            received[statuses[key]] = moment.isoformat().replace("+00:00", "Z")
    found = {}
    for pid, entry in listing.participants.items():
        if pid in erased:
            continue
        latest = entry.submissions[-1].key if entry.submissions else None
        last = received.get(pid) or max(
            (info.last_modified.isoformat() for info in entry.submissions), default=""
        )
        found[pid] = BackupParticipant(
            len(entry.submissions), last, latest, entry.status.key if entry.status else None
        )
    return found


def reconcile(export: QualtricsExport, backup: dict[str, BackupParticipant]) -> Reconciliation:
    rows = []
    for pid in sorted(set(export.rows_by_id) | set(backup)):
        responses = export.rows_by_id.get(pid, [])
        real = [r for r in responses if not r.excluded]
        in_backup = pid in backup
        if real and in_backup:
            category = "both"
        elif in_backup:
            category = "backup_only"
        elif real:
            category = "qualtrics_only"
        else:
            category = "qualtrics_excluded"
        shown = real or responses
        entry = backup.get(pid)
        rows.append(
            ReconcileRow(
                pid,
                category,
                [r.response_id for r in shown],
                [r.finished for r in shown],
                [r.recorded_date for r in shown],
                entry.submissions if entry else 0,
                entry.last_received_at if entry else "",
            )
        )
    return Reconciliation(rows, export)


def write_rows(rows: Iterable[ReconcileRow], out: io.TextIOBase) -> None:
    writer = csv.DictWriter(out, fieldnames=OUTPUT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.as_csv())


def recover(
    store: ObjectStore, backup: dict[str, BackupParticipant], result: Reconciliation, directory: Path
) -> list[Path]:
    """For each ``backup_only`` participant: ``{id}.json`` (their latest submission's data) and
    one ``status.csv`` row of their status fields (lists and objects as JSON text)."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = [row.participant_id for row in result.rows if row.category == "backup_only"]
    written: list[Path] = []
    statuses: dict[str, dict[str, Any]] = {}
    keys = {}
    for pid in wanted:
        entry = backup[pid]
        if entry.latest_submission_key:
            keys[entry.latest_submission_key] = ("submission", pid)
        if entry.status_key:
            keys[entry.status_key] = ("status", pid)
    for key, body in read_many(store, keys):
        kind, pid = keys[key]
        if isinstance(body, StorageError):
            raise body
        document = decode_object(body)
        if kind == "status":
            statuses[pid] = document
            continue
        path = directory / f"{pid}.json"
        recovered = {
            "participantId": pid,
            "sourceKey": key,
            "timestamp": document.get("timestamp"),
            "serverReceivedAt": document.get("serverReceivedAt"),
            "submissionData": document.get("submissionData"),
        }
        path.write_text(json.dumps(recovered, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    fields = sorted({name for doc in statuses.values() for name in doc} - {"participantId"})
    status_path = directory / "status.csv"
    with status_path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["participantId", *fields])
        for pid in wanted:
            doc = statuses.get(pid, {})
            writer.writerow([pid, *(_cell(doc.get(name)) for name in fields)])
    written.append(status_path)
    return written


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
