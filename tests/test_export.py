"""``collector export`` on both backends: tables, types, determinism, corrupt objects, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from collector.cli import main
from collector.export import DirectorySink, ExportFailed, export_bucket
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.collector_process import settings_environment
from tests.support.exports import read_table
from tests.support.factories import BASE_TIME, make_status, make_submission, put_status, put_submission
from tests.support.settings import s3_settings

ODD = "Ōkmok 🌋 «ß» \u200b"  # unicode that breaks naive encoders: accents, emoji, zero-width space
RESPONSES = {"mood": 4, "feeling": "calme, très", "pre": {"sleep": "7h", "items": [1, 3]}}


@pytest.fixture
def seeded(store: ObjectStore, layout: KeyLayout) -> dict[str, str]:
    """Three synthetic participants and one corrupt submission; returns the interesting keys."""
    put_status(store, layout, make_status("SYNTH1", sessions=2, responses=RESPONSES, selectedVolcano=ODD))
    put_submission(store, layout, make_submission("SYNTH1", when=BASE_TIME))
    put_submission(store, layout, make_submission("SYNTH1", when=datetime(2025, 11, 20, 8, 0, tzinfo=UTC)))
    put_status(
        store,
        layout,
        make_status("SYNTH2", tutorial=False, tutorial_completed=False, weeklySessionCount="lots"),
    )
    put_status(store, layout, make_status("SYNTH3", sessions=1, when=datetime(2025, 12, 1, tzinfo=UTC)))
    corrupt = layout.submissions_dir("SYNTH3") + "SYNTH3_Complete_2025-12-01_00-00-00.json"
    store.put(corrupt, b'{"participantId": "SYNTH3", "truncated')
    return {"corrupt": corrupt}


def run_export(store: ObjectStore, layout: KeyLayout, out: Path, fmt: str, **options: object):
    return export_bucket(store, layout, DirectorySink(out), fmt=fmt, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_tables_have_expected_rows_and_columns(
    store: ObjectStore, layout: KeyLayout, seeded: dict[str, str], tmp_path: Path, fmt: str
) -> None:
    report = run_export(store, layout, tmp_path / "out", fmt)
    out = tmp_path / "out"
    assert report.rows == {
        "participants": 3,
        "submissions": 2,
        "sessions": 3,
        "responses": 4,
        "trials": 0,  # the trial tables are always written, empty when no trial is stored
        "trial_sessions": 0,
    }

    participants = read_table(out, "participants", fmt)
    assert list(participants["participant_id"]) == ["SYNTH1", "SYNTH2", "SYNTH3"]
    first = participants.iloc[0]
    assert first["selected_volcano"] == ODD
    assert str(first["submission_count"]) == "2"
    assert str(first["session_count"]) == "2"
    second = participants.iloc[1]
    # A value of the wrong type leaves its column empty and is kept in extra_json.
    assert second["weekly_session_count"] in ("", None) or pd.isna(second["weekly_session_count"])
    assert json.loads(second["extra_json"]) == {"weeklySessionCount": "lots"}
    if fmt == "parquet":
        schema = pq.read_schema(out / "participants.parquet")
        assert str(schema.field("tutorial_completed").type) == "bool"
        assert str(schema.field("total_sessions_started").type) == "int64"
        assert list(participants["tutorial_completed"]) == [True, False, True]
    if fmt == "csv":
        assert list(participants["tutorial_completed"]) == ["true", "false", "true"]

    submissions = read_table(out, "submissions", fmt)
    assert list(submissions["participant_id"]) == ["SYNTH1", "SYNTH1"]
    assert list(submissions["submitted_at"]) == ["2025-11-17T09:00:00.000Z", "2025-11-20T08:00:00.000Z"]
    assert json.loads(submissions.iloc[0]["submission_json"])["submissionData"] == {
        "regions": [],
        "synthetic": True,
    }

    sessions = read_table(out, "sessions", fmt)
    assert list(sessions["participant_id"]) == ["SYNTH1", "SYNTH1", "SYNTH3"]
    assert [str(i) for i in sessions["session_index"]] == ["0", "1", "0"]

    responses = read_table(out, "responses", fmt)
    assert list(responses["question"]) == ["mood", "feeling", "pre.sleep", "pre.items"]
    assert list(responses["value"]) == ["4", "calme, très", "7h", "[1,3]"]
    assert list(responses["value_type"]) == ["number", "string", "string", "array"]

    readme = (out / "README.md").read_text("utf-8")
    for table in ("participants", "submissions", "sessions", "responses"):
        for column in read_table(out, table, fmt).columns:
            assert f"`{column}`" in readme, f"{table}.{column} is not in the data dictionary"


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_two_exports_are_byte_identical(
    store: ObjectStore, layout: KeyLayout, seeded: dict[str, str], tmp_path: Path, fmt: str
) -> None:
    run_export(store, layout, tmp_path / "a", fmt)
    run_export(store, layout, tmp_path / "b", fmt, workers=3)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert len(names) == (9 if fmt == "csv" else 7)  # CSV: and the typed loaders load.py, load.R
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_corrupt_object_is_reported_by_key_and_export_goes_on(
    store: ObjectStore, layout: KeyLayout, seeded: dict[str, str], tmp_path: Path
) -> None:
    report = run_export(store, layout, tmp_path / "out", "csv")
    assert [problem.key for problem in report.problems] == [seeded["corrupt"]]
    assert "not valid JSON" in report.problems[0].reason
    with pytest.raises(ExportFailed, match=seeded["corrupt"]):
        run_export(store, layout, tmp_path / "strict", "csv", strict=True)


def test_participant_and_since_filters(
    store: ObjectStore, layout: KeyLayout, seeded: dict[str, str], tmp_path: Path
) -> None:
    only = run_export(store, layout, tmp_path / "one", "csv", participant_ids=["SYNTH2"])
    assert only.rows["participants"] == 1 and only.rows["submissions"] == 0
    recent = run_export(store, layout, tmp_path / "recent", "csv", since=datetime(2025, 11, 19, tzinfo=UTC))
    # SYNTH1 submitted on the 20th (one of two submissions kept); SYNTH3 uploaded status on Dec 1.
    assert recent.rows["submissions"] == 1
    assert list(read_table(tmp_path / "recent", "participants", "csv")["participant_id"]) == [
        "SYNTH1",
        "SYNTH3",
    ]


def test_cli_export_writes_tables_and_names_the_corrupt_key(
    settings: Settings, seeded: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(
        main, ["export", "--out", str(out), "--format", "jsonl"], env=settings_environment(settings)
    )
    assert result.exit_code == 0, result.output
    assert "Exported 3 participants, 2 submissions, 3 sessions, 4 responses" in result.output
    assert "1 corrupt object(s) left out" in result.output
    assert (out / "participants.jsonl").read_text("utf-8").count("\n") == 3

    strict = CliRunner().invoke(
        main, ["export", "--out", str(tmp_path / "s"), "--strict"], env=settings_environment(settings)
    )
    assert strict.exit_code == 1
    assert seeded["corrupt"] in strict.output


def test_cli_export_missing_bucket_is_a_clear_error(moto_endpoint: str, tmp_path: Path) -> None:
    settings = s3_settings(moto_endpoint, bucket="no-such-bucket-here")
    result = CliRunner().invoke(
        main, ["export", "--out", str(tmp_path / "x")], env=settings_environment(settings)
    )
    assert result.exit_code == 1
    assert "bucket 'no-such-bucket-here' does not exist" in result.output
    assert "Traceback" not in result.output
