"""Which export formats there are, what each needs, and writing one into a directory.

Table formats (csv, jsonl, parquet) stream into any sink, a zip included; the analysis formats
(psychds, sav, dta) are written into a directory by their own module. ``available_formats``
says which of them this installation can produce, so that the dashboard offers only those.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..keys import KeyLayout
from ..reading.scan import DEFAULT_READERS
from ..storage import ObjectStore
from .psychds import export_psychds
from .psychds_check import SCHEMA_VERSION
from .runner import ExportReport, Progress, export_bucket
from .spss_stata import export_labelled
from .writers import FORMATS, DirectorySink, ExportDependencyMissing

ANALYSIS_FORMATS = ("psychds", "sav", "dta")
DIRECTORY_FORMATS = (*FORMATS, *ANALYSIS_FORMATS)
# The module each format needs beyond the collector's own dependencies, and the extra providing it.
NEEDS = {"parquet": ("pyarrow", "export"), "sav": ("pyreadstat", "export"), "dta": ("pyreadstat", "export")}


def available(fmt: str) -> bool:
    need = NEEDS.get(fmt)
    return need is None or importlib.util.find_spec(need[0]) is not None


def available_formats(formats: Collection[str] = DIRECTORY_FORMATS) -> list[str]:
    return [fmt for fmt in formats if available(fmt)]


def require(fmt: str) -> None:
    """``ExportDependencyMissing`` naming the install command when ``fmt`` cannot be produced here."""
    if not available(fmt):
        module, extra = NEEDS[fmt]
        raise ExportDependencyMissing(
            f"the {fmt} format needs {module}: pip install 'participant-data-collector[{extra}]'"
        )


@dataclass
class DirectoryExport:
    report: ExportReport
    notes: list[str] = field(default_factory=list)  # what to tell the person who ran it


def export_directory(
    store: ObjectStore,
    layout: KeyLayout,
    out_dir: Path,
    *,
    fmt: str,
    name: str = "",
    description: str = "",
    participant_ids: Collection[str] = (),
    since: datetime | None = None,
    strict: bool = False,
    workers: int = DEFAULT_READERS,
    progress: Progress | None = None,
) -> DirectoryExport:
    """Export the bucket into ``out_dir`` in ``fmt`` (one of ``DIRECTORY_FORMATS``)."""
    require(fmt)
    options = {
        "participant_ids": participant_ids,
        "since": since,
        "strict": strict,
        "workers": workers,
        "progress": progress,
    }
    if fmt == "psychds":
        result = export_psychds(store, layout, out_dir, name=name, description=description, **options)
        warnings = len(result.check.warnings)
        return DirectoryExport(
            result.export,
            [
                f"Psych-DS dataset: {len(result.check.data_files)} data files "
                f"({result.session_files} trial sessions), {result.raw_files} raw JSON files; "
                f"passes the Psych-DS {SCHEMA_VERSION} checks"
                + (f" ({warnings} recommendation(s) not met)" if warnings else "")
            ],
        )
    if fmt in ("sav", "dta"):
        return DirectoryExport(*export_labelled(store, layout, out_dir, fmt=fmt, **options))
    report = export_bucket(store, layout, DirectorySink(out_dir), fmt=fmt, **options)  # type: ignore[arg-type]
    loaders = [name for name in report.files if name.startswith("load.")]
    return DirectoryExport(report, [f"Typed loaders: {', '.join(loaders)}"] if loaders else [])
