"""The dashboard's erasure in headless Chromium against a real collector process, both backends."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.chromium import dashboard_page
from tests.support.collector_process import CollectorProcess
from tests.support.factories import make_status, make_submission, put_status, put_submission
from tests.support.settings import TEST_ADMIN_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.processes]


@pytest.fixture
def live(settings: Settings, store: ObjectStore, layout: KeyLayout, tmp_path: Path) -> Iterator[str]:
    for pid in ("SYNTHERASE", "SYNTHKEEP"):
        put_status(store, layout, make_status(pid, sessions=1))
        put_submission(store, layout, make_submission(pid))
    with CollectorProcess(settings, log_path=tmp_path / "collector.log") as collector:
        yield collector.url


def post(url: str, cookie: str, origin: str, body: bytes) -> int:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Cookie": cookie, "Origin": origin, "Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_erase_from_the_participant_page(browser, live: str, store: ObjectStore, layout: KeyLayout) -> None:
    with dashboard_page(browser, f"{live}/admin/participants/SYNTHERASE", TEST_ADMIN_PASSWORD) as page:
        # A forged POST with this session but from another origin is refused over real HTTP.
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
        target = f"{live}/admin/participants/SYNTHERASE/erase"
        assert post(target, cookie, "http://evil.example", b"reason=x&confirm=SYNTHERASE") == 403
        assert len(list(store.list(layout.participant_dir("SYNTHERASE")))) == 2

        page.click("#erase-link")
        page.wait_for_url("**/admin/participants/SYNTHERASE/erase")
        assert page.locator("#erase-object-count").inner_text() == "2"
        page.fill("textarea[name=reason]", "withdrew by email")
        page.fill("input[name=confirm]", "SYNTHERAS")  # mistyped: refused, nothing erased
        page.click("#erase-form button[type=submit]")
        assert "Type the participant ID" in page.locator("#erase-error").inner_text()
        assert len(list(store.list(layout.participant_dir("SYNTHERASE")))) == 2

        page.fill("input[name=confirm]", "SYNTHERASE")
        page.click("#erase-form button[type=submit]")
        assert (
            "Erased participant SYNTHERASE: 2 object(s) deleted" in page.locator("#erase-done").inner_text()
        )
        audit_key = page.locator(".audit-key").inner_text()
        record = json.loads(store.get(audit_key).body)
        assert record["who"] == "dashboard" and record["reason"] == "withdrew by email"
        assert [i.key for i in store.list(layout.participant_dir("SYNTHERASE"))] == [
            layout.status_key("SYNTHERASE")
        ]
        assert len(list(store.list(layout.participant_dir("SYNTHKEEP")))) == 2

        page.goto(f"{live}/admin")
        assert page.locator("#erased-count").inner_text() == "1"
        assert page.locator("#participant-count").inner_text() == "1"
