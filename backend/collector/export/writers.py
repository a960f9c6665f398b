"""Table writers (CSV, JSON Lines, Parquet) that stream rows into a binary file, and output sinks.

Every writer fixes its column order and types from the table declaration, so the same rows
always give the same bytes: that is what makes two exports of one bucket identical.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from ..errors import ExportDependencyMissing
from .columns import Table

Format = Literal["csv", "parquet", "jsonl"]
FORMATS: tuple[Format, ...] = ("csv", "parquet", "jsonl")
PARQUET_ROW_GROUP = 2000


class TableWriter(Protocol):
    def write(self, row: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def open_writer(fmt: Format, table: Table, out: IO[bytes]) -> TableWriter:
    if fmt == "csv":
        return CsvWriter(table, out)
    if fmt == "jsonl":
        return JsonlWriter(table, out)
    return ParquetWriter(table, out)


class CsvWriter:
    """RFC 4180 CSV, UTF-8, ``\\n`` line ends; booleans as true/false, missing values empty.

    Text that a spreadsheet would take for a formula is neutralised (see ``neutralise``).
    """

    def __init__(self, table: Table, out: IO[bytes]) -> None:
        self._text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        # The csv module quotes a field only for the characters of its line terminator: with
        # "\n" alone a bare "\r" in a cell would go out unquoted and split the row in every
        # reader. So rows are written with "\r\n" (quoting both) and the ending swapped for "\n".
        self._row = io.StringIO(newline="")
        self._csv = csv.writer(self._row, lineterminator="\r\n")
        self._names = table.column_names
        self._write_row([neutralise(name) for name in self._names])

    def write(self, row: dict[str, Any]) -> None:
        self._write_row([_csv_cell(row.get(name)) for name in self._names])

    def _write_row(self, cells: list[Any]) -> None:
        self._row.seek(0)
        self._row.truncate()
        self._csv.writerow(cells)
        self._text.write(self._row.getvalue()[:-2] + "\n")

    def close(self) -> None:
        self._text.flush()
        self._text.detach()  # the sink owns the underlying file


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return neutralise(value)
    return value


# What makes Excel, LibreOffice or Google Sheets read a cell as a formula (OWASP "CSV
# injection"), with the full-width forms some of them also accept.
FORMULA_STARTS = "=+-@\t\r\uff1d\uff0b\uff0d\uff20"
# Quotes before a formula character are counted too, so that undoing is exact: a value that
# itself began with ' followed by = gets one more ', and removing one ' gives it back.
_FORMULA = re.compile("'*[" + re.escape(FORMULA_STARTS) + "]")
_PLAIN_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def neutralise(text: str) -> str:
    """Prefix a single quote to text a spreadsheet would evaluate (OWASP's advice).

    Undo: remove one leading ``'`` from every cell that matches ``'+`` followed by one of
    ``FORMULA_STARTS``. A plain number such as ``-5`` is left alone: a spreadsheet reads it
    as that number, and nothing else.
    """
    if _FORMULA.match(text) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


class JsonlWriter:
    """One JSON object per line, keys in column order, every column present (null when missing)."""

    def __init__(self, table: Table, out: IO[bytes]) -> None:
        self._out = out
        self._names = table.column_names

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps({name: row.get(name) for name in self._names}, ensure_ascii=False)
        self._out.write(line.encode("utf-8") + b"\n")

    def close(self) -> None:
        return None


class ParquetWriter:
    """Parquet with an explicit schema, written in row groups so memory stays bounded."""

    def __init__(self, table: Table, out: IO[bytes]) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ExportDependencyMissing(
                "Parquet needs pyarrow: pip install 'participant-data-collector[export]'"
            ) from None
        types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
        self._pa = pa
        self._schema = pa.schema([pa.field(c.name, types[c.type]) for c in table.columns])
        self._names = table.column_names
        self._writer = pq.ParquetWriter(_Tellable(out), self._schema, compression="zstd")
        self._pending: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        if len(self._pending) >= PARQUET_ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        columns = {name: [row.get(name) for row in self._pending] for name in self._names}
        self._writer.write_table(self._pa.table(columns, schema=self._schema))
        self._pending = []

    def close(self) -> None:
        if self._pending:
            self._flush()
        self._writer.close()


class _Tellable(io.RawIOBase):
    """A write-only file that knows its position, for outputs that cannot tell (zip entries)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        written = self._out.write(bytes(data))
        self._position += len(data)
        return written if written is not None else len(data)

    def tell(self) -> int:
        return self._position

    def close(self) -> None:  # the sink owns the underlying file
        super().close()


class Sink(Protocol):
    """Where exported files go: a directory or a zip archive."""

    def open(self, name: str) -> Any: ...


class DirectorySink:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        # Written beside, then renamed: a reader never sees a half-written table.
        final = self.directory / name
        partial = final.with_name(f".{name}.partial")
        with partial.open("wb") as out:
            yield out
        partial.replace(final)


class ZipSink:
    """Into a zip archive. Tables are spooled (to disk past a few MiB) and added when complete,
    because a zip file takes one entry at a time while the export fills several tables at once."""

    def __init__(self, archive: zipfile.ZipFile, folder: str = "") -> None:
        self.archive = archive
        self.folder = folder

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            yield spool  # type: ignore[misc]
            spool.seek(0)
            with self.archive.open(self.folder + name, "w", force_zip64=True) as entry:
                shutil.copyfileobj(spool, entry, 1024 * 1024)
