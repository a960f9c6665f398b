"""The per-trial tables: ``trials`` (one row per stored trial) and ``trial_sessions`` (one per run).

The ``trials`` table's columns depend on the data: after the fixed ones comes one column per
field of ``trialData``, in the order fields are first met (trials in key order, so the same
bucket gives the same columns), each typed from every value it holds:

* only booleans -> bool; only whole numbers within 64 bits -> int64; only numbers -> float64;
* anything else (text, a mix, lists, objects) -> string: text as is, other values as JSON.

A column therefore never loses a value. So the columns can be known before the first row is
written, trials are read once and their rows spooled to a temporary file (on disk past a few
MiB), then written out.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from ..compact_json import compact_json
from ..completeness import ExpectedTrials, index_ranges, missing_count, missing_runs
from ..keys import KeyLayout
from ..reading.records import is_unverified, without_private_fields
from ..reading.scan import DEFAULT_READERS, BucketListing, read_many
from ..storage import ObjectStore, StorageError
from ..trials.sessions import SessionCompletions, submission_session_ids, summarise_sessions
from .columns import TRIAL_SESSIONS, TRIALS, TRIALS_TRAILING, Column, ColumnType, Table
from .rows import received_at
from .writers import Format, Sink, open_writer

# More distinct trialData fields than this (hostile or generated data) go to one JSON column.
MAX_TRIAL_FIELD_COLUMNS = 500
# Top-level fields that have their own column (or none: uploadType is always "trial").
_OWN_COLUMN = {"participantId", "sessionId", "trialIndex", "trialData", "serverReceivedAt", "keyVerified"}
_SKIPPED = {"uploadType"}
_INT64 = (-(2**63), 2**63 - 1)

Decode = Callable[[str, "bytes | StorageError"], "dict[str, Any] | None"]


@dataclass
class _FieldKind:
    """What the values of one trialData field have been so far (nulls aside)."""

    seen: bool = False
    only_bool: bool = True
    only_int: bool = True
    only_number: bool = True

    def observe(self, value: Any) -> None:
        if value is None:
            return
        self.seen = True
        is_bool = isinstance(value, bool)
        number = isinstance(value, int | float) and not is_bool
        self.only_bool &= is_bool
        int64 = number and isinstance(value, int) and _INT64[0] <= value <= _INT64[1]
        self.only_int &= int64
        # Whole numbers past 64 bits would lose digits as floats, and NaN/Infinity (not JSON the
        # collector stores; only a hand-placed file has them) have no portable form: kept as text.
        self.only_number &= int64 or (isinstance(value, float) and math.isfinite(value))

    @property
    def type(self) -> ColumnType:
        if not self.seen:
            return "string"  # null every time
        if self.only_bool:
            return "bool"
        if self.only_int:
            return "int64"
        if self.only_number:
            return "float64"
        return "string"


@dataclass
class TrialTables:
    """Submissions that complete sessions are noted during the submission pass; then ``write``."""

    completions: dict[str, SessionCompletions] = field(default_factory=dict)  # by participant ID
    field_columns: list[tuple[str, Column]] = field(default_factory=list)  # (trialData name, column)
    expected: ExpectedTrials = field(default_factory=ExpectedTrials)

    def note_submission(self, participant_id: str, key: str, document: dict[str, Any]) -> None:
        """Remember which sessions this submission completes (trials.sessions.SessionCompletions);
        an unverified one completes none, it is counted beside the sessions it names."""
        completions = self.completions.setdefault(participant_id, SessionCompletions())
        completions.note(
            key,
            submission_session_ids(document),
            unverified=is_unverified(document),
            keyed=document.get("keyVerified") is True,
        )

    def _completed(self, participant_id: str, session_id: str) -> bool:
        completions = self.completions.get(participant_id)
        return completions is not None and session_id in completions.completed_by

    @staticmethod
    def count(listing: BucketListing) -> int:
        return sum(len(entry.trials) for entry in listing.participants.values())

    def write(
        self,
        store: ObjectStore,
        layout: KeyLayout,
        listing: BucketListing,
        sink: Sink,
        *,
        fmt: Format,
        decode: Decode,
        since: datetime | None = None,
        workers: int = DEFAULT_READERS,
        advance: Callable[[], None] = lambda: None,
    ) -> dict[str, int]:
        """Write both tables into ``sink``; the row count of each."""
        stored_at = {
            info.key: info.last_modified for entry in listing.participants.values() for info in entry.trials
        }
        kinds: dict[str, _FieldKind] = {}
        sessions: dict[tuple[str, str], list[tuple[int, str | None]]] = {}
        recent: set[tuple[str, str]] = set()  # sessions with a trial received on or after ``since``
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+b") as spool:
            for key, body in read_many(store, list(stored_at), workers=workers):
                advance()
                document = decode(key, body)
                parsed = layout.parse(key)
                if document is None or parsed is None:
                    continue
                row = _trial_record(
                    parsed.participant_id, parsed.session_id or "", parsed.trial_index, document
                )
                row["data"], row["more"] = _split_fields(row["data"], kinds)
                session = (row["participant_id"], row["session_id"])
                # A session counts verified trials only; unverified ones are rows of their own.
                indices = sessions.setdefault(session, [])
                if row["key_verified"]:
                    indices.append((row["trial_index"], row["server_received_at"]))
                    self.expected.note(session, row["trial_index"], document)
                if since is not None and received_at(document, stored_at[key]) >= since:
                    recent.add(session)
                spool.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
            kept = {
                session
                for session in sessions
                if since is None or session in recent or self._completed(*session)
            }
            self.field_columns = _field_columns(kinds)
            spool.seek(0)
            trial_rows = self._write_trials(spool, sink, fmt, kept)
        session_rows = self._write_sessions(sessions, kept, sink, fmt)
        return {TRIALS.name: trial_rows, TRIAL_SESSIONS.name: session_rows}

    @property
    def table(self) -> Table:
        """The ``trials`` table with this export's trialData columns."""
        return Table(
            TRIALS.name,
            TRIALS.description,
            (*TRIALS.columns, *(column for _, column in self.field_columns), *TRIALS_TRAILING),
        )

    def _write_trials(self, spool: IO[bytes], sink: Sink, fmt: Format, kept: set[tuple[str, str]]) -> int:
        table = self.table
        written = 0
        with sink.open(f"{table.name}.{fmt}") as out:
            writer = open_writer(fmt, table, out)
            try:
                for line in spool:
                    record = json.loads(line)
                    if (record["participant_id"], record["session_id"]) not in kept:
                        continue
                    writer.write(self._row(record))
                    written += 1
            finally:
                writer.close()  # before the sink closes the file
        return written

    def _row(self, record: dict[str, Any]) -> dict[str, Any]:
        data = record.pop("data")
        more = record.pop("more")
        row = dict(record)
        for name, column in self.field_columns:
            row[column.name] = _typed(data.get(name), column.type)
        row[TRIALS_TRAILING[0].name] = more
        return row

    def _write_sessions(
        self,
        sessions: dict[tuple[str, str], list[tuple[int, str | None]]],
        kept: set[tuple[str, str]],
        sink: Sink,
        fmt: Format,
    ) -> int:
        by_participant: dict[str, list[tuple[str, int, str | None]]] = {}
        for (pid, sid), trials in sorted(sessions.items()):
            if (pid, sid) in kept:
                by_participant.setdefault(pid, []).extend((sid, index, at) for index, at in trials)
        written = 0
        with sink.open(f"{TRIAL_SESSIONS.name}.{fmt}") as out:
            writer = open_writer(fmt, TRIAL_SESSIONS, out)
            try:
                for pid, trials in by_participant.items():
                    stored: dict[str, list[int]] = {}
                    for sid, index, _ in trials:
                        stored.setdefault(sid, []).append(index)
                    done = self.completions.get(pid, SessionCompletions())
                    for summary in summarise_sessions(pid, trials, done.completed_by, done.unverified):
                        expected = self.expected.of((pid, summary.session_id))
                        missing = missing_runs(stored.get(summary.session_id, []), expected)
                        writer.write(
                            {
                                "participant_id": pid,
                                "session_id": summary.session_id,
                                "completion": summary.completion,
                                "trial_count": summary.trial_count,
                                "first_trial_index": summary.first_trial_index,
                                "last_trial_index": summary.last_trial_index,
                                "missing_trials": missing_count(missing),
                                "expected_trials": expected,
                                "missing_indices": index_ranges(missing) or None,
                                "first_received_at": summary.first_received_at,
                                "last_received_at": summary.last_received_at,
                                "submission_key": summary.submission_key,
                                "unverified_submissions": summary.unverified_submissions,
                            }
                        )
                        written += 1
            finally:
                writer.close()
        return written


