"""Fixtures for the uploader's end-to-end tests: real Chromium, real collector, another origin."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import open_store
from tests.support.collector_process import REPO, CollectorProcess
from tests.support.helper_servers import static_site
from tests.support.settings import local_settings

# Short retry schedule and timeouts so a test waits seconds, not minutes; no periodic uploads
# unless a test asks (they would add status uploads the test did not make).
FAST = {"retryBaseMs": 200, "retryMaxMs": 1000, "timeoutMs": 3000, "statusIntervalMs": 0}


@pytest.fixture(scope="session")
def example_site() -> Iterator[str]:
    """examples/ on its own loopback port: a different origin from every collector."""
    site = static_site(REPO / "examples")
    yield site.url
    site.stop()


class Stored:
    """What a collector stored, read straight from its backend."""

    def __init__(self, settings: Settings) -> None:
        self.store = open_store(settings)
        self.layout = KeyLayout(settings.data_prefix)

    def submissions(self, participant_id: str) -> list[dict[str, Any]]:
        prefix = self.layout.submissions_dir(participant_id)
        return [json.loads(self.store.get(info.key).body) for info in self.store.list(prefix)]

    def status(self, participant_id: str) -> dict[str, Any] | None:
        found = self.store.get_or_none(self.layout.status_key(participant_id))
        return json.loads(found.body) if found else None

    def wait_for(self, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        """Polls the backend until ``condition()`` holds (a wait, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("the collector never stored what was expected")
            time.sleep(0.1)


@pytest.fixture
def local_collector(tmp_path: Path) -> Iterator[tuple[CollectorProcess, Stored]]:
    settings = local_settings(tmp_path / "data", retry_after_seconds=1)
    process = CollectorProcess(settings, log_path=tmp_path / "collector.log")
    stored = Stored(settings)
    yield process, stored
    stored.store.close()
    process.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser profile (its own localStorage) per test."""
    ctx = browser.new_context()
    yield ctx
    ctx.close()


@pytest.fixture
def open_study(context: Any, example_site: str) -> Callable[..., Any]:
    """Opens examples/study.html in a new tab, wired to a collector, and waits until it is ready."""

    def opener(collector_url: str, page: Any = None, **options: object) -> Any:
        query = urlencode({"collector": collector_url, **FAST, **options})
        page = page or context.new_page()
        page.goto(f"{example_site}/study.html?{query}")
        page.wait_for_selector("body[data-ready=true]")
        return page

    return opener


def results(page: Any, count: int) -> list[dict[str, Any]]:
    """The first ``count`` answers the page's buttons got, once they are all in."""
    page.wait_for_function(f"window.studyDemo.results.length >= {count}")
    return page.evaluate("window.studyDemo.results")


def queue(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("window.studyDemo.uploader.getQueueState().items")


def wait_queue_empty(page: Any, timeout: float = 20.0) -> None:
    page.wait_for_function(
        "window.studyDemo.uploader.getQueueState().items.length === 0", timeout=timeout * 1000
    )
