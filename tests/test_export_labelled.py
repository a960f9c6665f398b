"""SPSS and Stata files, and the typed CSV loaders, read back and compared value by value with the
JSON Lines export of the same bucket (which holds the exact values)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyreadstat
import pytest
from click.testing import CliRunner

from collector.cli import main
from collector.export.dictionary import column_kind, export_tables
from collector.export.loaders import READR_TYPES, r_string
from collector.export.spss_stata import BOOLEAN_LABELS, legal_name
from collector.keys import KeyLayout, parse_timestamp
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.analysis_bucket import LONG_TEXT, seed_analysis_bucket
from tests.support.collector_process import settings_environment

TABLE_NAMES = ("participants", "submissions", "sessions", "responses", "trials", "trial_sessions")


def export(settings: Settings, out: Path, fmt: str) -> str:
    result = CliRunner(env=settings_environment(settings)).invoke(
        main, ["export", "--out", str(out), "--format", fmt]
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def exports(store: ObjectStore, layout: KeyLayout, settings: Settings, tmp_path: Path) -> Path:
    seed_analysis_bucket(store, layout)
    for fmt in ("jsonl", "csv", "sav", "dta"):
        export(settings, tmp_path / fmt, fmt)
    return tmp_path


def jsonl(out: Path, table: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in (out / "jsonl" / f"{table}.jsonl").read_text(encoding="utf-8").splitlines()
    ]


def trial_columns(out: Path) -> list[str]:
    """The trialData columns of this export, from the JSON Lines trials table."""
    fixed = {c.name for _, columns in export_tables() if _ == "trials" for c in columns}
    return [name for name in jsonl(out, "trials")[0] if name not in fixed]


def renamed(readme: str) -> dict[tuple[str, str], str]:
    rows = re.findall(r"^\| (\w+) \| `(.+?)` \| `(.+?)` \|$", readme, flags=re.MULTILINE)
    return {(table, column.replace("\\|", "|")): name for table, column, name in rows}


@pytest.mark.parametrize("backend", ["local"])  # the conversion reads what the export read: any store
@pytest.mark.parametrize("fmt", ["sav", "dta"])
def test_every_value_reads_back(exports: Path, fmt: str) -> None:
    mapping = renamed((exports / fmt / "README.md").read_text(encoding="utf-8"))
    if fmt == "dta":
        assert (
            mapping[("trials", "reaction time (ms) measured from the onset")]
            == "reaction_time__ms__measured_from"
        )
    assert mapping[("trials", "=sum")] == "v_sum"
    assert mapping.get(("trials", "if"), "if") == ("if_" if fmt == "dta" else "if")  # reserved in Stata only
    read = pyreadstat.read_sav if fmt == "sav" else pyreadstat.read_dta
    from collector.export.columns import Column

    extra = [Column(name, "string", "") for name in trial_columns(exports)]
    checked = 0
    for table in TABLE_NAMES:
        frame, meta = read(str(exports / fmt / f"{table}.{fmt}"))
        rows = jsonl(exports, table)
        assert len(frame) == len(rows), table
        declared = dict(export_tables(extra))[table]
        kinds = {c.name: c for c in declared}
        for name in rows[0] if rows else []:
            variable = mapping.get((table, name), name)
            assert variable in frame.columns, (table, name, variable)
            label = meta.column_names_to_labels[variable]
            column = kinds[name]
            if column.description:
                assert label and column.description.startswith(label.rstrip("…")), (table, name, label)
            for position, row in enumerate(rows):
                expected, got = row[name], frame[variable].iloc[position]
                if fmt == "sav" and isinstance(expected, str):
                    expected = expected.rstrip(" ")  # SPSS pads text with blanks: trailing ones are lost
                _same(expected, got, meta.variable_value_labels.get(variable), table, name)
                checked += 1
    assert checked > 150
    trials, meta = read(str(exports / fmt / f"trials.{fmt}"))
    kept = LONG_TEXT.rstrip(" ") if fmt == "sav" else LONG_TEXT
    assert kept in set(trials["answer"])  # kept whole, past Stata's 2,045-byte str limit
    assert (
        meta.variable_value_labels["correct"]
        == {0: "false", 1: "true"}
        == {float(k): v for k, v in BOOLEAN_LABELS.items()}
    )
    _, meta = read(str(exports / fmt / f"trial_sessions.{fmt}"))
    assert meta.variable_value_labels["completion"] == {1: "complete", 2: "partial"}


def _same(expected: Any, got: Any, labels: dict | None, table: str, name: str) -> None:
    where = (table, name, expected, got)
    if expected is None:
        assert got == "" or got is None or pd.isna(got), where
    elif isinstance(expected, bool):
        assert labels is not None and labels[got] == ("true" if expected else "false"), where
    elif isinstance(expected, int | float):
        assert float(got) == float(expected), where
    elif labels is not None:  # a categorical text column: its code's label is the text
        assert labels[got] == expected, where
    elif isinstance(got, datetime | pd.Timestamp):
        moment = parse_timestamp(expected)
        assert moment is not None and pd.Timestamp(got).tz_localize("UTC") == moment, where
    else:
        assert got == expected, where


def test_names_made_legal() -> None:
    taken: set[str] = set()
    assert legal_name("rt", "dta", taken) == "rt"
    assert legal_name("RT", "dta", taken) == "RT_2"  # unique without regard to case
    assert legal_name("if", "dta", taken) == "if_" and legal_name("str80", "dta", taken) == "str80_"
    assert legal_name("9 lives", "sav", set()) == "v9_lives"
    assert legal_name("with", "sav", set()) == "with_"
    assert len(legal_name("x" * 100, "dta", set())) == 32 and len(legal_name("y" * 100, "sav", set())) == 64
    assert legal_name("a.b", "sav", set()) == "a.b" and legal_name("a.b", "dta", set()) == "a_b"
    assert legal_name("Ōk", "dta", set()) == "v_k"


@pytest.mark.parametrize("backend", ["local"])
def test_load_py_gives_the_dictionary_types(exports: Path) -> None:
    spec = importlib.util.spec_from_file_location("export_loader", exports / "csv" / "load.py")
    assert spec is not None and spec.loader is not None
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    tables = loader.load_tables()
    assert set(tables) == set(TABLE_NAMES)
    participants, trials, sessions = tables["participants"], tables["trials"], tables["trial_sessions"]
    assert participants["has_seen_welcome"].dtype == "boolean"
    assert participants["weekly_session_count"].dtype == "Int64"
    assert participants["total_session_time_hours"].dtype == "Float64"
    assert (
        str(participants["server_received_at"].dtype).startswith("datetime64")
        and str(participants["server_received_at"].dt.tz) == "UTC"
    )
    assert trials["correct"].dtype == "boolean" and trials["rt"].dtype == "Int64"
    assert sessions["missing_trials"].dtype == "Int64"
    # Exact values, the spreadsheet-safety quote undone in names and cells.
    assert "=sum" in trials.columns and "'=sum" not in trials.columns
    for table in TABLE_NAMES:
        frame, rows = tables[table], jsonl(exports, table)
        assert len(frame) == len(rows)
        for position, row in enumerate(rows):
            for name, expected in row.items():
                got = frame[name].iloc[position]
                if expected is None or expected == "":
                    assert pd.isna(got) or got == "", (table, name, got)
                elif isinstance(got, pd.Timestamp):
                    assert got == parse_timestamp(expected), (table, name)
                elif isinstance(expected, float):
                    assert math.isclose(got, expected), (table, name)
                else:
                    assert got == expected, (table, name, got, expected)


@pytest.mark.parametrize("backend", ["local"])
def test_load_r_declares_every_column_with_its_dictionary_type(exports: Path) -> None:
    """R is not installed here: the col_types in load.R are checked against the dictionary."""
    source = (exports / "csv" / "load.R").read_text(encoding="utf-8")
    blocks = dict(
        re.findall(r"^  (\w+) = readr::cols\(\n(.*?)\n  \)", source, flags=re.MULTILINE | re.DOTALL)
    )
    from collector.export.columns import Column

    trial_names = trial_columns(exports)
    csv_headers = {
        table: (exports / "csv" / f"{table}.csv").read_text(encoding="utf-8").splitlines()[0]
        for table in TABLE_NAMES
    }
    for table, columns in export_tables([Column(n, "string", "") for n in trial_names]):
        declared = re.findall(r'^    (".*?") = (.+?),?$', blocks[table], flags=re.MULTILINE)
        declared_names = [name for name, _ in declared if name != ".default"]
        assert len(declared_names) == len(columns), table
        for (literal, r_type), column in zip(declared, columns, strict=False):
            header = literal[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            assert header in csv_headers[table], (table, header)
            if column.name not in trial_names:
                assert r_type == READR_TYPES[column_kind(column)], (table, column.name, r_type)
        assert "    .default = readr::col_character()" in blocks[table]
    trial_types = dict(re.findall(r'^    (".*?") = (.+?),?$', blocks["trials"], flags=re.MULTILINE))
    assert trial_types['"correct"'] == "readr::col_logical()" and trial_types['"rt"'] == "readr::col_double()"
    assert trial_types[r_string("'=sum")] == "readr::col_double()"
    assert 'col_datetime(format = "")' in blocks["trial_sessions"]
    assert r_string('a"b\\c\n\tÖ') == '"a\\"b\\\\c\\n\\t\\U{d6}"'
    assert source.isascii()  # R reads it the same whatever the locale


def test_spss_text_past_32767_bytes_continues_in_more_variables(tmp_path: Path) -> None:
    from collector.export.columns import Column
    from collector.export.spss_stata import labelled_table

    huge = "é" * 20000 + "end"  # 40,003 bytes of UTF-8
    table = labelled_table(
        [{"note": huge}, {"note": "short"}, {"note": None}], (Column("note", "string", "A note."),), "sav"
    )
    assert list(table.data) == ["note", "note_2"] and table.labels["note_2"] == "A note. (continued)"
    pyreadstat.write_sav(table.frame, str(tmp_path / "t.sav"), column_labels=table.labels)
    frame, _ = pyreadstat.read_sav(str(tmp_path / "t.sav"))
    assert frame["note"].iloc[0] + frame["note_2"].iloc[0] == huge
    assert list(frame["note"].iloc[1:]) == ["short", ""] and list(frame["note_2"].iloc[1:]) == ["", ""]


@pytest.mark.parametrize("backend", ["local"])
@pytest.mark.parametrize("fmt", ["sav", "dta", "parquet"])
def test_a_format_this_installation_cannot_produce_says_what_to_install(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    real = importlib.util.find_spec
    hidden = {"pyreadstat", "pyarrow"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a)
    )
    result = CliRunner(env=settings_environment(settings)).invoke(
        main, ["export", "--out", str(tmp_path / "out"), "--format", fmt]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "pip install 'participant-data-collector[export]'" in result.output
    assert not (tmp_path / "out").exists()  # refused before anything was written
