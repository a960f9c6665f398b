"""Checking a directory against the Psych-DS rules, for the datasets ``collector export --format
psychds`` writes (and any other).

No validator is published on the package registries (the official one is a Deno module), so
these are the checks the specification's own schema states, followed from **Psych-DS schema
1.5.1** (``schema_model/versions/1.5.1`` of the psych-ds/psych-DS repository, with the rules
carried over from earlier versions where 1.5.1 does not restate them). Each problem carries the
schema's error code:

* ``MISSING_DATASET_DESCRIPTION``: no ``dataset_description.json`` at the top.
* ``JSON_ENCODING_ERROR`` / ``JSON_INVALID``: a metadata file that is not UTF-8, or not a JSON object.
* ``INVALID_JSONLD_FORMATTING`` / ``UNKNOWN_NAMESPACE``: ``@context`` missing, or not schema.org.
* ``MISSING_DATASET_TYPE`` / ``INCORRECT_DATASET_TYPE``: ``@type`` missing, or not ``Dataset``.
* ``JSON_KEY_REQUIRED``: ``name``, ``description`` or ``variableMeasured`` missing or empty
  (``JSON_KEY_RECOMMENDED``, a warning, for author, citation, license, funder, url,
  identifier, privacyPolicy, keywords).
* ``OBJECT_TYPE_MISSING`` (warning): a ``variableMeasured`` object without ``@type``.
* ``MISSING_DATA_DIRECTORY``; ``MISSING_DATAFILE``: no valid ``*_data.csv``/``.tsv`` under ``data/``.
* ``FILENAME_KEYWORD_FORMATTING_ERROR``: a CSV/TSV under ``data/`` whose name does not match
  ``([a-z]+-[a-zA-Z0-9]+)(_[a-z]+-[a-zA-Z0-9]+)*_data\\.(csv|tsv)``;
  ``FILENAME_UNOFFICIAL_KEYWORD_WARNING`` (warning) for a key outside study, site, subject,
  session, task, condition, trial, stimulus, description.
* ``FILE_NOT_READ``: a data file that is not UTF-8; ``FILE_EMPTY``; ``CSV_HEADER_MISSING``;
  ``CSV_FORMATTING_ERROR`` (unparseable, or an empty line); ``CSV_HEADER_LENGTH_MISMATCH``;
  ``CSV_HEADER_REPEATED``; ``ROWID_VALUES_NOT_UNIQUE`` (a ``row_id`` column with a repeat).
* ``CSV_COLUMN_MISSING_FROM_METADATA``: a column not in the ``variableMeasured`` that applies
  to its file; ``VARIABLE_MISSING_FROM_CSV_COLUMNS``: a variable in no data file's columns.

Metadata applies by inheritance: a data file's sidecar (``*_data.json`` beside it) overrides
the nearest ``file_metadata.json`` above it, which overrides ``dataset_description.json``; a
key is replaced whole, never merged. Paths listed in ``.psychds-ignore`` (one pattern a line,
``#`` comments, a trailing ``/`` for a directory) are not checked.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.5.1"
DATAFILE_NAME = re.compile(r"([a-z]+-[a-zA-Z0-9]+)(_[a-z]+-[a-zA-Z0-9]+)*_data\.(csv|tsv)")
OFFICIAL_KEYWORDS = frozenset(
    {"study", "site", "subject", "session", "task", "condition", "trial", "stimulus", "description"}
)
REQUIRED_KEYS = ("name", "description", "variableMeasured")
RECOMMENDED_KEYS = (
    "author",
    "citation",
    "license",
    "funder",
    "url",
    "identifier",
    "privacyPolicy",
    "keywords",
)
SCHEMA_ORG = ("https://schema.org/", "http://schema.org/", "https://schema.org", "http://schema.org")
DESCRIPTION_FILE = "dataset_description.json"
DIRECTORY_METADATA = "file_metadata.json"
IGNORE_FILE = ".psychds-ignore"


@dataclass(frozen=True)
class Issue:
    code: str
    path: str  # relative to the dataset, "/" for the dataset itself
    detail: str
    level: str = "error"  # or "warning"


@dataclass
class CheckResult:
    issues: list[Issue] = field(default_factory=list)
    data_files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.level == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {issue.code for issue in self.errors}

    def add(self, code: str, path: str, detail: str, level: str = "error") -> None:
        self.issues.append(Issue(code, path, detail, level))


def check_dataset(root: Path) -> CheckResult:
    """Every problem the rules above find in the dataset at ``root``."""
    result = CheckResult()
    ignored = _ignore_patterns(root)
    description = _read_metadata(root / DESCRIPTION_FILE, DESCRIPTION_FILE, result)
    if description is None and not (root / DESCRIPTION_FILE).is_file():
        result.add(
            "MISSING_DATASET_DESCRIPTION", "/", f"no {DESCRIPTION_FILE} in the dataset's top directory"
        )
    if description is not None:
        _check_description(description, result)
    data = root / "data"
    if not data.is_dir():
        result.add("MISSING_DATA_DIRECTORY", "/", "no data/ directory")
        return result
    seen_columns: set[str] = set()
    for path in sorted(data.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.is_file() or _ignored(relative, ignored):
            continue
        if path.suffix not in (".csv", ".tsv"):
            continue
        if not DATAFILE_NAME.fullmatch(path.name):
            result.add(
                "FILENAME_KEYWORD_FORMATTING_ERROR",
                relative,
                "a data file name must be keyword-value pairs joined by _ ending in _data.csv",
            )
            continue
        for key in re.findall(r"([a-z]+)-", path.name):
            if key not in OFFICIAL_KEYWORDS:
                result.add("FILENAME_UNOFFICIAL_KEYWORD_WARNING", relative, f"keyword {key!r}", "warning")
        header, valid = _check_table(path, relative, result)
        seen_columns.update(header)
        if not valid:
            continue
        result.data_files.append(relative)
        metadata = _applicable_metadata(root, path, description or {}, result)
        listed = _variable_names(metadata.get("variableMeasured"))
        missing = [name for name in header if name not in listed]
        if missing:
            result.add(
                "CSV_COLUMN_MISSING_FROM_METADATA",
                relative,
                "columns not in variableMeasured: " + ", ".join(missing[:20]),
            )
    if not result.data_files:
        result.add("MISSING_DATAFILE", "data/", "no valid *_data.csv or *_data.tsv file under data/")
    elif description is not None:
        unused = sorted(_variable_names(description.get("variableMeasured")) - seen_columns)
        if unused:
            result.add(
                "VARIABLE_MISSING_FROM_CSV_COLUMNS",
                DESCRIPTION_FILE,
                "variables in no data file: " + ", ".join(unused[:20]),
            )
    return result


def _read_metadata(path: Path, relative: str, result: CheckResult) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        result.add("JSON_ENCODING_ERROR", relative, "not UTF-8")
        return None
    try:
        document = json.loads(text)
    except ValueError as exc:
        result.add("JSON_INVALID", relative, str(exc))
        return None
    if not isinstance(document, dict):
        result.add("JSON_INVALID", relative, "not a JSON object")
        return None
    return document


def _check_description(document: dict[str, Any], result: CheckResult) -> None:
    context = document.get("@context")
    contexts = context if isinstance(context, list) else [context]
    if context is None:
        result.add(
            "INVALID_JSONLD_FORMATTING", DESCRIPTION_FILE, "no @context (it should be https://schema.org/)"
        )
    elif not any(isinstance(c, str) and c in SCHEMA_ORG for c in contexts):
        result.add("UNKNOWN_NAMESPACE", DESCRIPTION_FILE, f"@context {context!r} is not schema.org")
    kind = document.get("@type", document.get("type"))
    if kind is None:
        result.add("MISSING_DATASET_TYPE", DESCRIPTION_FILE, "no @type")
    elif kind not in ("Dataset", "https://schema.org/Dataset", "http://schema.org/Dataset"):
        result.add("INCORRECT_DATASET_TYPE", DESCRIPTION_FILE, f"@type {kind!r} is not Dataset")
    for key in REQUIRED_KEYS:
        if document.get(key) in (None, "", []):
            result.add("JSON_KEY_REQUIRED", DESCRIPTION_FILE, f"required key {key!r} missing or empty")
    for key in RECOMMENDED_KEYS:
        if key not in document:
            result.add("JSON_KEY_RECOMMENDED", DESCRIPTION_FILE, f"recommended key {key!r}", "warning")
    variables = document.get("variableMeasured")
    for entry in variables if isinstance(variables, list) else []:
        if isinstance(entry, dict) and "@type" not in entry:
            result.add("OBJECT_TYPE_MISSING", DESCRIPTION_FILE, f"variable {entry.get('name')!r}", "warning")


def _variable_names(value: Any) -> set[str]:
    """Names in a variableMeasured list: plain strings, or PropertyValue objects' ``name``."""
    names: set[str] = set()
    for entry in value if isinstance(value, list) else []:
        if isinstance(entry, str):
            names.add(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            names.add(entry["name"])
    return names


def _check_table(path: Path, relative: str, result: CheckResult) -> tuple[list[str], bool]:
    """The data file's header (empty when unreadable), and whether the file is valid (problems reported)."""
    body = path.read_bytes()
    if not body:
        result.add("FILE_EMPTY", relative, "empty file")
        return [], False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        result.add("FILE_NOT_READ", relative, f"not UTF-8 ({exc.reason} at byte {exc.start})")
        return [], False
    delimiter = "\t" if path.suffix == ".tsv" else ","
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        result.add("CSV_FORMATTING_ERROR", relative, str(exc))
        return [], False
    header = records[0] if records else []
    if not header or not any(name.strip() for name in header):
        result.add("CSV_HEADER_MISSING", relative, "no header row")
        return [], False
    problems = False
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        result.add("CSV_HEADER_REPEATED", relative, "repeated columns: " + ", ".join(repeated))
        problems = True
    for number, record in enumerate(records[1:], start=2):
        if not record:
            result.add("CSV_FORMATTING_ERROR", relative, f"empty line {number}")
            problems = True
            break
        if len(record) != len(header):
            result.add(
                "CSV_HEADER_LENGTH_MISMATCH",
                relative,
                f"row {number} has {len(record)} cells, header {len(header)}",
            )
            problems = True
            break
    if "row_id" in header:
        position = header.index("row_id")
        values = [record[position] for record in records[1:] if len(record) > position]
        if len(values) != len(set(values)):
            result.add("ROWID_VALUES_NOT_UNIQUE", relative, "row_id repeats a value")
            problems = True
    return header, not problems


def _applicable_metadata(
    root: Path, path: Path, description: dict[str, Any], result: CheckResult
) -> dict[str, Any]:
    """dataset_description.json, overridden key by key by file_metadata.json files from data/ down,
    then by the file's sidecar."""
    merged = dict(description)
    folders = [*reversed(path.parent.relative_to(root).parents), path.parent.relative_to(root)]
    for folder in folders:
        if folder.parts[:1] != ("data",):
            continue
        candidate = root / folder / DIRECTORY_METADATA
        merged.update(_read_metadata(candidate, candidate.relative_to(root).as_posix(), result) or {})
    sidecar = path.with_suffix(".json")
    merged.update(_read_metadata(sidecar, sidecar.relative_to(root).as_posix(), result) or {})
    return merged


def _ignore_patterns(root: Path) -> list[str]:
    path = root / IGNORE_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.strip().lstrip("/") for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("/") and (relative + "/").startswith(pattern):
            return True
        if fnmatch.fnmatchcase(relative, pattern) or fnmatch.fnmatchcase(
            relative.rsplit("/", 1)[-1], pattern
        ):
            return True
    return False