def _trial_record(participant_id: str, session_id: str, index: int | None, document: dict[str, Any]) -> dict:
    """What the spool keeps of one trial: the fixed columns and its trialData."""
    data = document.get("trialData")
    upload = {k: v for k, v in without_private_fields(document).items() if k not in _OWN_COLUMN | _SKIPPED}
    if not isinstance(data, dict):  # not what the collector stores; kept, not lost
        upload["trialData"] = data
        data = {}
    received = document.get("serverReceivedAt")
    return {
        "participant_id": participant_id,
        "session_id": session_id,
        "trial_index": index,
        "server_received_at": received if isinstance(received, str) else None,
        "key_verified": document.get("keyVerified") is not False,
        "upload_json": compact_json(upload, sort_keys=True) if upload else None,
        "data": data,
    }


def _split_fields(data: dict[str, Any], kinds: dict[str, _FieldKind]) -> tuple[dict[str, Any], str | None]:
    """A trial's fields that have (or now get) a column, and the rest as their JSON text.

    Columns go to the first ``MAX_TRIAL_FIELD_COLUMNS`` names met, so whether a name gets one is
    known the moment it is met: only those names are tracked (memory bounded by the cap, not by
    how many distinct names the trials hold), each trial is split by looking up the tracked names
    in it (not the other way round), and the rest is written out once, here. Takes ``data`` apart.
    """
    if len(kinds) < MAX_TRIAL_FIELD_COLUMNS:
        for name in data:
            if len(kinds) >= MAX_TRIAL_FIELD_COLUMNS:
                break
            kinds.setdefault(name, _FieldKind())
    columns = {name: data.pop(name) for name in kinds if name in data}
    for name, value in columns.items():
        kinds[name].observe(value)
    return columns, _sorted_json(data) if data else None


