"""Completeness: trial_sessions' expected and missing trials, ``collector report``, hostile counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from collector.cli import main
from collector.completeness import index_ranges, missing_runs, study_completeness
from collector.keys import MAX_TRIAL_INDEX, KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.analysis_bucket import seed_analysis_bucket, trial_document
from tests.support.collector_process import settings_environment
from tests.support.factories import encode, make_submission, put_submission


def run(settings: Settings, *arguments: str) -> str:
    result = CliRunner(env=settings_environment(settings)).invoke(main, list(arguments))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_report_counts_every_kind_of_participant(
    store: ObjectStore, layout: KeyLayout, settings: Settings
) -> None:
    seed_analysis_bucket(store, layout)
    text = run(settings, "report")
    assert "  participants started:      3\n" in text
    assert "  finished:                  1\n" in text
    assert "  started, not finished:     2  (SYNTH02, SYNTH03)\n" in text
    assert "  with missing trials:       1  (SYNTH02)\n" in text
    assert "  withdrawn (erased):        1\n" in text
    assert "  trial sessions:            2 (1 complete, 1 partial)\n" in text
    assert "    SYNTH02 / b2: partial, 3 of 5 trials received, missing 2,4\n" in text

    study = json.loads(run(settings, "report", "--json"))["studies"][0]
    assert study["counts"] == {
        "started": 3,
        "finished": 1,
        "notFinished": 2,
        "withMissingTrials": 1,
        "finishedWithMissingTrials": 0,
        "withdrawn": 1,
        "trialSessions": 2,
        "completeSessions": 1,
        "partialSessions": 1,
    }
    assert study["withdrawn"] == ["SYNTH04"] and study["notFinished"] == ["SYNTH02", "SYNTH03"]
    assert study["incompleteSessions"] == [
        {
            "participantId": "SYNTH02",
            "sessionId": "b2",
            "completion": "partial",
            "expectedTrials": 5,
            "receivedTrials": 3,
            "missingTrials": 2,
            "missingIndices": "2,4",
        }
    ]


@pytest.mark.parametrize("backend", ["local"])
def test_trial_sessions_table_gives_expected_received_and_missing(
    store: ObjectStore, layout: KeyLayout, settings: Settings, tmp_path: Path
) -> None:
    seed_analysis_bucket(store, layout)
    # A session whose highest trial says nothing about its length: gaps up to the highest index only.
    for index in (0, 2):
        store.put(
            layout.trial_key("SYNTH03", "c3", index), encode(trial_document("SYNTH03", "c3", index, None))
        )
    CliRunner(env=settings_environment(settings)).invoke(
        main, ["export", "--out", str(tmp_path), "--format", "jsonl"]
    )
    lines = (tmp_path / "trial_sessions.jsonl").read_text(encoding="utf-8").splitlines()
    rows = {row["session_id"]: row for row in map(json.loads, lines)}
    assert rows["run_A"]["expected_trials"] == 4 and rows["run_A"]["missing_trials"] == 0
    assert rows["run_A"]["missing_indices"] is None and rows["run_A"]["trial_count"] == 4
    assert rows["b2"]["expected_trials"] == 5 and rows["b2"]["trial_count"] == 3
    assert rows["b2"]["missing_trials"] == 2 and rows["b2"]["missing_indices"] == "2,4"
    assert rows["c3"]["expected_trials"] is None and rows["c3"]["missing_indices"] == "1"
    # The report agrees with the table.
    sessions = {s.session_id: s for p in study_completeness(store, layout).participants for s in p.sessions}
    assert {sid: (s.expected, index_ranges(s.missing)) for sid, s in sessions.items()} == {
        "run_A": (4, ""),
        "b2": (5, "2,4"),
        "c3": (None, "1"),
    }


@pytest.mark.parametrize("backend", ["local"])
@pytest.mark.parametrize(
    "claimed", [10**12, MAX_TRIAL_INDEX + 2, 0, -3, True, "5", 2.5, None], ids=lambda value: repr(value)
)
def test_hostile_expected_counts_are_ignored(store: ObjectStore, layout: KeyLayout, claimed: object) -> None:
    """A trial claiming an absurd length must not make the report list (or allocate) absurd gaps."""
    document = trial_document("SYNTH09", "s", 1, None)
    document["expectedTrials"] = claimed
    store.put(layout.trial_key("SYNTH09", "s", 1), encode(document))
    (session,) = study_completeness(store, layout).participants[0].sessions
    assert session.expected is None and session.missing == [(0, 0)]


@pytest.mark.parametrize("backend", ["local"])
def test_an_unverified_submission_neither_finishes_nor_completes(
    store: ObjectStore, layout: KeyLayout
) -> None:
    seed_analysis_bucket(store, layout)
    forged = make_submission("SYNTH02", data={"sessionId": "b2"}, sessionId="b2", keyVerified=False)
    put_submission(store, layout, forged)
    participants = {p.participant_id: p for p in study_completeness(store, layout).participants}
    assert not participants["SYNTH02"].finished and participants["SYNTH02"].submissions == 1
    assert not participants["SYNTH02"].sessions[0].complete


def test_missing_runs() -> None:
    assert missing_runs([0, 1, 3], 5) == [(2, 2), (4, 4)]
    assert missing_runs([5, 6], None) == [(0, 4)]
    assert missing_runs([0, 1, 2], 2) == []  # a trial past the expected count is not a gap
    assert missing_runs([], 3) == [(0, 2)]
    assert index_ranges([(2, 2), (4, 6)]) == "2,4-6"


def test_expected_trials_sent_through_the_api_reach_the_report(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    """The field the jsPsych hooks send with each trial is stored as sent and read back here."""
    for index in (0, 1, 3):
        body = trial_document("SYNTH07", "api", index, 6)
        del body["serverReceivedAt"]  # the collector writes that one
        answer = client.post("/api/upload-user-data", json=body)
        assert answer.status_code == 200, answer.text
    (participant,) = study_completeness(store, layout).participants
    (session,) = participant.sessions
    assert (session.expected, session.received, index_ranges(session.missing)) == (6, 3, "2,4-5")
    assert not participant.finished
