"""Reconciling the bucket with the study's other ledgers: who is where, and what to recover.

The ledgers are a Qualtrics responses export (the survey), a Prolific submissions export (the
payment platform), or both; their reading is in ``reconcile_ledgers``. One row per participant
ID found anywhere, with one ``category``:

* ``erased``: the participant withdrew and their backup was erased at the research team's
  request, whatever the other ledgers hold: nobody to chase.

With Qualtrics only (the backup and the survey):

* ``both``; ``backup_only`` (in the bucket, no real Qualtrics response: Qualtrics lost it,
  recover from the bucket); ``qualtrics_only`` (a real response, no backup: the backup is
  missing); ``qualtrics_excluded`` (only preview, test, spam or imported responses, no backup).

With Prolific (alone, or with Qualtrics for a three-way table), "paid" meaning APPROVED or
AWAITING REVIEW, and "data" meaning a backup or a real Qualtrics response:

* ``both`` (Prolific alone) or ``all_three``: paid, and in every ledger given;
* ``paid_no_data``: paid, but neither a backup nor a Qualtrics response;
* ``paid_backup_only`` / ``paid_qualtrics_only`` (three-way): paid, and only one of the two holds data;
* ``returned_with_data``: RETURNED or TIMED-OUT on Prolific, yet with data;
* ``data_not_paid``: data, but REJECTED, still running, or not on Prolific at all;
* ``qualtrics_excluded``: only excluded Qualtrics responses; ``prolific_only``: on Prolific,
  not paid, and no data anywhere (returned early, nothing to do).

Times are ISO-8601 UTC with milliseconds, as everywhere in the collector. Every cell and column
name written to a CSV goes through the export's spreadsheet-formula neutralising, since the
ledgers' values and the bucket's field names come from participants.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .export.writers import neutralise
from .keys import KeyLayout, format_timestamp
from .participant_keys import HASH_FIELD
from .reading.records import stored_moment
from .reading.scan import decode_object, list_bucket, read_many
from .reconcile_ledgers import (
    PROLIFIC_LEFT,
    PROLIFIC_PAID,
    PROLIFIC_REJECTED,
    NotAnExport,
    ProlificExport,
    QualtricsExport,
    read_prolific,
    read_qualtrics,
    status_excluded,
)
from .storage import ObjectStore, StorageError
from .tombstone import is_tombstone

__all__ = [
    "CATEGORIES",
    "NotAnExport",
    "read_prolific",
    "read_qualtrics",
    "reconcile",
    "recover",
    "scan_backup",
    "status_excluded",
    "summary_lines",
    "write_rows",
]

CATEGORIES = (
    "all_three",
    "both",
    "backup_only",
    "qualtrics_only",
    "paid_backup_only",
    "paid_qualtrics_only",
    "paid_no_data",
    "returned_with_data",
    "data_not_paid",
    "qualtrics_excluded",
    "prolific_only",
    "erased",
)
QUALTRICS_COLUMNS = ("responseIds", "finished", "recordedDate")
BACKUP_COLUMNS = ("backupSubmissions", "lastReceivedAt")
PROLIFIC_COLUMNS = (
    "prolificStatus",
    "prolificSubmissionIds",
    "completionCode",
    "prolificStartedAt",
    "prolificCompletedAt",
)
# Never written by ``--recover``: the hash of the participant's key stays in status.json only.
NOT_RECOVERED = frozenset({HASH_FIELD})


@dataclass
class BackupParticipant:
    submission_keys: list[str]  # in key order, so the latest last
    last_received_at: str
    status_key: str | None

    @property
    def submissions(self) -> int:
        return len(self.submission_keys)


@dataclass
class Backup:
    participants: dict[str, BackupParticipant]
    erased: set[str] = field(default_factory=set)


@dataclass
class ReconcileRow:
    participant_id: str
    category: str
    cells: dict[str, str]
    recoverable: bool = False  # in the bucket, and Qualtrics was given but has no real response


@dataclass
class Reconciliation:
    rows: list[ReconcileRow]
    columns: tuple[str, ...]
    qualtrics: QualtricsExport | None = None
    prolific: ProlificExport | None = None

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.category] = counts.get(row.category, 0) + 1
        return {name: counts[name] for name in CATEGORIES if name in counts}


def scan_backup(store: ObjectStore, layout: KeyLayout) -> Backup:
    """Every participant in the bucket, erased ones apart, with counts from the listing.

    ``lastReceivedAt`` is the status file's ``serverReceivedAt`` (else its timestamp, else the
    latest submission's stored time), read concurrently; the listing gives the rest.
    """
    listing = list_bucket(store, layout)
    statuses = {e.status.key: pid for pid, e in listing.participants.items() if e.status}
    received: dict[str, str] = {}
    backup = Backup({})
    for key, body in read_many(store, statuses):
        if isinstance(body, StorageError):
            continue
        try:
            document = decode_object(body)
        except ValueError:
            continue
        if is_tombstone(document):
            backup.erased.add(statuses[key])
            continue
        moment = stored_moment(document)
        if moment is not None:
            received[statuses[key]] = format_timestamp(moment)
    for pid, entry in listing.participants.items():
        if pid in backup.erased:
            continue
        last = received.get(pid) or max(
            (format_timestamp(info.last_modified) for info in entry.submissions), default=""
        )
        backup.participants[pid] = BackupParticipant(
            [info.key for info in entry.submissions], last, entry.status.key if entry.status else None
        )
    return backup


def _prolific_standing(statuses: list[str]) -> str:
    """The participant's best standing over their Prolific submissions."""
    if any(s in PROLIFIC_PAID for s in statuses):
        return "paid"
    if any(s in PROLIFIC_LEFT for s in statuses):
        return "left"
    if any(s in PROLIFIC_REJECTED for s in statuses):
        return "rejected"
    return "other" if statuses else "none"


