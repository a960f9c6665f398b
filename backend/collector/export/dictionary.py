"""The export's README: the data dictionary, generated from the same table declarations as the files."""

from __future__ import annotations

from collections.abc import Sequence

from .columns import TABLES, TIME_TEXT, TRIAL_SESSIONS, TRIAL_TABLES, TRIALS, TRIALS_TRAILING, Column
from .trials import MAX_TRIAL_FIELD_COLUMNS

_TYPE_WORDS = {
    "string": "text",
    "int64": "integer (64-bit)",
    "float64": "number (64-bit float)",
    "bool": "boolean",
}

_PREAMBLE = """# Participant data export

Exported from the study's backup bucket by `collector export` (or the admin dashboard).
Files: {files}, and this README. Format: {fmt}. {format_note}

- Every file is read from the bucket layout `{{prefix}}/participants/{{participantId}}/...`:
  `user-status/status.json` (latest state), `submissions/*.json` (one file per submission) and
  `trials/{{sessionId}}/{{trialIndex}}.json` (one file per trial of an experiment run).
- Order is fixed and values are typed by column, so exporting the same bucket twice gives
  byte-identical files. No export time is recorded in them for that reason.
- A missing value is empty in CSV and `null` in JSON Lines and Parquet. CSV booleans are
  `true`/`false`. Times are ISO-8601 in UTC (`2025-11-19T14:30:45.123Z`).
- A file that is not valid JSON is reported (with its key) by the export and left out.
- Anyone can send an upload naming any participant ID. Submissions and trials stored without the
  participant's key are kept and marked (`key_verified` false); they are counted apart
  (`participants.unverified_submission_count`, `trial_sessions.unverified_submissions`) and never
  count in `submission_count` nor complete a trial session. Uploads of a participant who held no
  key when they arrived carry no mark and count.
- The hash of the participant's key, kept in status.json to check uploads, is never exported.
- `trials` has a column for each of the first {cap} distinct `trialData` field names met; every
  other field of a trial is in its `more_trial_fields_json`.
- `--since DATE` (and every other "when" filter) uses the **server's receipt time**, never the
  browser's clock: it keeps submissions the collector received on or after DATE
  (`serverReceivedAt`, else the object's stored time), and participants whose status.json was
  received on or after it or who have such a submission (their sessions and responses follow
  them), and trial sessions with a trial received on or after it (its `serverReceivedAt`, else
  the object's stored time) or completed by a kept submission. An upload that waited offline in
  a browser queue and arrived late is therefore in the next incremental export, whatever its own
  `timestamp` says.
{csv_note}"""

_CSV_NOTE = """- **Spreadsheet safety (CSV only).** A text cell or column name that begins with `=`, `+`,
  `-`, `@`, a tab or a carriage return, or with the full-width `＝ ＋ － ＠`, would be run as a
  formula by Excel, LibreOffice or Google Sheets. Such cells are written with one `'` in front
  (as OWASP recommends), which spreadsheets show as plain text; so are cells that already began
  with `'` followed by one of those characters, so that undoing is exact. Plain numbers such as
  `-5` are left as they are. To get the exact value back, remove the first `'` of every cell that
  starts with one or more `'` followed by one of those characters (in Python:
  `re.sub(r"^'(?='*[=+\\-@\\t\\r＝＋－＠])", "", value)`). JSON Lines and Parquet exports
  hold the exact values, unchanged.
"""


# What each format holds and how to read it, at the top of the export's README.
FORMAT_NOTES = {
    "csv": "CSV has no types: `load.py` (pandas) and `load.R` (readr) beside the tables read each "
    "column with the type below (booleans as booleans, integers as nullable integers, times as "
    "UTC date-times) and undo the spreadsheet-safety quote.",
    "jsonl": "JSON Lines: one JSON object per row, exact values (numbers, booleans, null) as stored.",
    "parquet": "Parquet: each column typed as below (string, int64, float64, bool); readable by "
    "pandas, R's arrow, DuckDB, Spark.",
    "sav": "SPSS: variable labels are the meanings below, booleans 0/1 with value labels, the "
    "categorical text columns coded with value labels, times as date-times; see 'Variable names' "
    "at the end for renamed columns and long text.",
    "dta": "Stata: variable labels are the meanings below (cut to 80 characters), booleans 0/1 with "
    "value labels, the categorical text columns coded with value labels, times as %tc date-times, "
    "text past 2,045 bytes as strL; see 'Variable names' at the end for renamed columns.",
}

_TRIAL_FIELDS = """
### Trial fields

The `{name}` columns that come from `trialData`, in file order, before `{trailing}`. Each is
typed from all its values: booleans only -> boolean; whole numbers only -> integer; numbers only ->
number; anything else -> text (text as is, other values as JSON). A field whose name is already a
column gets `data_` in front (jsPsych's own `trial_index` becomes `data_trial_index`).

"""


def data_dictionary(fmt: str, *, trial_columns: Sequence[Column] = (), note: str | None = None) -> str:
    """Markdown describing every table and column, with this export's trialData columns;
    ``note`` replaces the format's note (for files laid out differently, as in Psych-DS)."""
    tables = (*TABLES, *TRIAL_TABLES)
    files = ", ".join(f"`{table.name}.{fmt}`" for table in tables)
    note = FORMAT_NOTES.get(fmt, "") if note is None else note
    csv_note = _CSV_NOTE if fmt == "csv" else ""
    parts = [
        _PREAMBLE.format(
            files=files, fmt=fmt, format_note=note, csv_note=csv_note, cap=MAX_TRIAL_FIELD_COLUMNS
        )
    ]
    for table in tables:
        parts.append(f"\n## {table.name}.{fmt}\n\n{table.description}\n\n")
        _column_rows(parts, table.columns if table is not TRIALS else (*table.columns, *TRIALS_TRAILING))
        if table is TRIALS:
            parts.append(_TRIAL_FIELDS.format(name=TRIALS.name, trailing=TRIALS_TRAILING[0].name))
            if trial_columns:
                _column_rows(parts, trial_columns)
            else:
                parts.append("None: no trial was exported.\n")
    return "".join(parts)


def _column_rows(parts: list[str], columns: Sequence[Column]) -> None:
    parts.append("| column | type | meaning |\n| --- | --- | --- |\n")
    for column in columns:
        source = f" (`{column.source}`)" if column.source else ""
        name, meaning = _cell(column.name), _cell(column.description + source)
        parts.append(f"| `{name}` | {_TYPE_WORDS[column.type]} | {meaning} |\n")


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell (trialData field names can be anything)."""
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


# What a column holds, for the typed loaders and the SPSS/Stata files: the declared type, and
# "time" for the text columns whose meaning says they hold ISO-8601 UTC times.
ColumnKind = str  # "text", "integer", "number", "boolean" or "time"
_KINDS = {"string": "text", "int64": "integer", "float64": "number", "bool": "boolean"}


def column_kind(column: Column) -> ColumnKind:
    if column.type == "string" and TIME_TEXT in column.description:
        return "time"
    return _KINDS[column.type]


def export_tables(trial_columns: Sequence[Column] = ()) -> list[tuple[str, tuple[Column, ...]]]:
    """Every table of an export with its columns in file order, this export's trialData ones included."""
    tables = [(table.name, table.columns) for table in TABLES]
    tables.append((TRIALS.name, (*TRIALS.columns, *trial_columns, *TRIALS_TRAILING)))
    tables.append((TRIAL_SESSIONS.name, TRIAL_SESSIONS.columns))
    return tables
