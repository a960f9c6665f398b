"""``load.py`` and ``load.R``: typed loaders written beside a CSV export.

A CSV file has no types, so pandas guesses (booleans come in as objects, integer columns with a
gap as floats) and so does readr. The loaders give each column the type of the data dictionary:

============  =====================  ==========================
dictionary    pandas (load.py)       readr (load.R)
============  =====================  ==========================
text          ``string``             ``col_character()``
integer       ``Int64`` (nullable)   ``col_double()`` (R integers are 32-bit: no value is lost)
number        ``Float64``            ``col_double()``
boolean       ``boolean`` (nullable) ``col_logical()``
time          ``datetime64[ns, UTC]`` ``col_datetime()`` (UTC)
============  =====================  ==========================

Both also undo the CSV's spreadsheet-safety quote (a ``'`` put before text that starts like a
formula), in cells and in column names, so the values are exactly the stored ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from .columns import Column
from .dictionary import column_kind, export_tables
from .writers import FORMULA_STARTS, Sink, neutralise

LOADERS = ("load.py", "load.R")
# The CSV's spreadsheet-safety quote, to remove: one ' before optional quotes and a formula start.
NEUTRALISED = re.compile("^'(?='*[" + re.escape(FORMULA_STARTS) + "])")
PANDAS_TYPES = {
    "text": "string",
    "integer": "Int64",
    "number": "Float64",
    "boolean": "boolean",
    "time": "string",
}
READR_TYPES = {
    "text": "readr::col_character()",
    "integer": "readr::col_double()",
    "number": "readr::col_double()",
    "boolean": "readr::col_logical()",
    "time": 'readr::col_datetime(format = "")',
}


def table_kinds(trial_columns: Sequence[Column]) -> dict[str, dict[str, str]]:
    """Per table, each column's header as written in the CSV -> its kind."""
    return {
        name: {neutralise(column.name): column_kind(column) for column in columns}
        for name, columns in export_tables(trial_columns)
    }


def write_loaders(sink: Sink, trial_columns: Sequence[Column]) -> Sequence[str]:
    """Write load.py and load.R for a CSV export with these trialData columns; their names."""
    kinds = table_kinds(trial_columns)
    with sink.open("load.py") as out:
        out.write(pandas_loader(kinds).encode("utf-8"))
    with sink.open("load.R") as out:
        out.write(readr_loader(kinds).encode("utf-8"))
    return LOADERS


def pandas_loader(kinds: dict[str, dict[str, str]]) -> str:
    return (
        _PANDAS.replace("__TABLES__", json.dumps(kinds, indent=4, ensure_ascii=False))
        .replace("__TYPES__", json.dumps(PANDAS_TYPES))
        .replace("__NEUTRALISED__", json.dumps(NEUTRALISED.pattern))
    )


def readr_loader(kinds: dict[str, dict[str, str]]) -> str:
    blocks = []
    for table, columns in kinds.items():
        lines = ",\n".join(f"    {r_string(name)} = {READR_TYPES[kind]}" for name, kind in columns.items())
        blocks.append(f"  {table} = readr::cols(\n{lines},\n    .default = readr::col_character()\n  )")
    return _READR.replace("__COL_TYPES__", ",\n".join(blocks)).replace(
        "__NEUTRALISED__", r_string(_R_NEUTRALISED)
    )


def r_string(text: str) -> str:
    """An R string literal for any text (trialData field names can hold anything), in ASCII."""
    return '"' + "".join(_r_char(char) for char in text) + '"'


def _r_char(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if char in _R_ESCAPES:
        return _R_ESCAPES[char]
    return char if char.isascii() and char.isprintable() else f"\\U{{{ord(char):x}}}"


_R_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n"}
# The same pattern for R's PCRE: "-" first in the class, so that it needs no escape.
_R_NEUTRALISED = "^'(?='*[-" + FORMULA_STARTS.replace("-", "") + "])"


_PANDAS = '''"""Load this export's CSV tables into pandas with the data dictionary's types.

    import load
    tables = load.load_tables()              # {"participants": DataFrame, ...}
    trials = load.load_table("trials")

Booleans are pandas "boolean", integers "Int64" (both nullable: an empty cell is <NA>), numbers
"Float64", text "string", times datetime64 in UTC (text that is not an ISO-8601 time becomes NaT;
the CSV keeps it). The spreadsheet-safety quote is removed from cells and column names.
Written by collector export; the same columns as README.md.
"""

import re
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
TABLES = __TABLES__
TYPES = __TYPES__
NEUTRALISED = re.compile(__NEUTRALISED__)


def _plain(value):
    return NEUTRALISED.sub("", value) if isinstance(value, str) else value


def load_table(name, directory=HERE):
    kinds = TABLES[name]
    frame = pd.read_csv(
        Path(directory) / f"{name}.csv",
        dtype={column: TYPES[kind] for column, kind in kinds.items()},
        keep_default_na=False,
        na_values=[""],
        true_values=["true"],
        false_values=["false"],
    )
    for column, kind in kinds.items():
        if kind == "time":
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601", errors="coerce")
        elif kind == "text":
            frame[column] = frame[column].map(_plain, na_action="ignore").astype("string")
    return frame.rename(columns=_plain)


def load_tables(directory=HERE):
    return {name: load_table(name, directory) for name in TABLES}
'''

_READR = """# Load this export's CSV tables into R with the data dictionary's types (readr).
#
#   source("load.R")
#   tables <- load_tables()            # list(participants = tibble, ...)
#   trials <- load_table("trials")
#
# Booleans logical, integers and numbers double (R integers are 32-bit), text character, times
# POSIXct in UTC. The spreadsheet-safety quote is removed from cells and column names.
# Written by collector export; the same columns as README.md.

col_types <- list(
__COL_TYPES__
)

neutralised <- __NEUTRALISED__

load_table <- function(name, dir = ".") {
  table <- readr::read_csv(
    file.path(dir, paste0(name, ".csv")),
    col_types = col_types[[name]],
    na = "",
    locale = readr::locale(tz = "UTC")
  )
  text <- vapply(table, is.character, logical(1))
  table[text] <- lapply(table[text], function(x) sub(neutralised, "", x, perl = TRUE))
  names(table) <- sub(neutralised, "", names(table), perl = TRUE)
  table
}

load_tables <- function(dir = ".") {
  sapply(names(col_types), function(name) load_table(name, dir), simplify = FALSE)
}
"""
