"""``collector export --format sav|dta``: SPSS and Stata files with the data dictionary as labels.

The tables are first exported as JSON Lines (exact values), then each becomes one ``.sav`` or
``.dta`` file written with pyreadstat:

* **Variable labels** are the data dictionary's meaning of each column (cut to the format's
  limit: 80 characters in Stata, 255 in SPSS; README.md has them whole).
* **Numbers stay numbers** (doubles). Integers are exact up to 2^53; a column with a larger
  whole number is written as text instead, so no digit is lost.
* **Booleans** are 0/1 with the value labels ``0 false``, ``1 true``.
* **Categorical text columns** (``upload_type``, ``completion``, ``value_type``) are coded
  1, 2, ... with their text as value labels.
* **Times** (the ISO-8601 columns) are date-times in UTC, to the millisecond.
* **Long text is kept whole.** Stata: text longer than 2,045 bytes is written as ``strL``
  (pyreadstat does this by itself). SPSS: a text variable holds at most 32,767 bytes, so a
  longer value is split over continuation variables ``<name>_2``, ``<name>_3``, ... (joined in
  order, they give the value back).
* **Names** are made legal: SPSS at most 64 bytes of letters, digits, ``_``, ``.``; Stata at
  most 32 of letters, digits, ``_``; starting with a letter, never a reserved word, unique
  without regard to case. Every renamed column is listed in README.md under "Variable names".

A missing text value is an empty string (neither format has a missing string); a missing number,
boolean or time is the format's system-missing value. SPSS pads text with blanks, so a text
value's trailing spaces do not survive in a ``.sav`` file (the other formats keep them).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

from ..keys import KeyLayout, parse_timestamp
from ..reading.scan import DEFAULT_READERS
from ..storage import ObjectStore
from .columns import Column
from .dictionary import column_kind, data_dictionary, export_tables
from .runner import ExportReport, Progress, export_bucket
from .writers import DirectorySink, ExportDependencyMissing

SPSS_STRING_BYTES = 32767
NAME_LIMITS = {"sav": 64, "dta": 32}
LABEL_LIMITS = {"sav": 255, "dta": 80}
RESERVED = {
    "sav": {"all", "and", "by", "eq", "ge", "gt", "le", "lt", "ne", "not", "or", "to", "with"},
    "dta": {
        "_all", "_b", "byte", "_coef", "_cons", "double", "float", "if", "in", "int", "long", "_n",
        "_pi", "_pred", "_rc", "_skip", "strl", "using", "with",
    },
}  # fmt: skip
# Text columns with a small known set of values, coded 1..n in that order (others follow, sorted).
CATEGORIES = {
    "upload_type": ("submission", "status"),
    "completion": ("complete", "partial"),
    "value_type": ("string", "number", "boolean", "array", "object", "null"),
}
BOOLEAN_LABELS = {0: "false", 1: "true"}
_EXACT_INTEGER = 2**53


def export_labelled(
    store: ObjectStore,
    layout: KeyLayout,
    out_dir: Path,
    *,
    fmt: str,
    participant_ids: Collection[str] = (),
    since: datetime | None = None,
    strict: bool = False,
    workers: int = DEFAULT_READERS,
    progress: Progress | None = None,
) -> tuple[ExportReport, list[str]]:
    """Write one ``.sav``/``.dta`` file per table and README.md into ``out_dir``."""
    try:
        import pyreadstat
    except ImportError:
        raise ExportDependencyMissing(
            f"the {fmt} format needs pyreadstat: pip install 'participant-data-collector[export]'"
        ) from None
    write = pyreadstat.write_sav if fmt == "sav" else pyreadstat.write_dta
    out_dir.mkdir(parents=True, exist_ok=True)
    renamed: list[tuple[str, str, str]] = []  # (table, column, name in the file)
    with tempfile.TemporaryDirectory(prefix="labelled-") as scratch:
        report = export_bucket(
            store,
            layout,
            DirectorySink(Path(scratch)),
            fmt="jsonl",
            participant_ids=participant_ids,
            since=since,
            strict=strict,
            workers=workers,
            progress=progress,
        )
        for table, columns in export_tables(report.trial_columns):
            with (Path(scratch) / f"{table}.jsonl").open(encoding="utf-8") as source:
                rows = [json.loads(line) for line in source]
            labelled = labelled_table(rows, columns, fmt)
            renamed += [(table, column, name) for column, name in labelled.names.items() if column != name]
            path = out_dir / f"{table}.{fmt}"
            partial = path.with_name(f".{path.name}.partial")
            write(
                labelled.frame,
                str(partial),
                column_labels=labelled.labels,
                variable_value_labels=labelled.value_labels,
            )
            partial.replace(path)
    readme = data_dictionary(fmt, trial_columns=report.trial_columns) + _names_section(renamed, fmt)
    (out_dir / "README.md").write_text(readme, encoding="utf-8")
    report.files = [f"{table}.{fmt}" for table, _ in export_tables(report.trial_columns)] + ["README.md"]
    format_name = "SPSS" if fmt == "sav" else "Stata"
    return report, [f"{format_name} files with variable and value labels; {len(renamed)} column(s) renamed"]


class LabelledTable:
    def __init__(self) -> None:
        self.data: dict[str, list[Any]] = {}
        self.labels: dict[str, str] = {}
        self.value_labels: dict[str, dict[int, str]] = {}
        self.names: dict[str, str] = {}  # column -> first variable name in the file

    @property
    def frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.data) if self.data else pd.DataFrame()


def labelled_table(rows: list[dict[str, Any]], columns: tuple[Column, ...], fmt: str) -> LabelledTable:
    """The columns of one table as the format wants them, with labels and the name mapping."""
    table = LabelledTable()
    taken: set[str] = set()
    for column in columns:
        values = [row.get(column.name) for row in rows]
        kind = column_kind(column)
        label = _cut(column.description, LABEL_LIMITS[fmt])
        name = legal_name(column.name, fmt, taken)
        table.names[column.name] = name
        if kind == "boolean":
            table.data[name] = [math.nan if v is None else float(v) for v in values]
            table.value_labels[name] = dict(BOOLEAN_LABELS)
        elif kind in ("integer", "number") and all(v is None or abs(v) < _EXACT_INTEGER for v in values):
            table.data[name] = [math.nan if v is None else float(v) for v in values]
        elif kind == "time":
            table.data[name] = [_naive_utc(v) for v in values]
        elif column.name in CATEGORIES:
            codes = _codes(column.name, values)
            table.data[name] = [math.nan if v is None else float(codes[v]) for v in values]
            table.value_labels[name] = {code: text for text, code in codes.items()}
        else:
            texts = ["" if v is None else v if isinstance(v, str) else json.dumps(v) for v in values]
            if fmt == "sav":
                for part, (part_name, chunk) in enumerate(_split_long(name, texts, taken)):
                    table.data[part_name] = chunk
                    table.labels[part_name] = label if part == 0 else _cut(f"{label} (continued)", 255)
                continue
            table.data[name] = texts
        table.labels[name] = label
    return table


def legal_name(column: str, fmt: str, taken: set[str]) -> str:
    """A variable name the format accepts, unique in ``taken`` (compared without case), then noted there."""
    limit = NAME_LIMITS[fmt]
    allowed = r"[^A-Za-z0-9_.]" if fmt == "sav" else r"[^A-Za-z0-9_]"
    name = re.sub(allowed, "_", column).rstrip(".") or "v"
    if not name[0].isalpha():
        name = "v" + name
    if name.lower() in RESERVED[fmt] or (fmt == "dta" and re.fullmatch(r"str\d+", name.lower())):
        name += "_"
    name = _fit(name, limit)
    candidate, number = name, 1
    while candidate.lower() in taken:
        number += 1
        suffix = f"_{number}"
        candidate = _fit(name, limit - len(suffix.encode())) + suffix
    taken.add(candidate.lower())
    return candidate


def _fit(name: str, limit: int) -> str:
    while len(name.encode()) > limit:
        name = name[:-1]
    return name


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _naive_utc(value: Any) -> datetime | None:
    moment = parse_timestamp(value) if isinstance(value, str) else None
    return moment.replace(tzinfo=None) if moment is not None else None


def _codes(column: str, values: list[Any]) -> dict[str, int]:
    known = list(CATEGORIES[column])
    known += sorted({v for v in values if v is not None and v not in known})
    return {text: code for code, text in enumerate(known, start=1)}


def _split_long(name: str, texts: list[str], taken: set[str]) -> list[tuple[str, list[str]]]:
    """SPSS: the column, plus continuation columns while some value is longer than 32,767 bytes."""
    pieces = [_utf8_pieces(text, SPSS_STRING_BYTES) for text in texts]
    parts = max((len(p) for p in pieces), default=1)
    columns = [(name, [p[0] if p else "" for p in pieces])]
    for index in range(1, parts):
        part_name = legal_name(f"{name}_{index + 1}", "sav", taken)
        columns.append((part_name, [p[index] if len(p) > index else "" for p in pieces]))
    return columns


def _utf8_pieces(text: str, limit: int) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` UTF-8 bytes, never inside a character."""
    if len(text) * 4 <= limit or len(text.encode()) <= limit:  # the common case, without a loop
        return [text]
    pieces, current, size = [], [], 0
    for char in text:
        width = len(char.encode())
        if size + width > limit:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    pieces.append("".join(current))
    return pieces


def _names_section(renamed: list[tuple[str, str, str]], fmt: str) -> str:
    lines = [
        "\n## Variable names\n\n",
        f"Column names made legal for {'SPSS' if fmt == 'sav' else 'Stata'}; every other column keeps "
        "its name. Variable labels hold the meanings above",
        " (cut to 80 characters in Stata).\n\n" if fmt == "dta" else " (cut to 255 characters in SPSS).\n\n",
    ]
    if fmt == "sav":
        lines.append(
            "A text value longer than 32,767 bytes continues in `<name>_2`, `<name>_3`, ...: join them "
            "in order to get it back.\n\n"
        )
    if not renamed:
        lines.append("None was renamed.\n")
        return "".join(lines)
    lines.append("| table | column | variable |\n| --- | --- | --- |\n")
    for table, column, name in renamed:
        shown = column.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {table} | `{shown}` | `{name}` |\n")
    return "".join(lines)
