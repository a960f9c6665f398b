"""Trials in the research tools: the trials and trial_sessions export tables, verify, the dashboard.

Trials are stored through the real HTTP API (so the export reads what the collector writes);
hand-made objects are used only for what the collector never writes (tampered files).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from collector.cli import main
from collector.export import DirectorySink, export_bucket
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from collector.verify import NO_STATUS, NOT_JSON, STRAY_KEY, WRONG_PARTICIPANT, WRONG_TRIAL, verify_bucket
from tests.support.collector_process import settings_environment
from tests.support.exports import read_table
from tests.test_admin_http import log_in

URL = "/api/upload-user-data"


def trial(pid: str, session: str, index: int, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "participantId": pid,
        "uploadType": "trial",
        "sessionId": session,
        "trialIndex": index,
        "trialData": data,
        "uploadId": f"{pid}-{session}-{index}",
        "timestamp": "2026-11-25T10:00:00.000Z",
        **extra,
    }


def jspsych_data(index: int) -> dict[str, Any]:
    """What jsPsych's on_data_update gives for a keyboard-response trial."""
    return {
        "rt": 400 + index,
        "stimulus": f"<p>{index}</p>",
        "response": "f" if index % 2 else "j",
        "correct": index % 3 == 0,
        "trial_type": "html-keyboard-response",
        "trial_index": index,
        "time_elapsed": 1000.5 * index,
    }


@pytest.fixture
def trials_stored(client: TestClient) -> None:
    """P1: a finished run A (5 trials + a submission naming it in submissionData) and a run B
    left after 3 trials; P2: a run whose submission names it at top level, one trial of odd data."""
    for index in range(5):
        assert client.post(URL, json=trial("P1", "run-A", index, jspsych_data(index))).status_code == 200
    for index in range(3):
        assert client.post(URL, json=trial("P1", "run-B", index, jspsych_data(index))).status_code == 200
    client.post(URL, json=trial("P1", "run-A", 2, jspsych_data(2)))  # a retry: still one row
    submission = {"participantId": "P1", "uploadType": "submission", "submissionData": {"sessionId": "run-A"}}
    assert client.post(URL, json=submission).status_code == 200
    odd = {"rt": "slow", "nested": {"a": [1, 2]}, "flag": True, "big": 2**70, "": "empty name", "n": None}
    assert client.post(URL, json=trial("P2", "s9", 0, odd, condition="B")).status_code == 200
    assert client.post(URL, json=trial("P2", "s9", 2, {"rt": 3.5, "flag": False})).status_code == 200
    finished = {"participantId": "P2", "sessionId": "s9", "submissionData": {"all": []}}
    assert client.post(URL, json=finished).status_code == 200


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_trials_table_has_one_row_per_stored_trial(
    store: ObjectStore, layout: KeyLayout, trials_stored: None, tmp_path: Path, fmt: str
) -> None:
    report = export_bucket(store, layout, DirectorySink(tmp_path), fmt=fmt)  # type: ignore[arg-type]
    stored = [i.key for i in store.list(layout.participants_root) if "/trials/" in i.key]
    assert report.rows["trials"] == len(stored) == 10
    trials = read_table(tmp_path, "trials", fmt)
    assert len(trials) == 10
    assert list(trials.columns[:6]) == [
        "participant_id",
        "session_id",
        "trial_index",
        "server_received_at",
        "key_verified",
        "upload_json",
    ]
    assert list(trials.columns[-1:]) == ["more_trial_fields_json"]
    ids = list(
        zip(
            trials["participant_id"],
            trials["session_id"],
            [str(i) for i in trials["trial_index"]],
            strict=True,
        )
    )
    assert ids == [("P1", "run-A", str(i)) for i in range(5)] + [
        ("P1", "run-B", str(i)) for i in range(3)
    ] + [
        ("P2", "s9", "0"),
        ("P2", "s9", "2"),
    ]
    # trialData fields in first-met order; jsPsych's own trial_index gets data_ in front.
    fields = list(trials.columns[6:-1])
    assert fields[:7] == [
        "rt",
        "stimulus",
        "response",
        "correct",
        "trial_type",
        "data_trial_index",
        "time_elapsed",
    ]
    assert set(fields[7:]) == {"nested", "flag", "big", "data_", "n"}
    first = trials.iloc[0]
    assert json.loads(first["upload_json"]) == {
        "timestamp": "2026-11-25T10:00:00.000Z",
        "uploadId": "P1-run-A-0",
    }
    assert json.loads(trials.iloc[8]["upload_json"])["condition"] == "B"
    assert trials.iloc[8]["data_"] == "empty name"
    assert trials.iloc[8]["rt"] == "slow"  # rt is text in this export: one value was text
    if fmt == "parquet":
        schema = pq.read_schema(tmp_path / "trials.parquet")
        types = {name: str(schema.field(name).type) for name in schema.names}
        assert types["trial_index"] == "int64"
        assert types["rt"] == "string"  # mixed 400.. and "slow"
        assert types["data_trial_index"] == "int64"
        assert types["time_elapsed"] == "double"
        assert types["correct"] == "bool"
        assert types["flag"] == "bool"
        assert types["big"] == "string"  # past 64 bits: kept exactly as text
        assert types["nested"] == "string"
        assert types["key_verified"] == "bool"
        assert list(trials["correct"][:5]) == [True, False, False, True, False]
    if fmt == "csv":
        assert list(trials["correct"][:2]) == ["true", "false"]
        assert trials.iloc[8]["nested"] == '{"a":[1,2]}'
        assert trials.iloc[8]["big"] == str(2**70)
        assert list(trials["time_elapsed"][:2]) == ["0.0", "1000.5"]

    readme = (tmp_path / "README.md").read_text("utf-8")
    for table in ("trials", "trial_sessions"):
        for column in read_table(tmp_path, table, fmt).columns:
            assert f"`{column}`" in readme, f"{table}.{column} is not in the data dictionary"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_trial_sessions_are_complete_or_partial(
    store: ObjectStore, layout: KeyLayout, trials_stored: None, tmp_path: Path, fmt: str
) -> None:
    report = export_bucket(store, layout, DirectorySink(tmp_path), fmt=fmt)  # type: ignore[arg-type]
    assert report.rows["trial_sessions"] == 3
    sessions = read_table(tmp_path, "trial_sessions", fmt)
    rows = [
        (r.participant_id, r.session_id, r.completion, str(r.trial_count), str(r.missing_trials))
        for r in sessions.itertuples()
    ]
    assert rows == [
        ("P1", "run-A", "complete", "5", "0"),
        ("P1", "run-B", "partial", "3", "0"),
        ("P2", "s9", "complete", "2", "1"),  # index 1 never arrived
    ]
    assert "/submissions/P1_Complete_" in sessions.iloc[0]["submission_key"]
    assert sessions.iloc[1]["submission_key"] in ("", None) or pd.isna(sessions.iloc[1]["submission_key"])
    assert sessions.iloc[0]["first_received_at"] <= sessions.iloc[0]["last_received_at"]
    # The table about sessionHistory keeps its name and is not this one.
    assert list(read_table(tmp_path, "sessions", fmt).columns)[:2] == ["participant_id", "session_index"]


