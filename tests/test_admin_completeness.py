"""The dashboard's Completeness page, and its export menu offering only what the server can produce."""

from __future__ import annotations

import importlib.util
import io
import re
import zipfile

import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.analysis_bucket import seed_analysis_bucket
from tests.test_admin_http import log_in


def test_completeness_page_lists_who_did_not_finish_and_the_gaps(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    seed_analysis_bucket(store, layout)
    assert client.get("/admin/completeness", follow_redirects=False).status_code == 303  # login first
    log_in(client)
    page = client.get("/admin/completeness")
    assert page.status_code == 200
    html = page.text
    assert re.search(r'id="started-count">3<', html) and re.search(r'id="finished-count">1<', html)
    assert re.search(r'id="withdrawn-count">1<', html) and re.search(r'id="missing-count">1<', html)
    not_finished = html[html.index('id="not-finished"') : html.index('id="incomplete-sessions"')]
    assert "/admin/participants/SYNTH02" in not_finished and "/admin/participants/SYNTH03" in not_finished
    assert "SYNTH-01_x" not in not_finished
    sessions = html[html.index('id="incomplete-sessions"') :]
    assert '<td>b2</td><td>partial</td><td class="num">3</td><td class="num">5</td><td>2,4</td>' in sessions
    assert "run_A" not in sessions and "SYNTH04" not in html


@pytest.mark.parametrize("backend", ["local"])
@pytest.mark.parametrize("pyarrow", [True, False], ids=["with-pyarrow", "without-pyarrow"])
def test_the_export_menu_offers_only_what_the_server_can_produce(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, pyarrow: bool
) -> None:
    if not pyarrow:
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a)
        )
    with TestClient(create_app(settings)) as client:
        log_in(client)
        links = re.findall(r'<a href="(/admin/export\.zip\?format=\w+)"([^>]*)>', client.get("/admin").text)
        assert [href for href, _ in links] == [
            "/admin/export.zip?format=csv",
            "/admin/export.zip?format=jsonl",
            *(["/admin/export.zip?format=parquet"] if pyarrow else []),
        ]
        # No download attribute: should a download fail, the browser shows the error instead of nothing.
        assert all("download" not in attributes for _, attributes in links)
        for href, _ in links:
            answer = client.get(href)
            assert answer.status_code == 200, href
            assert "export/README.md" in zipfile.ZipFile(io.BytesIO(answer.content)).namelist()
