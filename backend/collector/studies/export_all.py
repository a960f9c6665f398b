"""``collector export --all-studies``: every study's tables in one, with a ``study_id`` column.

Each study (the default one first, then the registered ones by ID) is exported as usual into a
folder of its own; then each table is concatenated, ``study_id`` first (empty for the default
study), the columns being the union of the studies' (a trials table's field columns differ from
one experiment to the next). The CSV and JSON Lines files are merged a row at a time; Parquet
tables are merged in memory (pyarrow), which bounds that format to what memory holds.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..export import DirectorySink, ExportReport, Format, Problem, Progress, export_bucket, table_file_name
from ..export.columns import TABLES, TRIAL_TABLES
from ..export.writers import neutralise
from ..keys import KeyLayout
from ..storage import ObjectStore
from .registry import read_registry

STUDY_COLUMN = "study_id"
# The table formats merged here (Psych-DS, SPSS and Stata are exported one study at a time).
ALL_STUDIES_FORMATS: tuple[Format, ...] = ("csv", "jsonl", "parquet")
README_NAME = "README.md"


@dataclass
class AllStudiesReport:
    rows: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)  # "" for the default study


def export_all_studies(
    store: ObjectStore,
    data_prefix: str,
    out_dir: Path,
    *,
    fmt: Format = "csv",
    progress: Progress | None = None,
    **options: Any,
) -> AllStudiesReport:
    """Export every study into ``out_dir`` as one set of tables; ``options`` go to ``export_bucket``."""
    studies = [("", data_prefix)] + [
        (study.id, study.prefix) for study in read_registry(store, data_prefix).studies.values()
    ]
    report = AllStudiesReport(studies=[study_id for study_id, _ in studies])
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".all-studies-", dir=out_dir) as scratch:
        parts: list[tuple[str, Path, ExportReport]] = []
        for number, (study_id, prefix) in enumerate(studies):
            folder = Path(scratch) / str(number)
            one = export_bucket(
                store, KeyLayout(prefix), DirectorySink(folder), fmt=fmt, progress=progress, **options
            )
            parts.append((study_id, folder, one))
            report.problems.extend(one.problems)
            for name, count in one.rows.items():
                report.rows[name] = report.rows.get(name, 0) + count
        # The tables only: the CSV loaders (load.py, load.R) type one study's columns, not these.
        tables = [table_file_name(table, fmt) for table in (*TABLES, *TRIAL_TABLES)]
        for name in tables:
            _merge(
                fmt,
                [(study_id, folder / name) for study_id, folder, _ in parts],
                out_dir / name,
            )
        _merge_readmes(
            [(study_id, folder / README_NAME) for study_id, folder, _ in parts], out_dir / README_NAME
        )
    return report


def _merge(fmt: Format, parts: list[tuple[str, Path]], target: Path) -> None:
    partial = target.with_name(f".{target.name}.partial")
    if fmt == "csv":
        _merge_csv(parts, partial)
    elif fmt == "jsonl":
        _merge_jsonl(parts, partial)
    else:
        _merge_parquet(parts, partial)
    partial.replace(target)


def _csv_rows(path: Path) -> Iterator[list[str]]:
    with path.open(encoding="utf-8", newline="") as text:
        yield from csv.reader(text)


def _merge_csv(parts: list[tuple[str, Path]], target: Path) -> None:
    columns: list[str] = []
    for _, path in parts:
        header = next(_csv_rows(path), [])
        columns += [name for name in header if name not in columns]
    with target.open("w", encoding="utf-8", newline="") as out:
        # As the export's own CSV writer: rows ended "\r\n" by csv (so a bare "\r" is quoted),
        # written with "\n". The cells were neutralised when first written: copied as they are.
        line = _CsvLine()
        out.write(line.format([STUDY_COLUMN, *columns]))
        for study_id, path in parts:
            rows = _csv_rows(path)
            header = next(rows, [])
            position = {name: i for i, name in enumerate(header)}
            for row in rows:
                cells = [row[position[name]] if name in position else "" for name in columns]
                out.write(line.format([neutralise(study_id), *cells]))


class _CsvLine:
    def __init__(self) -> None:
        self._buffer = io.StringIO(newline="")
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def format(self, cells: list[str]) -> str:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(cells)
        return self._buffer.getvalue()[:-2] + "\n"


def _merge_jsonl(parts: list[tuple[str, Path]], target: Path) -> None:
    with target.open("wb") as out:
        for study_id, path in parts:
            with path.open("rb") as lines:
                for line in lines:
                    row = json.loads(line)
                    merged = {STUDY_COLUMN: study_id or None, **row}
                    out.write(json.dumps(merged, ensure_ascii=False).encode("utf-8") + b"\n")


def _merge_parquet(parts: list[tuple[str, Path]], target: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for study_id, path in parts:
        table = pq.read_table(path)
        column = pa.array([study_id or None] * table.num_rows, type=pa.string())
        tables.append(table.add_column(0, STUDY_COLUMN, column))
    merged = pa.concat_tables(tables, promote_options="permissive")
    pq.write_table(merged, target)


def _merge_readmes(parts: list[tuple[str, Path]], target: Path) -> None:
    with target.open("w", encoding="utf-8") as out:
        out.write(
            "# Export of every study\n\n"
            f"Every table's first column, `{STUDY_COLUMN}`, names the study a row belongs to (empty: "
            "the default study). The other columns are described below, study by study; a table "
            "holds the union of the studies' columns (empty where a study has no such column). "
            "Export one study (`--study ID`) for its CSV loaders (load.py, load.R).\n"
        )
        for study_id, path in parts:
            out.write(f"\n---\n\n# Study: {study_id or 'default'}\n\n")
            with path.open(encoding="utf-8") as readme:
                shutil.copyfileobj(readme, out)