def _sorted_json(data: dict[str, Any], chunk: int = 2000) -> str:
    """``compact_json(data, sort_keys=True)``, encoded a slice of fields at a time.

    One encoder call on 150,000 fields holds the interpreter lock for a few hundred ms, and the
    dashboard's zip runs in the collector's process: slices let ``/healthz`` and uploads in between.
    """
    if len(data) <= chunk:
        return compact_json(data, sort_keys=True)
    names = sorted(data)
    parts = (
        compact_json({name: data[name] for name in names[start : start + chunk]})[1:-1]
        for start in range(0, len(names), chunk)
    )
    return "{" + ",".join(parts) + "}"


def _field_columns(kinds: dict[str, _FieldKind]) -> list[tuple[str, Column]]:
    """Column per trialData field; a name already taken (e.g. jsPsych's own ``trial_index``) gets
    ``data_`` in front until it is free."""
    taken = {*TRIALS.column_names, *(c.name for c in TRIALS_TRAILING), ""}
    columns = []
    for name, kind in kinds.items():
        column_name = name
        while column_name in taken:
            column_name = "data_" + column_name
        taken.add(column_name)
        columns.append((name, Column(column_name, kind.type, f"trialData field {json.dumps(name)}.")))
    return columns


def _typed(value: Any, column_type: ColumnType) -> Any:
    if value is None:
        return None
    if column_type == "float64":
        return float(value)
    if column_type == "string":
        return value if isinstance(value, str) else compact_json(value)
    return value  # bool and int64 columns hold only such values

