"""What one run of an experiment adds up to: its trials, and whether it was completed.

The rule for complete (the same in the export and on the dashboard): a session is *complete*
when the participant has a submission that speaks for them (not marked ``"keyVerified": false``:
``reading.records.is_unverified``) whose document names that session, as ``sessionId`` at its
top level or inside ``submissionData``; otherwise it is *partial* (trials were stored but the
final dataset never arrived: the tab was closed, the browser crashed, the participant left).
An unverified submission naming a session is counted beside it, never completes it: anyone can
send one for any participant and session ID.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..keys import format_timestamp, is_valid_participant_id, parse_timestamp

COMPLETE = "complete"
PARTIAL = "partial"


@dataclass(frozen=True)
class TrialSession:
    participant_id: str
    session_id: str
    trial_count: int
    first_trial_index: int
    last_trial_index: int
    first_received_at: str | None  # ISO-8601 UTC, or None when no trial says
    last_received_at: str | None
    submission_key: str | None  # the first submission (in key order) that names this session
    unverified_submissions: int = 0  # unverified submissions naming it: shown apart, never completing

    @property
    def complete(self) -> bool:
        return self.submission_key is not None

    @property
    def completion(self) -> str:
        return COMPLETE if self.complete else PARTIAL

    @property
    def missing_trials(self) -> int:
        """Indices between 0 and the last one stored that have no trial (e.g. not sent yet)."""
        return self.last_trial_index + 1 - self.trial_count


def submission_session_ids(document: Mapping[str, Any]) -> set[str]:
    """The session ids a submission names: ``sessionId`` at top level or in ``submissionData``."""
    found = set()
    data = document.get("submissionData")
    for holder in (document, data if isinstance(data, Mapping) else {}):
        value = holder.get("sessionId")
        if is_valid_participant_id(value):  # a session id has the same alphabet and length
            found.add(value)
    return found


@dataclass
class SessionCompletions:
    """Which submission completes each session, from a participant's submissions in any order.

    Among the submissions naming a session, one sent with the participant's key
    (``keyVerified: true``) wins over one stored while nobody held a key (no mark: possibly
    anyone's, before the participant's first keyed upload); then the first in key order.
    """

    completed_by: dict[str, str] = field(default_factory=dict)  # session id -> submission key
    unverified: Counter[str] = field(default_factory=Counter)  # session id -> unverified naming it
    _rank: dict[str, tuple[bool, str]] = field(default_factory=dict)

    def note(self, key: str, session_ids: Iterable[str], *, unverified: bool, keyed: bool = False) -> None:
        """``unverified``: marked keyVerified: false; ``keyed``: marked keyVerified: true."""
        for session_id in session_ids:
            if unverified:
                self.unverified[session_id] += 1
                continue
            rank = (not keyed, key)
            if session_id not in self._rank or rank < self._rank[session_id]:
                self._rank[session_id] = rank
                self.completed_by[session_id] = key


def summarise_sessions(
    participant_id: str,
    trials: Iterable[tuple[str, int, datetime | str | None]],
    completed_by: Mapping[str, str],
    unverified: Mapping[str, int] | None = None,
) -> list[TrialSession]:
    """One summary per session, ordered by session id.

    ``trials``: (session id, trial index, when it was received) for each stored trial;
    ``completed_by``: session id -> key of the submission that completes it; ``unverified``:
    session id -> unverified submissions naming it (``SessionCompletions`` makes both).
    """
    grouped: dict[str, list[tuple[int, datetime | None]]] = {}
    for session_id, index, received in trials:
        moment = parse_timestamp(received) if isinstance(received, str) else received
        grouped.setdefault(session_id, []).append((index, moment))
    summaries = []
    for session_id in sorted(grouped):
        entries = grouped[session_id]
        indices = [index for index, _ in entries]
        moments = [moment for _, moment in entries if moment is not None]
        summaries.append(
            TrialSession(
                participant_id=participant_id,
                session_id=session_id,
                trial_count=len(entries),
                first_trial_index=min(indices),
                last_trial_index=max(indices),
                first_received_at=format_timestamp(min(moments)) if moments else None,
                last_received_at=format_timestamp(max(moments)) if moments else None,
                submission_key=completed_by.get(session_id),
                unverified_submissions=(unverified or {}).get(session_id, 0),
            )
        )
    return summaries
