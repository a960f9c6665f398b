"""``collector reconcile`` against Qualtrics-shaped exports written here, on both backends.

The exports follow what Qualtrics produces: the current three-header-row layout and the legacy
two-row one, a UTF-8 BOM, question text with a comma and a newline, Status as a code or as text,
two ResponseIds for one participant, IDs (and the ID column's name) with surrounding spaces.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from collector.cli import main
from collector.erasure import erase_participant
from collector.keys import KeyLayout
from collector.reconcile import status_excluded
from collector.reconcile_ledgers import prolific_status
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.collector_process import settings_environment
from tests.support.factories import make_status, make_submission, put_status, put_submission

COLUMNS = [
    "StartDate",
    "EndDate",
    "Status",
    "IPAddress",
    "Progress",
    "Duration (in seconds)",
    "Finished",
    "RecordedDate",
    "ResponseId",
    " PROLIFIC_PID ",  # Qualtrics keeps embedded-data names as typed, spaces included
    "Q1",
]
QUESTION_TEXT = [
    "Start Date",
    "End Date",
    "Response Type",
    "IP Address",
    "Progress",
    "Duration (in seconds)",
    "Finished",
    "Recorded Date",
    "Response ID",
    "PROLIFIC_PID",
    "How did the task feel?\nDescribe it, in your own words",
]
IMPORT_IDS = [
    '{"ImportId":"startDate","timezone":"America/Denver"}',
    '{"ImportId":"endDate","timezone":"America/Denver"}',
    '{"ImportId":"status"}',
    '{"ImportId":"ipAddress"}',
    '{"ImportId":"progress"}',
    '{"ImportId":"duration"}',
    '{"ImportId":"finished"}',
    '{"ImportId":"recordedDate","timezone":"America/Denver"}',
    '{"ImportId":"_recordId"}',
    '{"ImportId":"PROLIFIC_PID"}',
    '{"ImportId":"QID1_TEXT"}',
]
TEXT = {0: "IP Address", 1: "Survey Preview", 2: "Survey Test", 8: "Spam", 16: "Offline"}

# (participant, status code, finished, ResponseId)
RESPONSES = [
    (" BOTH1 ", 0, 1, "R_both1"),
    ("BOTH2", 0, 0, "R_both2a"),
    ("BOTH2", 0, 1, "R_both2b"),  # took the survey twice
    ("BACKUP2", 1, 1, "R_preview"),  # only a preview in Qualtrics: its real response was lost
    ("QONLY1", 0, 1, "R_q1"),
    ("QONLY2", 16, 1, "R_q2"),  # offline app: a real response
    ("ERASED1", 0, 1, "R_erased"),  # withdrew; their backup was erased
    ("EXCL1", 2, 1, "R_test"),
    ("EXCL2", 8, 0, "R_spam"),
    ("", 0, 1, "R_noid"),  # no ID given: counted apart
]
QUALTRICS_CATEGORIES = {
    "BOTH1": "both",
    "BOTH2": "both",
    "BACKUP1": "backup_only",
    "BACKUP2": "backup_only",
    "UNVER1": "backup_only",
    "QONLY1": "qualtrics_only",
    "QONLY2": "qualtrics_only",
    "ERASED1": "erased",
    "EXCL1": "qualtrics_excluded",
    "EXCL2": "qualtrics_excluded",
}
FORMULA = '=HYPERLINK("http://attacker.example/","click")'


def qualtrics_csv(*, header_rows: int, text_status: bool, bom: bool) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    if header_rows >= 2:
        writer.writerow(QUESTION_TEXT)
    if header_rows >= 3:
        writer.writerow(IMPORT_IDS)
    for n, (pid, status, finished, response_id) in enumerate(RESPONSES):
        writer.writerow(
            [
                "2025-11-19 09:00:00",
                "2025-11-19 09:20:00",
                TEXT[status] if text_status else status,
                "192.0.2.1",
                100 if finished else 40,
                1200,
                ("True" if finished else "False") if text_status else finished,
                f"2025-11-19 09:20:{n:02d}",
                response_id,
                pid,
                "fine, thanks\nreally",
            ]
        )
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8")


@pytest.fixture
def bucket(store: ObjectStore, layout: KeyLayout) -> ObjectStore:
    for pid in ("BOTH1", "BOTH2", "BACKUP1", "BACKUP2", "ERASED1"):
        extra = {"participantKeyHash": "sha256:SYNTHETIC", FORMULA: "@SUM(1+1)"} if pid == "BACKUP1" else {}
        put_status(store, layout, make_status(pid, sessions=1, **extra))
        put_submission(store, layout, make_submission(pid, data={"answer": f"{pid} older"}))
    later = datetime(2025, 11, 20, 12, 0, 0, 250000, tzinfo=UTC)
    put_submission(store, layout, make_submission("BACKUP1", when=later, data={"answer": "BACKUP1 latest"}))
    # After the verified one: an upload without the participant's key must not be what is recovered.
    forged = datetime(2025, 11, 21, 12, tzinfo=UTC)
    put_submission(
        store, layout, make_submission("BACKUP1", when=forged, data={"answer": "forged"}, keyVerified=False)
    )
    put_submission(store, layout, make_submission("UNVER1", data={"answer": "unverified"}, keyVerified=False))
    erase_participant(store, layout, "ERASED1", who="test", reason="withdrew", settle_seconds=0)
    return store


def _reconcile(settings: Settings, *arguments: str) -> Result:
    result = CliRunner(env=settings_environment(settings)).invoke(main, ["reconcile", *arguments])
    assert result.exit_code == 0, result.output
    return result


def _table(path: Path) -> dict[str, dict[str, str]]:
    return {row["participantId"]: row for row in csv.DictReader(path.open(encoding="utf-8"))}


@pytest.mark.parametrize(
    ("header_rows", "text_status", "bom"),
    [
        pytest.param(3, False, True, id="current-numeric-bom"),
        pytest.param(3, True, False, id="current-text"),
        pytest.param(2, True, True, id="legacy-text-bom"),
        pytest.param(2, False, False, id="legacy-numeric"),
        pytest.param(1, False, True, id="one-header-row-bom"),
        pytest.param(1, True, False, id="one-header-row-text"),
    ],
)
def test_every_category_with_exact_counts(
    bucket: ObjectStore, settings: Settings, tmp_path: Path, header_rows: int, text_status: bool, bom: bool
) -> None:
    export = tmp_path / "export.csv"
    export.write_bytes(qualtrics_csv(header_rows=header_rows, text_status=text_status, bom=bom))
    out, recovered = tmp_path / "reconciled.csv", tmp_path / "recovered"
    result = _reconcile(
        settings,
        *("--qualtrics", str(export), "--id-column", "PROLIFIC_PID"),
        *("--out", str(out), "--recover", str(recovered)),
    )
    layout_name = {1: "one-header-row", 2: "legacy", 3: "current"}[header_rows]
    # Every row of the file is accounted for, the first data row included whatever the layout.
    assert (
        f"Qualtrics export ({layout_name}, {header_rows} header row(s)): {header_rows + 10} rows: "
        f"{header_rows} header, 9 with a participant ID, 1 without an ID"
    ) in result.output
    assert (
        "10 participant IDs: 2 both, 3 backup_only, 2 qualtrics_only, 2 qualtrics_excluded, 1 erased"
    ) in result.output
    assert "Warning" not in result.output

    rows = _table(out)
    assert {pid: row["category"] for pid, row in rows.items()} == QUALTRICS_CATEGORIES
    assert rows["BOTH2"]["responseIds"] == "R_both2a;R_both2b"
    assert rows["BOTH2"]["finished"] == ("False;True" if text_status else "0;1")
    assert rows["BOTH2"]["recordedDate"] == "2025-11-19 09:20:01;2025-11-19 09:20:02"
    assert rows["BOTH1"]["backupSubmissions"] == "1"
    assert rows["BOTH1"]["lastReceivedAt"] == "2025-11-17T09:00:01.000Z"  # milliseconds, as everywhere
    assert rows["BACKUP1"]["backupSubmissions"] == "3"
    assert rows["BACKUP2"]["responseIds"] == "R_preview"  # shown, though excluded
    assert rows["QONLY1"]["backupSubmissions"] == "0" and rows["QONLY1"]["lastReceivedAt"] == ""
    assert rows["UNVER1"]["lastReceivedAt"].endswith("Z") and len(rows["UNVER1"]["lastReceivedAt"]) == 24
    assert rows["ERASED1"]["responseIds"] == "R_erased" and rows["ERASED1"]["backupSubmissions"] == "0"

    assert sorted(p.name for p in recovered.iterdir()) == ["BACKUP1.json", "BACKUP2.json", "status.csv"]
    assert "Recovered 2 participant(s)" in result.output
    assert "1 had only unverified submissions, not recovered: UNVER1" in result.output
    latest = json.loads((recovered / "BACKUP1.json").read_text(encoding="utf-8"))
    assert latest["submissionData"] == {"answer": "BACKUP1 latest"}  # not the later, unverified one
    status_text = (recovered / "status.csv").read_text(encoding="utf-8")
    assert "participantKeyHash" not in status_text and "SYNTHETIC" not in status_text
    status_rows = list(csv.DictReader(io.StringIO(status_text)))
    assert [r["participantId"] for r in status_rows] == ["BACKUP1", "BACKUP2", "UNVER1"]
    assert status_rows[0]["selectedVolcano"] == "Okmok"
    assert json.loads(status_rows[0]["sessionHistory"])[0]["sessionId"] == "s0"
    # A participant's field name and value would be formulas in a spreadsheet: both neutralised.
    assert status_rows[0]["'" + FORMULA] == "'@SUM(1+1)"
    assert FORMULA not in [name for name in status_rows[0]]


def v_numbered_csv() -> bytes:
    """The oldest layout: V1, V2, ... in row 1, the column names in row 2 (no RecordedDate)."""
    names = ["ResponseID", "ResponseSet", "Name", "ExternalDataReference", "EmailAddress", "IPAddress"]
    names += ["Status", "StartDate", "EndDate", "Finished", "How did the task feel?", "PROLIFIC_PID"]
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*(f"V{n}" for n in range(1, 11)), "Q1", "PROLIFIC_PID"])
    writer.writerow(names)
    for pid, status, finished, response_id in RESPONSES:
        system = [response_id, "Default", "", "", "", "192.0.2.1", status, "", "", finished]
        writer.writerow([*system, "ok", pid])
    return out.getvalue().encode("utf-8")


def test_the_oldest_v_numbered_layout(bucket: ObjectStore, settings: Settings, tmp_path: Path) -> None:
    export = tmp_path / "export.csv"
    export.write_bytes(v_numbered_csv())
    out = tmp_path / "reconciled.csv"
    arguments = ("--qualtrics", str(export), "--id-column", "PROLIFIC_PID", "--out", str(out))
    result = _reconcile(settings, *arguments)
    summary = "(legacy, V-numbered, 2 header row(s)): 12 rows: 2 header, 9 with a participant ID"
    assert summary in result.output
    rows = _table(out)
    assert {pid: row["category"] for pid, row in rows.items()} == QUALTRICS_CATEGORIES
    assert rows["BOTH2"]["responseIds"] == "R_both2a;R_both2b" and rows["BOTH2"]["recordedDate"] == ";"


def test_a_row_that_could_be_a_header_is_kept_and_reported(
    bucket: ObjectStore, settings: Settings, tmp_path: Path
) -> None:
    """A one-header-row file whose first response has no ResponseId, date or status: kept, with a warning."""
    text = qualtrics_csv(header_rows=1, text_status=False, bom=False).decode("utf-8")
    lines = text.split("\r\n")
    lines.insert(1, ",,,,,,,,,BOTH9,")
    export = tmp_path / "export.csv"
    export.write_text("\r\n".join(lines), encoding="utf-8")
    out = tmp_path / "reconciled.csv"
    arguments = ("--qualtrics", str(export), "--id-column", "PROLIFIC_PID", "--out", str(out))
    result = _reconcile(settings, *arguments)
    assert "Warning: row 2 of export.csv could be a header row or a response; kept as a response" in (
        result.output
    )
    assert _table(out)["BOTH9"]["category"] == "qualtrics_only"
    assert "12 rows: 1 header, 10 with a participant ID, 1 without an ID" in result.output


@pytest.mark.parametrize("backend", ["local"])
def test_every_cell_and_header_written_is_neutralised(
    settings: Settings, store: ObjectStore, tmp_path: Path
) -> None:
    columns = [*COLUMNS[:-1], "=1+1"]
    rows = [[*("2025-11-19 09:00:00", "2025-11-19 09:20:00", "0", "", "100", "1", "1")]]
    rows[0] += ["2025-11-19 09:20:00", "R_formula", "@SYNTH1", FORMULA]
    export = tmp_path / "export.csv"
    with export.open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows([columns, *rows])
    prolific = tmp_path / "prolific.csv"
    with prolific.open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows(
            [["Participant id", "Status", "Completion code"], ["@SYNTH1", "APPROVED", "-cmd|' /C calc'!A0"]]
        )
    arguments = ("--qualtrics", str(export), "--id-column", "PROLIFIC_PID", "--prolific", str(prolific))
    result = _reconcile(settings, *arguments)
    table = list(csv.reader(io.StringIO(result.stdout)))
    assert table[1][:2] == ["'@SYNTH1", "paid_qualtrics_only"]
    assert "'-cmd|' /C calc'!A0" in table[1]
    for cell in (cell for row in table for cell in row):
        assert not cell or cell[0] not in "=+-@" or cell.lstrip("-").replace(".", "").isdigit(), cell


def test_table_goes_to_standard_output_without_out(
    bucket: ObjectStore, settings: Settings, tmp_path: Path
) -> None:
    export = tmp_path / "export.csv"
    export.write_bytes(qualtrics_csv(header_rows=3, text_status=False, bom=False))
    result = _reconcile(settings, "--qualtrics", str(export), "--id-column", "PROLIFIC_PID")
    assert "participantId,category,responseIds,finished,recordedDate,backupSubmissions,lastReceivedAt" in (
        result.stdout
    )
    assert "QONLY1,qualtrics_only,R_q1,1," in result.stdout


@pytest.mark.parametrize("backend", ["local"])
def test_clear_errors_for_a_file_that_is_not_an_export(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner(env=settings_environment(settings))
    plain = tmp_path / "plain.csv"
    plain.write_text("name,age\nAda,36\n", encoding="utf-8")
    result = runner.invoke(main, ["reconcile", "--qualtrics", str(plain), "--id-column", "name"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not a Qualtrics responses export: no ResponseId column. Its columns: name, age" in result.output

    export = tmp_path / "export.csv"
    export.write_bytes(qualtrics_csv(header_rows=3, text_status=False, bom=True))
    result = runner.invoke(main, ["reconcile", "--qualtrics", str(export), "--id-column", "workerId"])
    assert result.exit_code == 1
    assert "no column 'workerId'" in result.output and "ResponseId, PROLIFIC_PID, Q1" in result.output

    for name, body in (("empty.csv", b""), ("binary.csv", b"\xff\xfe\x00garbage")):
        (tmp_path / name).write_bytes(body)
        result = runner.invoke(main, ["reconcile", "--qualtrics", str(tmp_path / name), "--id-column", "x"])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "Error:" in result.output


def test_status_codes_and_texts() -> None:
    for excluded in (
        "1",
        "2",
        "4",
        "8",
        "9",
        "12",
        "17",
        "1.0",
        "Survey Preview",
        "survey test",
        " Spam ",
        "Imported",
    ):
        assert status_excluded(excluded), excluded
    for real in ("0", "16", "IP Address", "Offline", "", "Email"):
        assert not status_excluded(real), real


# Prolific's submissions export ("Download summary"): the current column names, then demographics.
PROLIFIC_CURRENT = [
    "Submission id",
    "Participant id",
    "Status",
    "Custom study tncs accepted at",
    "Started at",
    "Completed at",
    "Reviewed at",
    "Archived at",
    "Time taken",
    "Completion code",
    "Total approvals",
    "Fluent languages",
    "Age",
]
# Older exports: snake_case names.
PROLIFIC_LEGACY = [
    "session_id",
    "participant_id",
    "status",
    "started_datetime",
    "completed_date_time",
    "time_taken",
    "age",
    "num_approvals",
    "num_rejections",
    "prolific_score",
    "reviewed_at_datetime",
    "entered_code",
]
# (participant, status as Prolific may spell it)
SUBMISSIONS = [
    ("BOTH1", "APPROVED"),
    ("BACKUP1", "Awaiting review"),
    ("BACKUP2", "RETURNED"),
    ("QONLY1", "APPROVED"),
    ("QONLY2", "TIMED-OUT"),
    ("ERASED1", "APPROVED"),
    ("EXCL1", "REJECTED"),
    ("PAID9", "AWAITING REVIEW"),
    ("", "RETURNED"),  # a row without an ID: counted apart
]
THREE_WAY = {
    "BOTH1": "all_three",
    "BOTH2": "data_not_paid",  # in the backup and Qualtrics, not on Prolific
    "BACKUP1": "paid_backup_only",
    "BACKUP2": "returned_with_data",
    "UNVER1": "data_not_paid",
    "QONLY1": "paid_qualtrics_only",
    "QONLY2": "returned_with_data",
    "ERASED1": "erased",
    "EXCL1": "qualtrics_excluded",
    "EXCL2": "qualtrics_excluded",
    "PAID9": "paid_no_data",
}
PROLIFIC_ONLY = {
    "BOTH1": "both",
    "BOTH2": "data_not_paid",
    "BACKUP1": "both",
    "BACKUP2": "returned_with_data",
    "UNVER1": "data_not_paid",
    "QONLY1": "paid_no_data",
    "QONLY2": "prolific_only",
    "ERASED1": "erased",
    "EXCL1": "prolific_only",
    "PAID9": "paid_no_data",
}


def prolific_csv(*, legacy: bool, bom: bool) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PROLIFIC_LEGACY if legacy else PROLIFIC_CURRENT)
    for n, (pid, status) in enumerate(SUBMISSIONS):
        started, completed = f"2025-11-19T09:{n:02d}:00.000000Z", f"2025-11-19T09:{n + 20:02d}:00.000000Z"
        code = "C1A2B3C4" if status != "RETURNED" else ""
        if legacy:
            writer.writerow([f"6{n:023d}", pid, status, started, completed, 1200, 30, 5, 0, 100, "", code])
        else:
            row = [f"6{n:023d}", pid, status, "Not Applicable", started, completed, "", "", 1200, code, 5]
            writer.writerow([*row, "English", "CONSENT_REVOKED"])
        if n == 3:
            writer.writerow([])  # a blank line in the middle is counted, not lost
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8")


@pytest.mark.parametrize(
    ("legacy", "bom"),
    [pytest.param(False, True, id="current-bom"), pytest.param(True, False, id="legacy-columns")],
)
def test_three_way_with_prolific_and_qualtrics(
    bucket: ObjectStore, settings: Settings, tmp_path: Path, legacy: bool, bom: bool
) -> None:
    qualtrics, prolific = tmp_path / "qualtrics.csv", tmp_path / "prolific.csv"
    qualtrics.write_bytes(qualtrics_csv(header_rows=3, text_status=False, bom=False))
    prolific.write_bytes(prolific_csv(legacy=legacy, bom=bom))
    out, recovered = tmp_path / "reconciled.csv", tmp_path / "recovered"
    result = _reconcile(
        settings,
        *("--qualtrics", str(qualtrics), "--id-column", "PROLIFIC_PID", "--prolific", str(prolific)),
        *("--out", str(out), "--recover", str(recovered)),
    )
    assert "Prolific export: 11 rows: 1 header, 8 with a participant ID, 1 without an ID, 1 blank" in (
        result.output
    )
    assert (
        "11 participant IDs: 1 all_three, 1 paid_backup_only, 1 paid_qualtrics_only, 1 paid_no_data, "
        "2 returned_with_data, 2 data_not_paid, 2 qualtrics_excluded, 1 erased"
    ) in result.output
    rows = _table(out)
    assert {pid: row["category"] for pid, row in rows.items()} == THREE_WAY
    assert rows["BACKUP1"]["prolificStatus"] == "AWAITING REVIEW"
    assert rows["BOTH1"]["completionCode"] == "C1A2B3C4"
    assert rows["BOTH1"]["prolificSubmissionIds"] == "6" + "0" * 23
    assert rows["BOTH1"]["prolificStartedAt"] == "2025-11-19T09:00:00.000000Z"
    assert rows["BOTH1"]["responseIds"] == "R_both1"
    assert list(rows["BOTH1"])[-5:] == [
        "prolificStatus",
        "prolificSubmissionIds",
        "completionCode",
        "prolificStartedAt",
        "prolificCompletedAt",
    ]
    # What Qualtrics lost is recovered whatever Prolific says (BACKUP2 returned, yet has data).
    assert sorted(p.name for p in recovered.iterdir()) == ["BACKUP1.json", "BACKUP2.json", "status.csv"]


def test_prolific_alone(bucket: ObjectStore, settings: Settings, tmp_path: Path) -> None:
    prolific = tmp_path / "prolific.csv"
    prolific.write_bytes(prolific_csv(legacy=False, bom=False))
    out = tmp_path / "reconciled.csv"
    result = _reconcile(settings, "--prolific", str(prolific), "--out", str(out))
    rows = _table(out)
    assert {pid: row["category"] for pid, row in rows.items()} == PROLIFIC_ONLY
    assert "responseIds" not in rows["BOTH1"]
    summary = "10 participant IDs: 2 both, 2 paid_no_data, 1 returned_with_data, 2 data_not_paid, "
    assert summary in result.output


@pytest.mark.parametrize("backend", ["local"])
def test_prolific_errors_and_usage(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner(env=settings_environment(settings))
    plain = tmp_path / "plain.csv"
    plain.write_text("name,age\nAda,36\n", encoding="utf-8")
    result = runner.invoke(main, ["reconcile", "--prolific", str(plain)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not a Prolific submissions export" in result.output and "Its columns: name, age" in result.output
    result = runner.invoke(main, ["reconcile"])
    assert result.exit_code == 2 and "--prolific" in result.output
    result = runner.invoke(main, ["reconcile", "--prolific", str(plain), "--recover", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--recover needs --qualtrics" in result.output
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("Participant id,Status\nSYNTH1,PARTIALLY PAID\n", encoding="utf-8")
    result = runner.invoke(main, ["reconcile", "--prolific", str(unknown)])
    assert result.exit_code == 0, result.output
    warning = "Warning: unknown.csv: status 'PARTIALLY PAID' counted as neither paid nor returned"
    assert warning in result.output


def test_prolific_status_spellings() -> None:
    assert prolific_status(" timed out ") == "TIMED-OUT"
    assert prolific_status("Timed-Out") == "TIMED-OUT"
    assert prolific_status("awaiting_review") == "AWAITING REVIEW"
    assert prolific_status("APPROVED") == "APPROVED"
