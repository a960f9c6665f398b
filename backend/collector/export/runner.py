"""The export: list the bucket once, read status, submission and trial files concurrently, write the tables.

Order is fixed (participants by ID, submissions by key) and every value is typed by its column,
so two exports of the same bucket are byte-identical. A file that cannot be read or is not a
JSON object is reported with its key and left out; ``strict`` makes it fatal instead. Erased
participants (an erasure tombstone at status.json) are left out, with anything left of theirs.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Collection
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Protocol

from ..errors import ExportFailed
from ..keys import KeyLayout
from ..reading.records import is_unverified
from ..reading.scan import (
    DEFAULT_READERS,
    BucketListing,
    ParticipantObjects,
    decode_object,
    list_bucket,
    read_many,
)
from ..storage import ObjectInfo, ObjectNotFound, ObjectStore, StorageError
from ..tombstone import is_tombstone
from .columns import PARTICIPANTS, RESPONSES, SESSIONS, SUBMISSIONS, TABLES, TRIAL_TABLES, Column, Table
from .dictionary import data_dictionary
from .loaders import write_loaders
from .rows import Row, participant_row, received_at, response_rows, session_rows, submission_row
from .trials import TrialTables
from .writers import Format, Sink, TableWriter, open_writer

logger = logging.getLogger(__name__)

README_NAME = "README.md"


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, count: int = 1) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        return None

    def advance(self, count: int = 1) -> None:
        return None


@dataclass(frozen=True)
class Problem:
    key: str
    reason: str


@dataclass
class ExportReport:
    rows: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)  # participants left out because they were erased
    trial_columns: list[Column] = field(default_factory=list)  # this export's trialData columns


def table_file_name(table: Table, fmt: Format) -> str:
    return f"{table.name}.{fmt}"


def export_bucket(
    store: ObjectStore,
    layout: KeyLayout,
    sink: Sink,
    *,
    fmt: Format = "csv",
    participant_ids: Collection[str] = (),
    since: datetime | None = None,
    strict: bool = False,
    workers: int = DEFAULT_READERS,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the tables and the data dictionary into ``sink``; what happened in the report."""
    progress = progress or _NoProgress()
    report = ExportReport(rows={table.name: 0 for table in (*TABLES, *TRIAL_TABLES)})
    try:
        listing = _selected(list_bucket(store, layout), participant_ids)
    except StorageError as exc:
        raise ExportFailed(f"cannot list the bucket: {exc}") from exc
    # --since is by server receipt time. The object's stored time is never earlier than the
    # collector's serverReceivedAt (it is written after; a bucket copy only makes it later), so
    # it selects what to read, and the document's serverReceivedAt decides (see rows.received_at).
    submissions = [
        (entry, info)
        for entry in listing.participants.values()
        for info in entry.submissions
        if since is None or info.last_modified >= since
    ]
    # Every participant with anything stored: one who sent only trials (a jsPsych study) has no
    # status.json and is still a participant, with their counts.
    statuses = [e for e in listing.participants.values() if e.status or e.trials or e.submissions]
    trials = TrialTables()
    progress.start(len(statuses) + len(submissions) + trials.count(listing))

    with ExitStack() as stack:
        writers: dict[str, TableWriter] = {}
        for table in TABLES:
            out = stack.enter_context(sink.open(table_file_name(table, fmt)))
            writers[table.name] = open_writer(fmt, table, out)
            stack.callback(writers[table.name].close)  # runs before the sink closes the file
            report.files.append(table_file_name(table, fmt))
        recent = {entry.participant_id for entry, _ in submissions}
        # Participant rows wait in a spool for their submission counts, which only the
        # submission pass knows (which submissions are unverified), and that pass must know first
        # who was erased.
        participants = stack.enter_context(tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024))
        _export_statuses(
            store, statuses, writers, participants, report, progress, since, recent, strict, workers
        )
        erased = set(report.erased)
        kept = [(entry, info) for entry, info in submissions if entry.participant_id not in erased]
        progress.advance(len(submissions) - len(kept))  # counted at the start, never read
        submissions = kept
        counts = _export_submissions(
            store, layout, submissions, writers, report, progress, since, strict, workers, trials
        )
        _write_participants(participants, writers[PARTICIPANTS.name], counts)
    # An erased participant's leftover trials (an erasure still running) are left out too.
    for participant_id in erased:
        entry = listing.participants.pop(participant_id, None)
        if entry is not None:
            progress.advance(len(entry.trials))
    # After the submissions: they decide which trial sessions are complete.
    report.rows.update(
        trials.write(
            store,
            layout,
            listing,
            sink,
            fmt=fmt,
            decode=lambda key, body: _decoded(key, body, report, strict),
            since=since,
            workers=workers,
            advance=progress.advance,
        )
    )
    report.files.extend(table_file_name(table, fmt) for table in TRIAL_TABLES)
    report.trial_columns = [column for _, column in trials.field_columns]
    # Last, because the trials table's columns are known only once the trials are read.
    with sink.open(README_NAME) as out:
        out.write(data_dictionary(fmt, trial_columns=report.trial_columns).encode("utf-8"))
    report.files.append(README_NAME)
    if fmt == "csv":  # CSV has no types: loaders that give each column its dictionary type
        report.files.extend(write_loaders(sink, report.trial_columns))
    return report


