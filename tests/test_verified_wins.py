"""What speaks for a participant in the research tools: uploads not marked ``keyVerified: false``.

A keyless submission carrying a claimed participant's real sessionId (anyone can send one) is
stored and shown apart: it does not complete that session (dashboard and trial_sessions), does not
become its submission_key, and does not move "Last upload" or the submission count. The
participant's own submission still completes the session afterwards. A participant who never held
a key is unaffected: their keyless uploads speak for them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from collector.export import DirectorySink, export_bucket
from collector.keys import KeyLayout
from collector.storage import ObjectStore
from tests.support.exports import read_table
from tests.test_admin_http import log_in

URL = "/api/upload-user-data"
KEY = "v" * 22
PID = "VW1"
RUN = "run-real-1"


def trial(index: int, pid: str = PID, **extra: object) -> dict[str, object]:
    return {
        "participantId": pid,
        "uploadType": "trial",
        "sessionId": RUN,
        "trialIndex": index,
        "trialData": {"rt": 400 + index},
        **extra,
    }


def submission(when: str, pid: str = PID, **extra: object) -> dict[str, object]:
    return {
        "participantId": pid,
        "uploadType": "submission",
        "timestamp": when,
        "submissionData": {"sessionId": RUN, "trials": []},
        **extra,
    }


@pytest.fixture
def forged(client: TestClient) -> str:
    """VW1 holds a key and ran RUN partly (keyed trials); then a keyless submission naming RUN."""
    status = {"participantId": PID, "uploadType": "status", "participantKey": KEY}
    assert client.post(URL, json=status).status_code == 200
    for index in range(3):
        assert client.post(URL, json=trial(index, participantKey=KEY)).status_code == 200
    answer = client.post(URL, json=submission("2026-01-01T00:00:00.000Z"))
    assert answer.status_code == 200 and answer.json()["keyVerified"] is False
    return next(key for key in answer.json()["filesUploaded"] if "/submissions/" in key)


def exported(store: ObjectStore, layout: KeyLayout, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    export_bucket(store, layout, DirectorySink(out), fmt="csv")
    sessions = read_table(out, "trial_sessions", "csv")
    participants = read_table(out, "participants", "csv")
    return (
        sessions[sessions.participant_id == PID].reset_index(drop=True),
        participants[participants.participant_id == PID].reset_index(drop=True),
    )


def test_a_keyless_submission_does_not_complete_the_session_in_the_export(
    store: ObjectStore, layout: KeyLayout, forged: str, tmp_path: Path
) -> None:
    sessions, participants = exported(store, layout, tmp_path)
    assert list(sessions.completion) == ["partial"]
    assert list(sessions.submission_key) == [""]
    assert list(sessions.unverified_submissions) == ["1"]
    assert list(participants.submission_count) == ["0"]
    assert list(participants.unverified_submission_count) == ["1"]
    submissions = read_table(tmp_path, "submissions", "csv")
    assert list(submissions[submissions.key == forged].key_verified) == ["false"]  # kept, shown apart


def test_the_participants_own_submission_still_completes_it(
    client: TestClient, store: ObjectStore, layout: KeyLayout, forged: str, tmp_path: Path
) -> None:
    answer = client.post(URL, json=submission("2026-02-01T00:00:00.000Z", participantKey=KEY))
    assert answer.status_code == 200 and "keyVerified" not in answer.json()
    real = next(key for key in answer.json()["filesUploaded"] if "/submissions/" in key)
    assert forged < real  # the forged one comes first in key order, and still does not win
    sessions, participants = exported(store, layout, tmp_path)
    assert list(sessions.completion) == ["complete"]
    assert list(sessions.submission_key) == [real]
    assert (list(participants.submission_count), list(participants.unverified_submission_count)) == (
        ["1"],
        ["1"],
    )


def test_a_keyless_submission_does_not_complete_the_session_on_the_dashboard(
    client: TestClient, forged: str
) -> None:
    log_in(client)
    page = client.get(f"/admin/participants/{PID}").text
    section = page[page.index('id="trial-sessions"') :]
    assert f'<tr class="partial">\n    <td><code>{RUN}</code>' in section
    assert "1 unverified</span>" in section


def test_a_keyless_submission_does_not_move_the_count_or_last_upload(
    client: TestClient, store: ObjectStore, layout: KeyLayout, forged: str
) -> None:
    admin = client.app.state.admin  # type: ignore[attr-defined]
    summary = next(p for p in admin.index.refresh().participants if p.participant_id == PID)
    status_time = next(iter(store.list(layout.status_key(PID)))).last_modified
    assert (summary.submission_count, summary.unverified_count) == (0, 1)
    assert summary.submission_times == ()
    assert summary.last_upload == status_time  # the forged submission came later, and is left out
    log_in(client)
    row = client.get("/admin/participants").text.split(f">{PID}</a>", 1)[1].split("</tr>", 1)[0]
    assert '<td class="num">0 <span class="badge unverified"' in row and "+1 unverified" in row
    overview = client.get("/admin").text
    assert 'id="submission-count">0<' in overview and 'id="unverified-count">1<' in overview


def test_a_participant_who_never_held_a_key_is_completed_by_a_keyless_submission(
    client: TestClient, store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> None:
    for index in range(2):
        assert client.post(URL, json=trial(index, pid="OPEN1")).status_code == 200
    answer = client.post(URL, json=submission("2026-01-01T00:00:00.000Z", pid="OPEN1"))
    assert answer.status_code == 200 and "keyVerified" not in answer.json()
    export_bucket(store, layout, DirectorySink(tmp_path), fmt="csv")
    sessions = read_table(tmp_path, "trial_sessions", "csv")
    assert list(sessions.completion) == ["complete"]
    submission_key = next(key for key in answer.json()["filesUploaded"] if "/submissions/" in key)
    assert list(sessions.submission_key) == [submission_key]
    admin = client.app.state.admin  # type: ignore[attr-defined]
    summary = next(p for p in admin.index.refresh().participants if p.participant_id == "OPEN1")
    assert (summary.submission_count, summary.unverified_count) == (1, 0)


def test_a_keyless_submission_before_the_first_claim_gives_way_to_the_participants_own(
    client: TestClient, store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> None:
    """Stored before anyone held a key, a forged submission carries no mark and counts; once the
    participant's own keyed submission names the session, that one completes it."""
    early = client.post(URL, json=submission("2026-01-01T00:00:00.000Z"))
    assert early.status_code == 200 and "keyVerified" not in early.json()
    forged = next(key for key in early.json()["filesUploaded"] if "/submissions/" in key)
    for index in range(2):
        assert client.post(URL, json=trial(index, participantKey=KEY)).status_code == 200
    own = client.post(URL, json=submission("2026-02-01T00:00:00.000Z", participantKey=KEY))
    assert own.status_code == 200
    real = next(key for key in own.json()["filesUploaded"] if "/submissions/" in key)
    assert forged < real
    sessions, _ = exported(store, layout, tmp_path)
    assert list(sessions.submission_key) == [real]
    log_in(client)
    page = client.get(f"/admin/participants/{PID}").text
    assert f'<tr class="complete">\n    <td><code>{RUN}</code>' in page