def categorise(*, erased: bool, in_backup: bool, qualtrics: str | None, prolific: str | None) -> str:
    """``qualtrics``: None (not given), real, excluded or none; ``prolific``: None or a standing."""
    if erased:
        return "erased"
    has_response = qualtrics == "real"
    if prolific is None:
        if has_response:
            return "both" if in_backup else "qualtrics_only"
        if in_backup:
            return "backup_only"
        return "qualtrics_excluded"
    if prolific == "paid":
        if qualtrics is None:
            return "both" if in_backup else "paid_no_data"
        if in_backup and has_response:
            return "all_three"
        if in_backup:
            return "paid_backup_only"
        return "paid_qualtrics_only" if has_response else "paid_no_data"
    if in_backup or has_response:
        return "returned_with_data" if prolific == "left" else "data_not_paid"
    return "qualtrics_excluded" if qualtrics == "excluded" else "prolific_only"


def reconcile(
    backup: Backup, *, qualtrics: QualtricsExport | None = None, prolific: ProlificExport | None = None
) -> Reconciliation:
    if qualtrics is None and prolific is None:
        raise ValueError("reconcile needs a Qualtrics or a Prolific export")
    columns = (
        "participantId",
        "category",
        *(QUALTRICS_COLUMNS if qualtrics else ()),
        *BACKUP_COLUMNS,
        *(PROLIFIC_COLUMNS if prolific else ()),
    )
    everyone = set(backup.participants) | set(backup.erased)
    everyone |= set(qualtrics.rows_by_id) if qualtrics else set()
    everyone |= set(prolific.rows_by_id) if prolific else set()
    rows = []
    for pid in sorted(everyone):
        cells: dict[str, str] = {}
        standing = None
        qualtrics_state = None
        if qualtrics is not None:
            responses = qualtrics.rows_by_id.get(pid, [])
            real = [r for r in responses if not r.excluded]
            qualtrics_state = "real" if real else "excluded" if responses else "none"
            shown = real or responses
            cells["responseIds"] = ";".join(r.response_id for r in shown)
            cells["finished"] = ";".join(r.finished for r in shown)
            cells["recordedDate"] = ";".join(r.recorded_date for r in shown)
        entry = backup.participants.get(pid)
        cells["backupSubmissions"] = str(entry.submissions if entry else 0)
        cells["lastReceivedAt"] = entry.last_received_at if entry else ""
        if prolific is not None:
            submissions = prolific.rows_by_id.get(pid, [])
            standing = _prolific_standing([s.status for s in submissions])
            cells["prolificStatus"] = ";".join(s.status for s in submissions)
            cells["prolificSubmissionIds"] = ";".join(s.submission_id for s in submissions)
            cells["completionCode"] = ";".join(s.completion_code for s in submissions)
            cells["prolificStartedAt"] = ";".join(s.started_at for s in submissions)
            cells["prolificCompletedAt"] = ";".join(s.completed_at for s in submissions)
        category = categorise(
            erased=pid in backup.erased,
            in_backup=entry is not None,
            qualtrics=qualtrics_state,
            prolific=standing,
        )
        lost_by_qualtrics = qualtrics_state is not None and qualtrics_state != "real"
        rows.append(
            ReconcileRow(
                pid,
                category,
                {"participantId": pid, "category": category, **cells},
                recoverable=entry is not None and lost_by_qualtrics and category != "erased",
            )
        )
    return Reconciliation(rows, columns, qualtrics, prolific)


