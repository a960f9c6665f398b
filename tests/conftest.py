"""Shared fixtures: settings over a temp folder or a real S3 server (moto) on loopback, apps, clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from collector.app import create_app
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore, open_store
from tests.support.chromium import launch_chromium
from tests.support.settings import local_settings, s3_settings


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 protocol server (moto's standalone server) on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


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
    """Mark every test that talks to the S3 server (moto), so the fast loop can leave them out."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_s3 = callspec is not None and callspec.params.get("backend") == "s3"
        if on_s3 or "moto_endpoint" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.s3)
