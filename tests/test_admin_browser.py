"""The admin dashboard in headless Chromium against a real ``collector serve`` process, both backends."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.collector_process import CollectorProcess
from tests.support.factories import make_status, make_submission, put_status, put_submission

pytestmark = [pytest.mark.browser, pytest.mark.processes]

PASSWORD = "test-admin-password-1"


@pytest.fixture
def live_dashboard(
    settings: Settings, store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> Iterator[str]:
    """Three synthetic participants (1, 2 and 1 submissions) behind a real collector."""
    put_status(store, layout, make_status("SYNTH1", sessions=2))
    put_submission(store, layout, make_submission("SYNTH1"))
    put_status(store, layout, make_status("SYNTH2", tutorial_completed=False, sessions=1))
    for day in (18, 19):
        put_submission(store, layout, make_submission("SYNTH2", when=datetime(2025, 11, day, 10, tzinfo=UTC)))
    put_status(store, layout, make_status("SYNTH3", welcome=False, tutorial=False, tutorial_completed=False))
    put_submission(store, layout, make_submission("SYNTH3"))
    collector = CollectorProcess(settings, log_path=tmp_path / "collector.log")
    try:
        yield collector.url
    finally:
        collector.stop()


def test_dashboard_end_to_end(
    browser, live_dashboard: str, store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> None:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        # Refused without login: the participant's page sends the browser to the login form.
        page.goto(f"{live_dashboard}/admin/participants/SYNTH2")
        assert "/admin/login" in page.url
        assert "SYNTH2_Complete" not in page.content()

        page.fill("input[name=password]", "not-the-password")
        page.click("button[type=submit]")
        assert page.locator("p.error").inner_text() == "Wrong password."

        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/admin/participants/SYNTH2")

        page.goto(f"{live_dashboard}/admin")
        assert page.locator("#participant-count").inner_text() == "3"
        assert page.locator("#submission-count").inner_text() == "4"
        funnel = page.locator("#funnel tr td.num:first-of-type").all_inner_texts()
        assert funnel == ["3", "2", "2", "1", "2"]  # setup, welcome, tutorial, completed, ≥1 session

        page.goto(f"{live_dashboard}/admin/participants")
        page.fill("input[name=q]", "SYNTH2")
        page.press("input[name=q]", "Enter")
        page.wait_for_url("**q=SYNTH2**")
        assert page.locator("#participants tbody tr").count() == 1
        assert page.locator("#match-count").inner_text() == "1"

        page.click("text=SYNTH2")
        page.wait_for_url("**/admin/participants/SYNTH2")
        rows = page.locator("#submissions tbody tr")
        assert rows.count() == 2
        assert "SYNTH2_Complete_2025-11-18_10-00-00.json" in rows.nth(0).inner_text()

        rows.nth(0).locator("text=view").click()
        assert '"participantId": "SYNTH2"' in page.locator("#document").inner_text()
        page.go_back()

        with page.expect_download() as download:
            page.click("#download-all")
        saved = tmp_path / "SYNTH2.zip"
        download.value.save_as(saved)
        expected = sorted(info.key for info in store.list(layout.participant_dir("SYNTH2")))
        with zipfile.ZipFile(saved) as archive:
            assert sorted(archive.namelist()) == expected
            assert len(expected) == 3
            for key in expected:
                assert archive.read(key) == store.get(key).body
        assert csp_errors == []
    finally:
        context.close()
