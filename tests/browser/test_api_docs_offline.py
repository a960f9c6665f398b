"""``/docs`` renders in Chromium with every request to another host refused (offline, firewalled)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.collector_process import CollectorProcess
from tests.support.settings import local_settings

pytestmark = [pytest.mark.browser, pytest.mark.processes]


def test_docs_render_with_no_other_host(browser, tmp_path: Path) -> None:
    elsewhere: list[str] = []

    def only_loopback(route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with CollectorProcess(local_settings(tmp_path / "data")) as collector:
        page = browser.new_page()
        page.route("**/*", only_loopback)
        page.goto(collector.url + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
        assert "Participant data collector" in page.inner_text(".swagger-ui .info .title")
        assert page.locator(".opblock").count() > 3  # the routes are listed
        page.close()
    assert elsewhere == []
