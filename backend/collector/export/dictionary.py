"""The export's README: the data dictionary, generated from the same table declarations as the files."""

from __future__ import annotations

from .columns import TABLES

_TYPE_WORDS = {
    "string": "text",
    "int64": "integer (64-bit)",
    "float64": "number (64-bit float)",
    "bool": "boolean",
}

_PREAMBLE = """# Participant data export

Exported from the study's backup bucket by `collector export` (or the admin dashboard).
Files: {files}, and this README. Format: {fmt}.

- Every file is read from the bucket layout `{{prefix}}/participants/{{participantId}}/...`:
  `user-status/status.json` (latest state) and `submissions/*.json` (one file per submission).
- Order is fixed and values are typed by column, so exporting the same bucket twice gives
  byte-identical files. No export time is recorded in them for that reason.
- A missing value is empty in CSV and `null` in JSON Lines and Parquet. CSV booleans are
  `true`/`false`. Times are ISO-8601 in UTC (`2025-11-19T14:30:45.123Z`).
- A file that is not valid JSON is reported (with its key) by the export and left out.
- `--since DATE` (and every other "when" filter) uses the **server's receipt time**, never the
  browser's clock: it keeps submissions the collector received on or after DATE
  (`serverReceivedAt`, else the object's stored time), and participants whose status.json was
  received on or after it or who have such a submission (their sessions and responses follow
  them). An upload that waited offline in a browser queue and arrived late is therefore in the
  next incremental export, whatever its own `timestamp` says.
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


def data_dictionary(fmt: str) -> str:
    """Markdown describing every table and column."""
    files = ", ".join(f"`{table.name}.{fmt}`" for table in TABLES)
    parts = [_PREAMBLE.format(files=files, fmt=fmt, csv_note=_CSV_NOTE if fmt == "csv" else "")]
    for table in TABLES:
        parts.append(f"\n## {table.name}.{fmt}\n\n{table.description}\n\n")
        parts.append("| column | type | meaning |\n| --- | --- | --- |\n")
        for column in table.columns:
            source = f" (`{column.source}`)" if column.source else ""
            parts.append(f"| `{column.name}` | {_TYPE_WORDS[column.type]} | {column.description}{source} |\n")
    return "".join(parts)