def test_trial_exports_are_byte_identical(
    store: ObjectStore, layout: KeyLayout, trials_stored: None, tmp_path: Path
) -> None:
    for fmt in ("csv", "jsonl", "parquet"):
        export_bucket(store, layout, DirectorySink(tmp_path / f"a-{fmt}"), fmt=fmt)  # type: ignore[arg-type]
        export_bucket(store, layout, DirectorySink(tmp_path / f"b-{fmt}"), fmt=fmt, workers=2)  # type: ignore[arg-type]
        for name in ("trials", "trial_sessions"):
            a = (tmp_path / f"a-{fmt}" / f"{name}.{fmt}").read_bytes()
            assert a == (tmp_path / f"b-{fmt}" / f"{name}.{fmt}").read_bytes()
        assert (tmp_path / f"a-{fmt}" / "README.md").read_bytes() == (
            tmp_path / f"b-{fmt}" / "README.md"
        ).read_bytes()


def test_filters_apply_to_trials(
    store: ObjectStore, layout: KeyLayout, trials_stored: None, tmp_path: Path
) -> None:
    only = export_bucket(store, layout, DirectorySink(tmp_path / "p2"), participant_ids=["P2"])
    assert (only.rows["trials"], only.rows["trial_sessions"]) == (2, 1)
    future = export_bucket(
        store, layout, DirectorySink(tmp_path / "f"), since=datetime(2999, 1, 1, tzinfo=UTC)
    )
    assert (future.rows["trials"], future.rows["trial_sessions"]) == (0, 0)


