"""The repository carries its own contract: docs/ is current with the code, and nothing points outside.

Docstrings and comments cite sections as ``docs/api.md §3``; each cited section must exist.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from collector.settings import Settings
from tests.support.collector_process import REPO

DOCS = REPO / "docs"
CITATION = re.compile(r"docs/([\w-]+\.md) §(\d+(?:\.\d+)?)")
# Spelled in pieces so this file does not match itself.
OUTSIDE = ("../" + "shared", "DESIGN" + " §", "DESIGN" + ".md")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    return [
        REPO / name
        for name in names
        if (REPO / name).suffix in {".py", ".md", ".js", ".mjs", ".html", ".sh", ".toml", ""}
    ]


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
        return ""


def test_nothing_refers_to_a_file_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in tracked_text_files()
        for number, line in enumerate(read(path).splitlines(), 1)
        if any(marker in line for marker in OUTSIDE)
    ]
    assert found == []


def test_every_cited_docs_section_exists() -> None:
    headings: dict[str, set[str]] = {}
    for doc in DOCS.glob("*.md"):
        headings[doc.name] = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", read(doc), re.MULTILINE))
    dangling = [
        f"{path.relative_to(REPO)}: docs/{name} §{section}"
        for path in tracked_text_files()
        for name, section in CITATION.findall(read(path))
        if section not in headings.get(name, set())
    ]
    assert dangling == []


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field: str) -> None:
    assert f"`{field.upper()}`" in read(DOCS / "configuration.md")