def _csv_writer(out: io.TextIOBase) -> Any:
    return csv.writer(out, lineterminator="\n")


def write_rows(result: Reconciliation, out: io.TextIOBase) -> None:
    """The table as CSV, every header and cell neutralised for spreadsheets."""
    writer = _csv_writer(out)
    writer.writerow([neutralise(name) for name in result.columns])
    for row in result.rows:
        writer.writerow([neutralise(row.cells.get(name, "")) for name in result.columns])


@dataclass
class Recovered:
    files: list[Path]
    participants: list[str]  # whose latest verified submission was written
    unverified_only: list[str]  # in the bucket, but no submission they can be trusted for


def recoverable(result: Reconciliation) -> list[str]:
    """Participants in the bucket (not erased) with no real Qualtrics response: Qualtrics lost them."""
    return [row.participant_id for row in result.rows if row.recoverable]


def recover(store: ObjectStore, backup: Backup, result: Reconciliation, directory: Path) -> Recovered:
    """For each participant of ``recoverable``: ``{id}.json`` with their latest *verified*
    submission (not marked ``keyVerified: false``: a keyless participant's uploads count), and one
    ``status.csv`` row of their status fields (lists and objects as JSON text, the key hash never)."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = recoverable(result)
    entries = {pid: backup.participants[pid] for pid in wanted}
    latest = latest_verified_submissions(store, entries)
    written: list[Path] = []
    for pid, (key, document) in sorted(latest.items()):
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
    statuses = _read_statuses(store, {e.status_key: pid for pid, e in entries.items() if e.status_key})
    fields = sorted({name for doc in statuses.values() for name in doc} - {"participantId"} - NOT_RECOVERED)
    status_path = directory / "status.csv"
    with status_path.open("w", encoding="utf-8", newline="") as out:
        writer = _csv_writer(out)
        writer.writerow([neutralise(name) for name in ("participantId", *fields)])
        for pid in wanted:
            doc = statuses.get(pid, {})
            writer.writerow([neutralise(pid), *(neutralise(_cell(doc.get(name))) for name in fields)])
    written.append(status_path)
    return Recovered(written, sorted(latest), sorted(set(wanted) - set(latest)))


def latest_verified_submissions(
    store: ObjectStore, entries: dict[str, BackupParticipant]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per participant, the latest submission not marked ``keyVerified: false`` (key and document).

    Read newest first, one round per step back, so a participant whose latest upload is verified
    costs one read; one with only unverified submissions gets no entry.
    """
    remaining = {pid: list(entry.submission_keys) for pid, entry in entries.items() if entry.submission_keys}
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    while remaining:
        step = {keys.pop(): pid for pid, keys in remaining.items()}
        for key, body in read_many(store, step):
            pid = step[key]
            if isinstance(body, StorageError):
                raise body
            try:
                document = decode_object(body)
            except ValueError:
                continue  # a corrupt file is not the participant's data; try the one before
            if document.get("keyVerified") is not False:
                found[pid] = (key, document)
                remaining.pop(pid, None)
        remaining = {pid: keys for pid, keys in remaining.items() if keys and pid not in found}
    return found


def _read_statuses(store: ObjectStore, keys: dict[str, str]) -> dict[str, dict[str, Any]]:
    statuses = {}
    for key, body in read_many(store, keys):
        if isinstance(body, StorageError):
            raise body
        statuses[keys[key]] = decode_object(body)
    return statuses


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def summary_lines(result: Reconciliation) -> Iterable[str]:
    """What the command prints after the table: each file's rows accounted for, then the categories."""
    if result.qualtrics is not None:
        headers = result.qualtrics.counts.header
        yield (
            f"Qualtrics export ({result.qualtrics.layout}, {headers} header row(s)): "
            + result.qualtrics.counts.describe()
        )
    if result.prolific is not None:
        yield f"Prolific export: {result.prolific.counts.describe()}"
    counts = ", ".join(f"{count} {name}" for name, count in result.counts().items())
    yield f"{len(result.rows)} participant IDs: {counts or 'none'}"