def test_a_tampered_trial_is_reported_and_left_out(
    store: ObjectStore, layout: KeyLayout, trials_stored: None, tmp_path: Path
) -> None:
    broken = layout.trial_key("P3", "s1", 0)
    store.put(broken, b'{"truncated')
    odd = layout.trial_key("P3", "s1", 1)
    store.put(odd, json.dumps({"participantId": "P3", "trialData": [1, 2]}).encode())
    report = export_bucket(store, layout, DirectorySink(tmp_path))
    assert [p.key for p in report.problems] == [broken]
    trials = read_table(tmp_path, "trials", "csv")
    row = trials[trials["participant_id"] == "P3"].iloc[0]
    assert json.loads(row["upload_json"]) == {"trialData": [1, 2]}  # kept, not lost


def test_cli_export_writes_the_trial_tables(settings: Settings, trials_stored: None, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", "--out", str(tmp_path)], env=settings_environment(settings))
    assert result.exit_code == 0, result.output
    assert "10 trials" in result.output and "3 trial_sessions" in result.output
    assert (tmp_path / "trials.csv").exists() and (tmp_path / "trial_sessions.csv").exists()


# --- verify -----------------------------------------------------------------------------------


def test_verify_accepts_stored_trials(
    store: ObjectStore, layout: KeyLayout, trials_stored: None, settings: Settings
) -> None:
    report = verify_bucket(store, layout)
    assert report.ok, report.defects
    assert report.trials == 10
    result = CliRunner().invoke(main, ["verify"], env=settings_environment(settings))
    assert result.exit_code == 0, result.output
    assert "10 trials" in result.output


def test_a_participant_with_only_trials_needs_no_status(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    client.post(URL, json=trial("ONLY", "s", 0, {"rt": 1}))
    report = verify_bucket(store, layout)
    assert report.ok, report.defects
    assert (report.participants, report.statuses, report.trials) == (1, 0, 1)


def test_verify_reports_trials_that_do_not_match_their_key(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    client.post(URL, json=trial("P1", "s", 0, {"rt": 1}))
    good = layout.trial_key("P1", "s", 0)
    moved = layout.trial_key("P1", "other", 5)
    store.put(moved, store.get(good).body)  # session and index of another key
    wrong_owner = layout.trial_key("P2", "s", 0)
    store.put(wrong_owner, store.get(good).body)
    float_index = layout.trial_key("P1", "s", 1)
    store.put(float_index, json.dumps(trial("P1", "s", 1.0, {})).encode())  # type: ignore[arg-type]
    bool_index = layout.trial_key("P1", "s", 2)
    store.put(bool_index, json.dumps({**trial("P1", "s", 2, {}), "trialIndex": True}).encode())
    stray = f"{layout.trials_dir('P1', 's')}7.json"
    store.put(stray, b"{}")
    not_json = layout.trial_key("P1", "s", 3)
    store.put(not_json, b"[]")

    report = verify_bucket(store, layout)
    found = {(d.kind, d.key) for d in report.defects}
    assert found == {
        (WRONG_TRIAL, moved),
        (WRONG_PARTICIPANT, wrong_owner),
        (WRONG_TRIAL, float_index),
        (STRAY_KEY, stray),
        (NOT_JSON, not_json),
        (WRONG_TRIAL, bool_index),  # JSON true is not the index 2 (nor 1)
    }
    assert NO_STATUS not in {d.kind for d in report.defects}


# --- dashboard --------------------------------------------------------------------------------


def test_participant_page_lists_trial_sessions(client: TestClient, trials_stored: None) -> None:
    log_in(client)
    page = client.get("/admin/participants/P1")
    assert page.status_code == 200
    html = page.text
    assert 'id="trial-sessions"' in html
    section = html[html.index('id="trial-sessions"') :]
    assert '<tr class="complete">' in section and '<tr class="partial">' in section
    a = section[section.index("run-A") : section.index("run-B")]
    assert '<td class="num">5</td>' in a and "complete" in a
    b = section[section.index("run-B") :]
    assert '<td class="num">3</td>' in b and "partial" in b


def test_participant_page_without_trials_says_so(client: TestClient) -> None:
    client.post(URL, json={"participantId": "NOTR", "uploadType": "status"})
    log_in(client)
    page = client.get("/admin/participants/NOTR")
    assert "No per-trial data." in page.text