def _export_statuses(
    store: ObjectStore,
    statuses: list[ParticipantObjects],
    writers: dict[str, TableWriter],
    participants: IO[bytes],
    report: ExportReport,
    progress: Progress,
    since: datetime | None,
    recent: set[str],
    strict: bool,
    workers: int,
) -> None:
    by_key = {entry.status.key: entry for entry in statuses if entry.status}
    bodies = read_many(store, by_key, workers=workers)
    for entry in statuses:
        progress.advance()
        if entry.status is None:
            _spool_without_status(entry, participants, report, since)
            continue
        key, body = next(bodies)
        status = _decoded(key, body, report, strict)
        if status is None:
            continue
        if is_tombstone(status):
            report.erased.append(entry.participant_id)
            continue
        if since is not None and entry.participant_id not in recent:
            assert entry.status is not None
            if received_at(status, entry.status.last_modified) < since:
                continue
        pid = entry.participant_id
        row = _with_trial_counts(participant_row(pid, key, status), entry)
        participants.write(json.dumps(row).encode("utf-8") + b"\n")
        report.rows[PARTICIPANTS.name] += 1
        rows = {
            SESSIONS.name: list(session_rows(pid, status)),
            RESPONSES.name: list(response_rows(pid, status)),
        }
        for table_name, table_rows in rows.items():
            for row in table_rows:
                writers[table_name].write(row)
            report.rows[table_name] += len(table_rows)


def _export_submissions(
    store: ObjectStore,
    layout: KeyLayout,
    submissions: list[tuple[ParticipantObjects, ObjectInfo]],
    writers: dict[str, TableWriter],
    report: ExportReport,
    progress: Progress,
    since: datetime | None,
    strict: bool,
    workers: int,
    trials: TrialTables,
) -> dict[str, SubmissionCounts]:
    """Write the submissions table; per participant, how many speak for them and how many not."""
    counts: dict[str, SubmissionCounts] = {}
    infos = {info.key: (entry, info) for entry, info in submissions}
    for key, body in read_many(store, infos, workers=workers):
        progress.advance()
        document = _decoded(key, body, report, strict)
        if document is None:
            continue
        entry, info = infos[key]
        if since is not None and received_at(document, info.last_modified) < since:
            continue
        parsed = layout.parse(key)
        writers[SUBMISSIONS.name].write(
            submission_row(entry.participant_id, info, parsed.submitted_at if parsed else None, document)
        )
        report.rows[SUBMISSIONS.name] += 1
        trials.note_submission(entry.participant_id, key, document)
        count = counts.setdefault(entry.participant_id, SubmissionCounts())
        if is_unverified(document):
            count.unverified += 1
        else:
            count.verified += 1
    return counts


def _with_trial_counts(row: Row, entry: ParticipantObjects) -> Row:
    row["stored_trials"] = len(entry.trials)
    row["stored_trial_sessions"] = len({info.key.rsplit("/", 2)[-2] for info in entry.trials})
    return row


def _spool_without_status(
    entry: ParticipantObjects, participants: IO[bytes], report: ExportReport, since: datetime | None
) -> None:
    """The participants row of someone with trials or submissions and no status.json."""
    stored = [*entry.trials, *entry.submissions]
    if since is not None and all(info.last_modified < since for info in stored):
        return
    row = _with_trial_counts(participant_row(entry.participant_id, "", {}), entry)
    row["status_key"] = None
    participants.write(json.dumps(row).encode("utf-8") + b"\n")
    report.rows[PARTICIPANTS.name] += 1


@dataclass
class SubmissionCounts:
    verified: int = 0  # every submission not marked keyVerified: false (reading.records.is_unverified)
    unverified: int = 0


def _write_participants(spool: IO[bytes], writer: TableWriter, counts: dict[str, SubmissionCounts]) -> None:
    spool.seek(0)
    for line in spool:
        row = json.loads(line)
        count = counts.get(row["participant_id"], SubmissionCounts())
        row["submission_count"], row["unverified_submission_count"] = count.verified, count.unverified
        writer.write(row)


def _decoded(key: str, body: bytes | StorageError, report: ExportReport, strict: bool) -> dict | None:
    """The document, or None after reporting why it cannot be exported."""
    if isinstance(body, StorageError):
        # A file deleted between listing and reading is skippable; a failing store is not.
        if strict or not isinstance(body, ObjectNotFound):
            raise ExportFailed(f"cannot read {key}: {body}")
        reason = "vanished since it was listed"
    else:
        try:
            return decode_object(body)
        except ValueError as exc:
            reason = str(exc)
    if strict:
        raise ExportFailed(f"corrupt object {key}: {reason} (left out without --strict)")
    logger.warning("Skipped %r: %s", key, reason)
    report.problems.append(Problem(key, reason))
    return None


def _selected(listing: BucketListing, participant_ids: Collection[str]) -> BucketListing:
    if not participant_ids:
        return listing
    wanted = set(participant_ids)
    return BucketListing(
        {p: e for p, e in listing.participants.items() if p in wanted}, listing.stray, listing.audit
    )
