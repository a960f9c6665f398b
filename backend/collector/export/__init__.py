"""Export the bucket as tables (participants, submissions, sessions, responses) with a data dictionary."""

from __future__ import annotations

from .columns import TABLES, Column, Table
from .runner import ExportFailed, ExportReport, Problem, Progress, export_bucket, table_file_name
from .writers import FORMATS, DirectorySink, ExportDependencyMissing, Format, ZipSink

__all__ = [
    "FORMATS",
    "TABLES",
    "Column",
    "DirectorySink",
    "ExportDependencyMissing",
    "ExportFailed",
    "ExportReport",
    "Format",
    "Problem",
    "Progress",
    "Table",
    "ZipSink",
    "export_bucket",
    "table_file_name",
]
