"""``collector export --format psychds``: the bucket as a Psych-DS dataset, checked before it is handed over.

Layout (Psych-DS schema 1.5.1, see ``psychds_check``)::

    dataset_description.json   schema.org JSON-LD: @type Dataset, name, description, every column
                               of every CSV in variableMeasured with its data-dictionary meaning
    README.md                  the data dictionary, and how names map to IDs
    .psychds-ignore            data/raw/ (the original JSON is kept, not validated as tables)
    data/study-<s>_description-<table>_data.csv        one per exported table
    data/trials/study-<s>_subject-<p>_session-<n>_data.csv   one per trial session
    data/raw/participants/<id>/...                      the stored JSON, as stored

Keyword values may hold letters and digits only. IDs (participant, session: letters, digits,
``_`` and ``-``) are written with every other character as ``x`` and its two hex digits, and
``x`` itself as ``x78``: ``P-01_a`` becomes ``Px2d01x5fa``, and the name decodes back exactly.
Each data file also holds the IDs as they are, in its ``participant_id`` and ``session_id``
columns. The raw JSON is byte for byte what the bucket holds, except that the participant's key
hash is removed from status files (it is never exported).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import DatasetInvalid
from ..keys import KeyLayout
from ..participant_keys import HASH_FIELD
from ..reading.scan import DEFAULT_READERS, decode_object, list_bucket, read_many
from ..storage import ObjectStore, StorageError
from ..tombstone import is_tombstone
from .columns import TABLES, TRIAL_SESSIONS, TRIALS, TRIALS_TRAILING, Column
from .dictionary import data_dictionary
from .loaders import NEUTRALISED
from .psychds_check import SCHEMA_VERSION, CheckResult, check_dataset
from .runner import ExportFailed, ExportReport, Progress, export_bucket
from .writers import DirectorySink, neutralise

DEFAULT_STUDY = "default"


@dataclass
class PsychDSReport:
    export: ExportReport
    check: CheckResult
    session_files: int = 0
    raw_files: int = 0
    files: list[str] = field(default_factory=list)


def keyword_value(identifier: str) -> str:
    """A Psych-DS keyword value (letters and digits) that decodes back to ``identifier`` exactly."""
    return "".join(
        char
        if char.isascii() and char.isalnum() and char != "x"
        else "".join(f"x{b:02x}" for b in char.encode())
        for char in identifier
    )


def identifier_from_keyword(value: str) -> str:
    """The inverse of ``keyword_value``: escaped bytes are gathered, then read as UTF-8."""
    raw = bytearray()
    for escaped, plain in re.findall(r"x([0-9a-f]{2})|([^x])", value):
        raw += bytes([int(escaped, 16)]) if escaped else plain.encode()
    return raw.decode("utf-8", errors="replace")


def data_file_name(study: str, **keywords: str) -> str:
    pairs = [("study", study), *keywords.items()]
    return "_".join(f"{key}-{keyword_value(value)}" for key, value in pairs) + "_data.csv"


def export_psychds(
    store: ObjectStore,
    layout: KeyLayout,
    out_dir: Path,
    *,
    name: str,
    description: str,
    study: str = DEFAULT_STUDY,
    participant_ids: Collection[str] = (),
    since: datetime | None = None,
    strict: bool = False,
    workers: int = DEFAULT_READERS,
    progress: Progress | None = None,
) -> PsychDSReport:
    """Write the dataset into ``out_dir`` and check it; ``DatasetInvalid`` if the checks fail.

    An earlier dataset in ``out_dir`` is replaced whole: a file left from it (a participant erased
    since, a session no longer selected) must not pass for current data. A directory holding
    anything else is refused.
    """
    data = out_dir / "data"
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / "dataset_description.json").is_file():
            raise ExportFailed(
                f"{out_dir} is not empty and holds no Psych-DS dataset: choose a new directory"
            )
        shutil.rmtree(data, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    data.mkdir()
    with tempfile.TemporaryDirectory(prefix="psychds-", dir=out_dir) as scratch:
        tables = Path(scratch)
        report = export_bucket(
            store,
            layout,
            DirectorySink(tables),
            fmt="csv",
            participant_ids=participant_ids,
            since=since,
            strict=strict,
            workers=workers,
            progress=progress,
        )
        result = PsychDSReport(report, CheckResult())
        for table in (*TABLES, TRIALS, TRIAL_SESSIONS):
            target = data / data_file_name(study, description=table.name)
            shutil.move(tables / f"{table.name}.csv", target)
            result.files.append(target.relative_to(out_dir).as_posix())
        result.session_files = _split_sessions(
            data / data_file_name(study, description=TRIALS.name), data, study
        )
    result.raw_files = _copy_raw(
        store, layout, data / "raw", participant_ids, since, set(report.erased), workers
    )
    columns = _columns_by_name(report.trial_columns)
    variables = _variables(sorted(data.rglob("*_data.csv")), columns)
    metadata = {
        "@context": "https://schema.org/",
        "@type": "Dataset",
        "name": name,
        "description": description,
        "creator": {
            "@type": "SoftwareApplication",
            "name": "participant-data-collector",
            "softwareVersion": __version__,
        },
        "variableMeasured": variables,
    }
    (out_dir / "dataset_description.json").write_text(
        json.dumps(metadata, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    (out_dir / ".psychds-ignore").write_text("data/raw/\n", encoding="utf-8")
    readme = _PSYCHDS_README.format(version=SCHEMA_VERSION, study=study) + data_dictionary(
        "csv",
        trial_columns=report.trial_columns,
        note="In this dataset each table is the data/ file named after it (see above).",
    )
    (out_dir / "README.md").write_text(readme, encoding="utf-8")
    result.files += ["dataset_description.json", ".psychds-ignore", "README.md"]
    result.check = check_dataset(out_dir)
    if not result.check.ok:
        problems = "; ".join(f"{i.code} {i.path}: {i.detail}" for i in result.check.errors[:10])
        raise DatasetInvalid(f"the Psych-DS dataset in {out_dir} fails its checks: {problems}")
    return result


def _split_sessions(trials: Path, data: Path, study: str) -> int:
    """One file per (participant, session) from the trials table, which is ordered by both."""
    folder = data / "trials"
    folder.mkdir(exist_ok=True)
    written = 0
    with trials.open(encoding="utf-8", newline="") as source:
        reader = csv.reader(source)
        header = next(reader)
        at = header.index("participant_id"), header.index("session_id")
        current: tuple[str, str] | None = None
        out = None
        try:
            for record in reader:
                session = (_plain(record[at[0]]), _plain(record[at[1]]))
                if session != current:
                    if out is not None:
                        out.close()
                    current = session
                    path = folder / data_file_name(study, subject=session[0], session=session[1])
                    out = path.open("w", encoding="utf-8", newline="")
                    writer = csv.writer(out, lineterminator="\n")
                    writer.writerow(header)
                    written += 1
                writer.writerow(record)
        finally:
            if out is not None:
                out.close()
    return written


def _plain(cell: str) -> str:
    """A CSV cell without the spreadsheet-safety quote (IDs may begin with '-')."""
    return NEUTRALISED.sub("", cell)


def _copy_raw(
    store: ObjectStore,
    layout: KeyLayout,
    raw: Path,
    participant_ids: Collection[str],
    since: datetime | None,
    erased: set[str],
    workers: int,
) -> int:
    listing = list_bucket(store, layout)
    wanted = set(participant_ids)
    infos = [
        info
        for pid, entry in listing.participants.items()
        if (not wanted or pid in wanted) and pid not in erased
        for info in ([entry.status] if entry.status else []) + entry.submissions + entry.trials
        if since is None or info.last_modified >= since
    ]
    root = layout.participants_root
    written = 0
    for key, body in read_many(store, [info.key for info in infos], workers=workers):
        if isinstance(body, StorageError):
            continue  # reported by the table export, which read the same objects
        relative = key[len(root) :]
        if ".." in relative.split("/"):
            continue
        path = raw / "participants" / relative
        if key.endswith("/status.json"):
            body = _without_key_hash(body)
            if body is None:
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        written += 1
    return written


def _without_key_hash(body: bytes) -> bytes | None:
    try:
        document = decode_object(body)
    except ValueError:
        return body  # not JSON: kept as stored, nothing to strip
    if is_tombstone(document):
        return None
    if HASH_FIELD not in document:
        return body
    document.pop(HASH_FIELD)
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _columns_by_name(trial_columns: list[Column]) -> dict[str, list[tuple[str, Column]]]:
    """Every declared column under its name as a CSV header shows it, with its table."""
    by_name: dict[str, list[tuple[str, Column]]] = {}
    trials = (*TRIALS.columns, *trial_columns, *TRIALS_TRAILING)
    for table_name, columns in (*((t.name, t.columns) for t in TABLES), (TRIALS.name, trials)):
        for column in columns:
            by_name.setdefault(neutralise(column.name), []).append((table_name, column))
    for column in TRIAL_SESSIONS.columns:
        by_name.setdefault(neutralise(column.name), []).append((TRIAL_SESSIONS.name, column))
    return by_name


def _variables(files: list[Path], columns: dict[str, list[tuple[str, Column]]]) -> list[dict[str, Any]]:
    """A PropertyValue for every column of every data file, in first-met order."""
    names: list[str] = []
    for path in files:
        with path.open(encoding="utf-8", newline="") as source:
            for name in next(csv.reader(source), []):
                if name not in names:
                    names.append(name)
    variables = []
    for name in names:
        declared = columns.get(name, [])
        meanings = list(dict.fromkeys(column.description for _, column in declared))
        if len(meanings) == 1:
            text = meanings[0]
        else:
            text = " ".join(f"In {table}: {column.description}" for table, column in declared) or name
        entry: dict[str, Any] = {"@type": "PropertyValue", "name": name, "description": text}
        kinds = {column.type for _, column in declared}
        if len(kinds) == 1:
            entry["valueReference"] = {"@type": "PropertyValue", "name": "type", "value": kinds.pop()}
        variables.append(entry)
    return variables


_PSYCHDS_README = """# Psych-DS dataset

Written by `collector export --format psychds`, following Psych-DS schema {version}, and checked
against its rules before it was handed over (`collector.export.psychds_check`).

- `dataset_description.json`: schema.org metadata; `variableMeasured` lists every column of
  every data file with its meaning from the data dictionary below.
- `data/study-{study}_description-<table>_data.csv`: one file per table (`trialx5fsessions` is
  the `trial_sessions` table, by the encoding below).
- `data/trials/study-{study}_subject-<participant>_session-<session>_data.csv`: the trials of one
  session (the same columns as the trials table).
- `data/raw/participants/<participant>/...`: the stored JSON documents, as the bucket holds them
  (the participant's key hash removed from status files).

File names hold letters and digits only: in a participant or session ID, every other
character is written as `x` and its two hex digits, and `x` itself as `x78` (`P-01_a` is
`Px2d01x5fa`). To decode, replace every `x` followed by two hex digits by that character. The
`participant_id` and `session_id` columns hold the IDs as they are.

"""
