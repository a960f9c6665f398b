"""Completeness: did every participant finish, and which trials are missing?

Shared by the export's ``trial_sessions`` table, ``collector report`` and the dashboard's
"Completeness" page, so that the three always agree:

* A session's **expected** trial count is the ``expectedTrials`` its highest-indexed stored trial
  carries (the jsPsych hooks send the timeline's count when the study knows it): a whole number
  from 1 to the largest trial index + 1; anything else counts as not sent.
* Its **missing** indices are those from 0 to expected - 1 (else to the highest stored index)
  with no stored trial.
* A participant has **started** when anything of theirs is stored, and has **finished** when
  they have a verified submission (not marked ``keyVerified: false``; a participant who never had
  a key counts as verified). A session is **complete** when such a submission names it.
* **Withdrawn** participants are those erased at the research team's request (a tombstone).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .keys import MAX_TRIAL_INDEX, KeyLayout
from .reading.scan import DEFAULT_READERS, decode_object, list_bucket, read_many
from .storage import ObjectStore, StorageError
from .tombstone import is_tombstone
from .trials.sessions import submission_session_ids

Run = tuple[int, int]  # first and last index of consecutive missing trials


def expected_trials(document: dict[str, Any]) -> int | None:
    value = document.get("expectedTrials")
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TRIAL_INDEX + 1:
        return value
    return None


@dataclass
class ExpectedTrials:
    """Per session, the expectedTrials of its highest-indexed trial seen so far."""

    highest: dict[tuple[str, str], tuple[int, int | None]] = field(default_factory=dict)

    def note(self, session: tuple[str, str], index: int | None, document: dict[str, Any]) -> None:
        if index is None:
            return
        current = self.highest.get(session)
        if current is None or index >= current[0]:
            self.highest[session] = (index, expected_trials(document))

    def of(self, session: tuple[str, str]) -> int | None:
        found = self.highest.get(session)
        return found[1] if found else None


def missing_runs(stored: Iterable[int], expected: int | None) -> list[Run]:
    """Runs of indices with no stored trial, from 0 to expected - 1 (else to the highest stored)."""
    indices = sorted(set(stored))
    end = expected if expected is not None else (indices[-1] + 1 if indices else 0)
    runs: list[Run] = []
    next_index = 0
    for index in indices:
        if index >= end:
            break
        if index > next_index:
            runs.append((next_index, index - 1))
        next_index = index + 1
    if next_index < end:
        runs.append((next_index, end - 1))
    return runs


def missing_count(runs: list[Run]) -> int:
    return sum(last - first + 1 for first, last in runs)


def index_ranges(runs: list[Run]) -> str:
    """``2,4-6`` for the runs (2, 2) and (4, 6)."""
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in runs)


@dataclass
class SessionCompleteness:
    participant_id: str
    session_id: str
    complete: bool
    received: int
    expected: int | None
    missing: list[Run]

    @property
    def missing_count(self) -> int:
        return missing_count(self.missing)

    def as_json(self) -> dict[str, Any]:
        return {
            "participantId": self.participant_id,
            "sessionId": self.session_id,
            "completion": "complete" if self.complete else "partial",
            "expectedTrials": self.expected,
            "receivedTrials": self.received,
            "missingTrials": self.missing_count,
            "missingIndices": index_ranges(self.missing),
        }


@dataclass
class ParticipantCompleteness:
    participant_id: str
    finished: bool
    submissions: int
    verified_submissions: int
    sessions: list[SessionCompleteness] = field(default_factory=list)

    @property
    def missing_trials(self) -> bool:
        return any(session.missing_count for session in self.sessions)

    @property
    def incomplete(self) -> bool:
        return not self.finished or self.missing_trials or any(not s.complete for s in self.sessions)


@dataclass
class StudyCompleteness:
    study: str
    prefix: str
    participants: list[ParticipantCompleteness]
    withdrawn: list[str]

    def counts(self) -> dict[str, int]:
        sessions = [s for p in self.participants for s in p.sessions]
        return {
            "started": len(self.participants),
            "finished": sum(p.finished for p in self.participants),
            "notFinished": sum(not p.finished for p in self.participants),
            "withMissingTrials": sum(p.missing_trials for p in self.participants),
            "finishedWithMissingTrials": sum(p.finished and p.missing_trials for p in self.participants),
            "withdrawn": len(self.withdrawn),
            "trialSessions": len(sessions),
            "completeSessions": sum(s.complete for s in sessions),
            "partialSessions": sum(not s.complete for s in sessions),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "prefix": self.prefix,
            "counts": self.counts(),
            "notFinished": [p.participant_id for p in self.participants if not p.finished],
            "withMissingTrials": [p.participant_id for p in self.participants if p.missing_trials],
            "withdrawn": self.withdrawn,
            "incompleteSessions": [session.as_json() for session in self.incomplete_sessions()],
        }

    def incomplete_sessions(self) -> list[SessionCompleteness]:
        """Partial sessions, and complete ones with missing trials."""
        return [s for p in self.participants for s in p.sessions if not s.complete or s.missing_count]


def study_completeness(
    store: ObjectStore, layout: KeyLayout, *, study: str = "default", workers: int = DEFAULT_READERS
) -> StudyCompleteness:
    """Read what completeness needs: status files (erasures), every submission, and the
    highest-indexed trial of each session (its expectedTrials); trial indices come from the listing."""
    listing = list_bucket(store, layout)
    statuses = {entry.status.key: pid for pid, entry in listing.participants.items() if entry.status}
    withdrawn = set()
    for key, body in read_many(store, statuses, workers=workers):
        if not isinstance(body, StorageError) and _is_tombstone(body):
            withdrawn.add(statuses[key])
    submissions = {
        info.key: pid
        for pid, entry in listing.participants.items()
        if pid not in withdrawn
        for info in entry.submissions
    }
    verified: dict[str, int] = {}
    completed: set[tuple[str, str]] = set()
    for key, body in read_many(store, submissions, workers=workers):
        document = _document(body)
        if document is None or document.get("keyVerified") is False:
            continue
        pid = submissions[key]
        verified[pid] = verified.get(pid, 0) + 1
        completed.update((pid, session) for session in submission_session_ids(document))
    indices: dict[tuple[str, str], list[int]] = {}
    last_key: dict[tuple[str, str], tuple[int, str]] = {}
    for pid, entry in listing.participants.items():
        if pid in withdrawn:
            continue
        for info in entry.trials:
            parsed = layout.parse(info.key)
            if parsed is None or parsed.session_id is None or parsed.trial_index is None:
                continue
            session = (pid, parsed.session_id)
            indices.setdefault(session, []).append(parsed.trial_index)
            if session not in last_key or parsed.trial_index > last_key[session][0]:
                last_key[session] = (parsed.trial_index, info.key)
    expected = ExpectedTrials()
    sessions_of = {key: session for session, (_, key) in last_key.items()}
    for key, body in read_many(store, sessions_of, workers=workers):
        document = _document(body)
        if document is not None:
            expected.note(sessions_of[key], last_key[sessions_of[key]][0], document)
    participants = []
    for pid, entry in listing.participants.items():
        if pid in withdrawn:
            continue
        summary = ParticipantCompleteness(pid, pid in verified, len(entry.submissions), verified.get(pid, 0))
        for (owner, session_id), stored in sorted(indices.items()):
            if owner != pid:
                continue
            wanted = expected.of((pid, session_id))
            summary.sessions.append(
                SessionCompleteness(
                    pid,
                    session_id,
                    (pid, session_id) in completed,
                    len(stored),
                    wanted,
                    missing_runs(stored, wanted),
                )
            )
        participants.append(summary)
    return StudyCompleteness(study, layout.prefix, participants, sorted(withdrawn))


def _document(body: bytes | StorageError) -> dict[str, Any] | None:
    if isinstance(body, StorageError):
        return None
    try:
        return decode_object(body)
    except ValueError:
        return None


def _is_tombstone(body: bytes) -> bool:
    document = _document(body)
    return document is not None and is_tombstone(document)


def report_lines(report: StudyCompleteness, *, listed: int = 20) -> list[str]:
    """The text form of ``collector report``."""
    counts = report.counts()

    def some(ids: list[str]) -> str:
        if not ids:
            return ""
        shown = ", ".join(ids[:listed])
        return f"  ({shown}{', ...' if len(ids) > listed else ''})"

    not_finished = [p.participant_id for p in report.participants if not p.finished]
    gaps = [p.participant_id for p in report.participants if p.missing_trials]
    lines = [
        f"Study {report.study} (prefix {report.prefix})",
        f"  participants started:      {counts['started']}",
        f"  finished:                  {counts['finished']}",
        f"  started, not finished:     {counts['notFinished']}{some(not_finished)}",
        f"  with missing trials:       {counts['withMissingTrials']}{some(gaps)}",
        f"  finished with gaps:        {counts['finishedWithMissingTrials']}",
        f"  withdrawn (erased):        {counts['withdrawn']}",
        f"  trial sessions:            {counts['trialSessions']} "
        f"({counts['completeSessions']} complete, {counts['partialSessions']} partial)",
    ]
    incomplete = report.incomplete_sessions()
    if incomplete:
        lines.append("  incomplete sessions:")
    for session in incomplete[:listed]:
        of = f" of {session.expected}" if session.expected is not None else ""
        gap = f", missing {index_ranges(session.missing)}" if session.missing else ""
        state = "complete" if session.complete else "partial"
        lines.append(
            f"    {session.participant_id} / {session.session_id}: {state}, "
            f"{session.received}{of} trials received{gap}"
        )
    if len(incomplete) > listed:
        lines.append(f"    ... and {len(incomplete) - listed} more (--json lists them all)")
    return lines
