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
from click.testing import CliRunner

from collector.cli import main
from collector.erasure import erase_participant
from collector.keys import KeyLayout
from collector.reconcile import status_excluded
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
EXPECTED = {"both": 2, "backup_only": 2, "qualtrics_only": 3, "qualtrics_excluded": 2}


def qualtrics_csv(*, legacy: bool, text_status: bool, bom: bool) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerow(QUESTION_TEXT)
    if not legacy:
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
        put_status(store, layout, make_status(pid, sessions=1))
        put_submission(store, layout, make_submission(pid, data={"answer": f"{pid} older"}))
    later = datetime(2025, 11, 20, 12, tzinfo=UTC)
    put_submission(store, layout, make_submission("BACKUP1", when=later, data={"answer": "BACKUP1 latest"}))
    erase_participant(store, layout, "ERASED1", who="test", reason="withdrew")
    return store


@pytest.mark.parametrize(
    ("legacy", "text_status", "bom"),
    [(False, False, True), (False, True, False), (True, True, True), (True, False, False)],
    ids=["current-numeric-bom", "current-text", "legacy-text-bom", "legacy-numeric"],
)
def test_every_category_with_exact_counts(
    bucket: ObjectStore, settings: Settings, tmp_path: Path, legacy: bool, text_status: bool, bom: bool
) -> None:
    export = tmp_path / "export.csv"
    export.write_bytes(qualtrics_csv(legacy=legacy, text_status=text_status, bom=bom))
    out, recovered = tmp_path / "reconciled.csv", tmp_path / "recovered"
    result = CliRunner(env=settings_environment(settings)).invoke(
        main,
        [
            *("reconcile", "--qualtrics", str(export), "--id-column", "PROLIFIC_PID"),
            *("--out", str(out), "--recover", str(recovered)),
        ],
    )
    assert result.exit_code == 0, result.output
    layout_name = "legacy" if legacy else "current"
    assert (
        f"9 participant IDs ({layout_name} Qualtrics export, 1 rows without an ID): "
        "2 both, 2 backup_only, 3 qualtrics_only, 2 qualtrics_excluded"
    ) in result.output

    rows = {row["participantId"]: row for row in csv.DictReader(out.open(encoding="utf-8"))}
    assert {pid: row["category"] for pid, row in rows.items()} == {
        "BOTH1": "both",
        "BOTH2": "both",
        "BACKUP1": "backup_only",
        "BACKUP2": "backup_only",
        "QONLY1": "qualtrics_only",
        "QONLY2": "qualtrics_only",
        "ERASED1": "qualtrics_only",
        "EXCL1": "qualtrics_excluded",
        "EXCL2": "qualtrics_excluded",
    }
    counts = {name: sum(1 for r in rows.values() if r["category"] == name) for name in EXPECTED}
    assert counts == EXPECTED
    assert rows["BOTH2"]["responseIds"] == "R_both2a;R_both2b"
    assert rows["BOTH2"]["finished"] == ("False;True" if text_status else "0;1")
    assert rows["BOTH2"]["recordedDate"] == "2025-11-19 09:20:01;2025-11-19 09:20:02"
    assert rows["BOTH1"]["backupSubmissions"] == "1" and rows["BOTH1"]["lastReceivedAt"]
    assert rows["BACKUP1"]["backupSubmissions"] == "2"
    assert rows["BACKUP2"]["responseIds"] == "R_preview"  # shown, though excluded
    assert rows["QONLY1"]["backupSubmissions"] == "0" and rows["QONLY1"]["lastReceivedAt"] == ""

    assert sorted(p.name for p in recovered.iterdir()) == ["BACKUP1.json", "BACKUP2.json", "status.csv"]
    latest = json.loads((recovered / "BACKUP1.json").read_text(encoding="utf-8"))
    assert latest["submissionData"] == {"answer": "BACKUP1 latest"}
    status_rows = list(csv.DictReader((recovered / "status.csv").open(encoding="utf-8")))
    assert [r["participantId"] for r in status_rows] == ["BACKUP1", "BACKUP2"]
    assert status_rows[0]["selectedVolcano"] == "Okmok"
    assert json.loads(status_rows[0]["sessionHistory"])[0]["sessionId"] == "s0"


def test_table_goes_to_standard_output_without_out(
    bucket: ObjectStore, settings: Settings, tmp_path: Path
) -> None:
    export = tmp_path / "export.csv"
    export.write_bytes(qualtrics_csv(legacy=False, text_status=False, bom=False))
    result = CliRunner(env=settings_environment(settings)).invoke(
        main, ["reconcile", "--qualtrics", str(export), "--id-column", "PROLIFIC_PID"]
    )
    assert result.exit_code == 0, result.output
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
    export.write_bytes(qualtrics_csv(legacy=False, text_status=False, bom=True))
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
