"""Shared fixtures: settings over a temp folder or a real S3 server (moto) on loopback, apps, clients."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore, open_store
from tests.support.chromium import launch_chromium
from tests.support.deselection import excludes_every_test_marked, module_markers
from tests.support.settings import local_settings, s3_settings

# Every write the local folder acknowledges ends in a syncfs (collector.storage.local), which
# flushes the whole filesystem: on a disk that other work writes to as well, milliseconds each and
# half the fast loop's time. On a tmpfs it costs microseconds; the tests make the same calls on
# the same files and assert the same things. No crash test depends on the disk: a killed process
# leaves the page cache behind either way.
_TMPFS = Path("/dev/shm")
_TMPFS_ROOM = 2 * 1024**3  # free bytes needed (a Docker container's 64 MB /dev/shm is too small)


def pytest_configure(config: pytest.Config) -> None:
    """Temporary folders (``tmp_path``) on a tmpfs when there is a roomy one and no other choice
    was made (``--basetemp``, ``PYTEST_DEBUG_TEMPROOT``); xdist workers inherit the choice."""
    if config.option.basetemp or os.environ.get("PYTEST_DEBUG_TEMPROOT") or not _roomy_tmpfs(_TMPFS):
        return
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(_TMPFS)


def _roomy_tmpfs(path: Path) -> bool:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
        free = os.statvfs(path)
    except OSError:
        return False
    is_tmpfs = any(line.split()[1:3] == [str(path), "tmpfs"] for line in mounts)
    return is_tmpfs and free.f_bavail * free.f_frsize >= _TMPFS_ROOM and os.access(path, os.W_OK)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave unimported a test module whose every test ``-m`` deselects (tests.support.deselection):
    the fast loop then never imports the fuzzing, browser and process modules. None: pytest decides."""
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    expression = config.getoption("markexpr")
    if not expression:
        return None
    markers = module_markers(collection_path)
    if markers is not None and excludes_every_test_marked(expression, markers):
        return True
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> None:
    """schemathesis's pytest plugin, for a test module that fuzzes with it, registered before that
    module is collected. It is off otherwise (``-p no:schemathesis`` in pyproject.toml): loading it
    imports schemathesis and hypothesis, about a second of every run that does not fuzz."""
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("test_")
        and b"schemathesis" in file_path.read_bytes()
    ):
        parent.config.pluginmanager.import_plugin("schemathesis.pytest.plugin")


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer  # only for s3 tests: importing moto costs the fast loop

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto_endpoint(_moto_server: str, request: pytest.FixtureRequest) -> str:
    """A real S3 protocol server (moto's standalone server) on a free loopback port.

    Function-scoped over one server per session, so that every test that reaches moto, however
    it asks for it (``getfixturevalue`` included), is checked for its ``s3`` marker.
    """
    if request.node.get_closest_marker("s3") is None:
        pytest.fail("this test talks to moto but is not marked s3: the fast loop would run it")
    return _moto_server


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    """Runs a test once on the local-directory backend and once on S3 (moto)."""
    return request.param


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if backend == "s3":
        return s3_settings(request.getfixturevalue("moto_endpoint"))
    return local_settings(tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[ObjectStore]:
    """The raw backend the settings select, for looking at what the collector stored."""
    opened = open_store(settings)
    yield opened
    opened.close()


@pytest.fixture
def layout(settings: Settings) -> KeyLayout:
    return KeyLayout(settings.data_prefix)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """HTTP to the real app in-process (httpx over ASGI)."""
    with TestClient(app) as test_client:
        yield test_client


# Module scope, not session: Playwright's sync API keeps an event loop running in the main thread
# while it is open, and tests elsewhere that call asyncio.run() would fail after it.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium driven by Playwright (its own browser download is unreachable)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        yield launched
        launched.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that talks to the S3 server (moto), so the fast loop can leave them out.

    A test is on moto when any of its parameters is ``"s3"`` (``backend``, ``any_store``, ...)
    or when it asks for ``moto_endpoint``; the ``moto_endpoint`` fixture fails a test it reaches
    without the marker, so a new way of reaching moto cannot slip into the fast loop unseen.
    """
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_s3 = callspec is not None and "s3" in callspec.params.values()
        if on_s3 or "moto_endpoint" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.s3)


# Commands a fast test may run: quick system tools (the repository's file list, a small tmpfs),
# not a server or an interpreter under test.
_FAST_LOOP_COMMANDS = {"git", "mount", "umount"}
_OUT_OF_FAST_LOOP = ("slow", "browser", "processes")


@pytest.fixture(autouse=True)
def _apps_run_their_lifespan(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request through a TestClient that was not entered (``with TestClient(app) as client``)
    fails the test: without it the app's lifespan never runs, so the test would exercise an app
    that no server ever serves (no storage proof, no thread-pool sizing, nothing closed)."""
    original_request = TestClient.request

    def request(self: TestClient, *args: Any, **kwargs: Any) -> Any:
        if not hasattr(self, "exit_stack"):
            pytest.fail("use the TestClient as a context manager (with ... as client): the lifespan must run")
        return original_request(self, *args, **kwargs)

    monkeypatch.setattr(TestClient, "request", request)


@pytest.fixture(autouse=True)
def _fast_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without a ``slow``, ``browser`` or ``processes`` marker may not start a process.

    The fast loop deselects those markers; a process started from an unmarked test (a collector,
    a server, a browser) would make it slow and flaky, so the test fails and says which marker
    it lacks.
    """
    if any(request.node.get_closest_marker(name) for name in _OUT_OF_FAST_LOOP):
        return
    original_init = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
        program = args if isinstance(args, str) else args[0]
        if Path(str(program).split()[0]).name not in _FAST_LOOP_COMMANDS:
            pytest.fail(f"this test starts a process ({program!r}) but is not marked processes")
        original_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
