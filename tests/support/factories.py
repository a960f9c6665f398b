"""Synthetic participant data for the research-tool tests and the export benchmark.

Every ID starts with ``SYNTH`` and every value is made up: nothing here came from a participant.
Documents are written through the store with ``KeyLayout`` keys, shaped as the collector stores
them (docs/bucket-layout.md §2-3: status.json without submissionData, a submission file with it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from collector.keys import KeyLayout, format_timestamp
from collector.storage import ObjectStore

BASE_TIME = datetime(2025, 11, 17, 9, 0, 0, tzinfo=UTC)


def synthetic_id(number: int) -> str:
    return f"SYNTH{number:05d}"


def make_session(index: int, *, start: datetime = BASE_TIME, completed: bool = True) -> dict[str, Any]:
    started = start + timedelta(days=index)
    record: dict[str, Any] = {
        "sessionId": f"s{index}",
        "startTime": format_timestamp(started),
        "duration": 1_800_000,
        "completed": completed,
    }
    if completed:
        record["endTime"] = format_timestamp(started + timedelta(minutes=30))
    return record


def make_status(
    participant_id: str,
    *,
    setup: bool = True,
    welcome: bool = True,
    tutorial: bool = True,
    tutorial_completed: bool = True,
    sessions: int = 0,
    responses: dict[str, Any] | None = None,
    when: datetime = BASE_TIME,
    **extra: Any,
) -> dict[str, Any]:
    """A status document as the study app sends it, plus the field the server adds."""
    history = [make_session(i, start=when) for i in range(sessions)]
    document: dict[str, Any] = {
        "participantId": participant_id,
        "timestamp": format_timestamp(when),
        "uploadType": "status",
        "hasSeenParticipantSetup": setup,
        "hasSeenWelcome": welcome,
        "hasSeenTutorial": tutorial,
        "tutorialCompleted": tutorial_completed,
        "weeklySessionCount": min(sessions, 3),
        "weekStartDate": when.date().isoformat(),
        "totalSessionsStarted": sessions,
        "totalSessionsCompleted": sessions,
        "totalSessionTime": sessions * 1_800_000,
        "totalSessionTimeHours": sessions * 0.5,
        "sessionHistory": history,
        "selectedVolcano": "Okmok",
        "selectedMode": "study",
        "serverReceivedAt": format_timestamp(when + timedelta(seconds=1)),
    }
    if responses is not None:
        document["participantResponses"] = responses
    document.update(extra)
    return document


def make_submission(
    participant_id: str, *, when: datetime = BASE_TIME, data: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A submission file: the upload's fields with submissionData (a made-up jsonDump)."""
    document = make_status(participant_id, when=when, uploadType="submission")
    document.pop("sessionHistory")
    document["submissionData"] = data if data is not None else {"regions": [], "synthetic": True}
    document.update(extra)
    return document


def encode(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")


def put_status(store: ObjectStore, layout: KeyLayout, document: dict[str, Any]) -> str:
    key = layout.status_key(document["participantId"])
    store.put(key, encode(document))
    return key


def put_submission(
    store: ObjectStore, layout: KeyLayout, document: dict[str, Any], *, folder: str | None = None
) -> str:
    """Store a submission under its timestamp; ``folder`` puts it in another participant's folder."""
    owner = folder or document["participantId"]
    moment = datetime.fromisoformat(document["timestamp"].replace("Z", "+00:00"))
    key = layout.submission_key(owner, moment)
    store.put(key, encode(document))
    return key
