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
from tests.support.chromium import dashboard_page
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


@pytest.fixture
def hostile_dashboard(
    settings: Settings, store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> Iterator[str]:
    """What anyone can upload: a clock in 2099 with sessions in year 9999, a 300 x 300 wide
    sessionHistory, a corrupt submission; behind a real collector."""
    put_status(store, layout, make_status("SYNTH1", sessions=2))
    put_submission(store, layout, make_submission("SYNTH1"))
    far = "9999-12-31T23:59:59Z"
    history = [{"sessionId": "s0", "startTime": far, "endTime": far, "completed": True}]
    put_status(
        store,
        layout,
        make_status("SYNTH2099", when=datetime(2099, 1, 1, tzinfo=UTC), sessionHistory=history),
    )
    put_submission(store, layout, make_submission("SYNTH2099", when=datetime(2099, 1, 1, tzinfo=UTC)))
    wide = [{f"k{r}_{c}": c for c in range(300)} | {"sessionId": f"s{r}"} for r in range(300)]
    put_status(store, layout, make_status("SYNTHWIDE", sessionHistory=wide))
    store.put(layout.submission_key("SYNTHWIDE", datetime(2025, 11, 18, tzinfo=UTC)), b'{"cut off')
    with CollectorProcess(settings, log_path=tmp_path / "collector.log") as collector:
        yield collector.url
    assert "Traceback" not in (tmp_path / "collector.log").read_text()


def test_dashboard_stays_readable_whatever_participants_upload(browser, hostile_dashboard: str) -> None:
    with dashboard_page(browser, f"{hostile_dashboard}/admin", PASSWORD) as page:
        # The overview is up, "Last upload" is when the server received it (now), and the
        # session dated 9999 is counted, not charted.
        this_year = str(datetime.now(UTC).year)
        assert page.locator("#last-upload").inner_text().startswith(this_year)
        assert "left out" in page.locator("#left-out").inner_text()
        labels = " ".join(page.locator("figure.chart svg").all_text_contents())
        assert "2099" not in labels and "9999" not in labels

        page.goto(f"{hostile_dashboard}/admin/participants/SYNTHWIDE")
        headers = page.locator("#sessions thead th")
        assert headers.count() <= 13
        assert headers.last.inner_text() == "other fields (JSON)"
        assert page.locator("#sessions tbody tr").count() == 50
        page.click("nav[aria-label=sessions_page] >> text=Next →")
        page.wait_for_url("**sessions_page=2")
        assert page.locator("#sessions tbody tr").first.locator("td").first.inner_text() == "50"
        marked = page.locator("#submissions .unreadable-mark")
        assert marked.count() == 1 and marked.first.is_visible()
        assert "unreadable" in marked.first.inner_text()

        page.click("header button[type=submit]")  # log out
        page.wait_for_url("**/admin/login")
        page.goto(f"{hostile_dashboard}/admin")
        assert "/admin/login" in page.url
