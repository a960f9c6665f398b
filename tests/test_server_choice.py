"""``collector serve`` runs uvicorn with httptools' HTTP parser (the header-timeout protocol) on the
event loop ``EVENT_LOOP`` names (uvloop by default; docs/reliability.md says why)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from collector import cli
from collector.settings import Settings
from collector.web.header_timeout import HeaderTimeoutProtocol
from tests.support.collector_process import CollectorProcess, settings_environment
from tests.support.settings import local_settings


def served_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> dict[str, Any]:
    """What ``collector serve`` hands uvicorn, uvicorn itself replaced."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli.uvicorn, "run", lambda app, **options: seen.update(options, app=app))
    env = settings_environment(local_settings(tmp_path / "data", **overrides))
    result = CliRunner(env=env).invoke(cli.main, ["serve"])
    assert result.exit_code == 0, result.output
    return seen


def test_serve_parses_http_with_httptools_and_times_out_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = served_with(tmp_path, monkeypatch, header_timeout_seconds=7.0)
    protocol = options["http"]
    assert isinstance(protocol, functools.partial)
    assert issubclass(protocol.func, HttpToolsProtocol) and protocol.func is HeaderTimeoutProtocol
    assert protocol.keywords == {"header_timeout": 7.0}
    assert options["loop"] == "uvloop"  # the default


def test_event_loop_setting_reaches_uvicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert served_with(tmp_path, monkeypatch, event_loop="asyncio")["loop"] == "asyncio"


def test_an_unknown_event_loop_stops_the_start() -> None:
    with pytest.raises(ValueError, match="event_loop"):
        Settings(storage="local", event_loop="trio")  # type: ignore[arg-type]


def test_fewer_storage_threads_than_upload_slots_stops_the_start() -> None:
    """An upload holding a slot would otherwise wait, without bound, for a thread."""
    with pytest.raises(ValueError, match="STORAGE_THREADS"):
        Settings(storage="local", storage_threads=64, max_concurrent_uploads=64)


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.processes
@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_the_running_server_uses_httptools_and_the_chosen_loop(tmp_path: Path, event_loop: str) -> None:
    """In the serving process itself: httptools' parser is loaded, and uvloop only when chosen
    (uvicorn imports neither unless it uses it; the collector imports neither itself)."""
    settings = local_settings(tmp_path / "data", event_loop=event_loop)
    with CollectorProcess(settings, log_path=tmp_path / "collector.log") as collector:
        maps = mapped_libraries(collector.process.pid)
    assert "httptools/parser/parser" in maps
    assert ("uvloop/loop" in maps) == (event_loop == "uvloop")
