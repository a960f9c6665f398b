"""The dashboard against data shapes anyone can upload: absurd dates, wide and huge documents,
corrupt objects. Over HTTP to the real app (both backends); what a person sees is checked in
Chromium in test_admin_browser.py."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collector.admin.bounded import MAX_COLUMNS, MAX_VIEW_CHARS, PAGE_ROWS
from collector.app import create_app
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.factories import encode, make_status, make_submission, put_status, put_submission
from tests.test_admin_http import form_token
from tests.test_trials import CountingStore

PASSWORD = "test-admin-password-1"


def log_in(client: TestClient) -> None:
    answer = client.post("/admin/login", data={"password": PASSWORD}, follow_redirects=False)
    assert answer.status_code == 303


def hostile_status(pid: str, when: str, **extra: Any) -> dict[str, Any]:
    """A status whose every date says ``when`` (the client's clock, or a made-up value)."""
    return {
        "participantId": pid,
        "timestamp": when,
        "serverReceivedAt": when,
        "uploadType": "status",
        "tutorialCompleted": True,
        "totalSessionsCompleted": 1,
        "sessionHistory": [{"sessionId": "s0", "startTime": when, "endTime": when, "completed": True}],
        **extra,
    }


def last_upload(page: str) -> str:
    match = re.search(r'id="last-upload">([^<]*)<', page)
    assert match, page[:500]
    return match.group(1)


@pytest.mark.parametrize("year", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2099-06-01T00:00:00Z"])
def test_overview_renders_and_ignores_an_absurd_date(
    client: TestClient, store: ObjectStore, layout: KeyLayout, year: str
) -> None:
    put_status(store, layout, make_status("SYNTH1", sessions=1))
    put_submission(store, layout, make_submission("SYNTH1"))
    # Written straight into the bucket, as a hostile or broken client's document would be stored:
    # the submission's key carries the absurd date too.
    moment = datetime.fromisoformat(year.replace("Z", "+00:00"))
    put_status(store, layout, hostile_status("SYNTH9", year))
    store.put(layout.submission_key("SYNTH9", moment), encode(hostile_status("SYNTH9", year)))
    log_in(client)
    page = client.get("/admin")
    assert page.status_code == 200
    this_year = str(datetime.now(UTC).year)
    # Last upload is when the server stored something: now, not the client's year.
    assert last_upload(page.text).startswith(this_year)
    # Neither chart moves to the absurd year (SYNTH1's sessions are in 2025).
    labels = re.findall(r"<title>(\d{4})-\d\d-\d\d: \d+</title>", page.text)
    assert labels and year[:4] not in labels
    # The absurd session dates are counted, not charted.
    assert 'id="left-out"' in page.text
    paths = ("/admin/participants", "/admin/participants?sort=last&order=desc", "/admin/participants/SYNTH9")
    for path in paths:
        assert client.get(path).status_code == 200, path


def test_an_upload_dated_2099_through_the_api_leaves_last_upload_at_now(client: TestClient) -> None:
    upload = {
        "participantId": "SYNTH2099",
        "uploadType": "submission",
        "timestamp": "2099-01-01T00:00:00.000Z",
        "submissionData": {"synthetic": True},
    }
    assert client.post("/api/upload-user-data", json=upload).status_code == 200
    log_in(client)
    page = client.get("/admin").text
    assert last_upload(page).startswith(str(datetime.now(UTC).year))
    assert "2099-" not in page and "2098-" not in page


def test_a_wide_session_history_gives_a_bounded_page(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    # 300 records, each with 300 keys of its own: 90,000 distinct columns on today's page.
    history = [{f"k{r}_{c}": c for c in range(300)} | {"sessionId": f"s{r}"} for r in range(300)]
    status = make_status("SYNTH1", sessionHistory=history)
    put_status(store, layout, status)
    assert len(encode(status)) < 4 * 1024 * 1024
    log_in(client)
    page = client.get("/admin/participants/SYNTH1")
    assert page.status_code == 200
    assert len(page.content) < 400_000
    header = page.text.split('<table id="sessions">', 1)[1].split("</thead>", 1)[0]
    assert header.count("<th>") == MAX_COLUMNS + 1  # "#" and the capped columns
    assert "other fields (JSON)" in header
    body = page.text.split('<table id="sessions">', 1)[1].split("</table>", 1)[0]
    assert body.count("<tr>") == PAGE_ROWS + 1
    assert 'href="?sessions_page=2"' in page.text
    last = client.get("/admin/participants/SYNTH1?sessions_page=6")
    assert last.status_code == 200 and ">299</td>" in last.text


def test_unreadable_and_huge_objects_are_marked(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    put_status(store, layout, make_status("SYNTH1"))
    good = put_submission(store, layout, make_submission("SYNTH1"))
    corrupt = layout.submission_key("SYNTH1", datetime(2025, 11, 18, tzinfo=UTC))
    store.put(corrupt, b'{"participantId": "SYNTH1", "cut off')
    huge = make_submission("SYNTH1", when=datetime(2025, 11, 19, tzinfo=UTC), data={"x": "y" * 1_000_000})
    big = put_submission(store, layout, huge)
    log_in(client)
    page = client.get("/admin/participants/SYNTH1").text
    rows = page.split('<table id="submissions">', 1)[1].split("</table>", 1)[0].split("<tr")[2:]
    marked = {row.split("<code>", 1)[1].split("</code>", 1)[0]: "unreadable" in row for row in rows}
    names = [key.rsplit("/", 1)[1] for key in (good, corrupt, big)]
    assert marked == dict(zip(names, (False, True, False), strict=True))
    view = client.get(f"/admin/participants/SYNTH1/view/submissions/{big.rsplit('/', 1)[1]}")
    assert view.status_code == 200
    assert len(view.content) < MAX_VIEW_CHARS * 2 and 'id="truncated"' in view.text
    assert f"/files/submissions/{big.rsplit('/', 1)[1]}" in view.text
    whole = client.get(f"/admin/participants/SYNTH1/files/submissions/{big.rsplit('/', 1)[1]}")
    assert len(whole.content) > 1_000_000


HOSTILE_BODIES = [
    pytest.param(b"\xff\xfe not utf-8", id="not-utf8"),
    pytest.param(b"[1, 2, 3]", id="array"),
    pytest.param(b"", id="empty"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-array"),
    pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="deep-object"),
    pytest.param(b'{"sessionHistory": "not a list", "timestamp": 12}', id="history-text"),
    pytest.param(b'{"sessionHistory": [1, null, [], {"endTime": 1e308}], "totalSessionTime": NaN}', id="nan"),
    pytest.param(
        b'{"sessionHistory": [{"endTime": "9999-12-31T23:59:59-01:00"}, {"startTime": -62135596800001}]}',
        id="dates-off-the-calendar",
    ),
    pytest.param(
        b'{"sessionHistory": [{"endTime": 253402300800000, "completed": "true"}]}', id="ms-after-9999"
    ),
    pytest.param(json.dumps({"x" * 5000: "=1", "erased": True}).encode(), id="long-key"),
    pytest.param(json.dumps({"sessionHistory": [{"\u202e\x1b[31m": "\u2028"}]}).encode(), id="control-chars"),
    pytest.param(
        json.dumps({"sessionHistory": [{"a": [[[[[[1]]]]]]}] * 5}).encode(),
        id="nested-cells",
    ),
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
def test_the_dashboard_never_answers_500_for_stored_data(
    client: TestClient, store: ObjectStore, layout: KeyLayout, body: bytes
) -> None:
    put_status(store, layout, make_status("SYNTH1", sessions=2))
    store.put(layout.status_key("SYNTH6"), body)
    store.put(layout.submission_key("SYNTH6", datetime(2025, 11, 18, tzinfo=UTC)), body)
    log_in(client)
    client.post("/admin/refresh", data={"token": form_token(client)})
    sub = "submissions/SYNTH6_Complete_2025-11-18_00-00-00.json"
    for path in (
        "/admin",
        "/admin/participants",
        "/admin/participants?sort=hours&order=desc",
        "/admin/participants?sort=last",
        "/admin/participants/SYNTH6",
        "/admin/participants/SYNTH6/view/user-status/status.json",
        f"/admin/participants/SYNTH6/view/{sub}",
        f"/admin/participants/SYNTH6/files/{sub}",
        "/admin/participants/SYNTH6/download.zip",
        "/admin/export.zip?format=csv",
        "/admin/export.zip?format=jsonl",
    ):
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text[:300])


def test_control_characters_from_the_url_are_escaped_in_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    log_in(client)
    with caplog.at_level(logging.INFO):
        client.get("/admin/participants/%1B[2J%1B[31mFAKE%0Aline%E2%80%A8x%0B%00")
        hostile = {"participantId": "\x1b[31m\n\u2028", "uploadType": "status"}
        client.post("/api/upload-user-data", json=hostile)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("collector"))
    assert "Refused" in logged
    for raw in ("\x1b", "\x0b", "\x00", "\u2028", "FAKE\nline"):
        assert raw not in logged
    assert "\\x1b" in logged


def test_overview_charts_ignore_browser_clocks_unit() -> None:
    """The series code itself at the calendar's edges (no OverflowError)."""
    from collections import Counter
    from datetime import date, timedelta

    from collector.admin.overview import _monday, _series

    for edge in (date.min, date.max):
        assert _series(Counter({edge: 1}), timedelta(weeks=1), 26)[-1] == (edge.isoformat(), 1)
        _monday(edge)
    assert len(_series(Counter({date.min: 1, date.max: 1}), timedelta(days=1), 90)) == 90


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_objects_past_the_parse_limit_are_offered_for_download_only(
    client: TestClient, store: ObjectStore, layout: KeyLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collector.admin import participant_routes
    from collector.reading import submissions

    monkeypatch.setattr(participant_routes, "MAX_PARSE_BYTES", 10_000)  # instead of writing 16 MiB
    monkeypatch.setattr(submissions, "MAX_READ_BYTES", 10_000)
    put_status(store, layout, make_status("SYNTH1", note="n" * 20_000))
    key = put_submission(store, layout, make_submission("SYNTH1", data={"x": "y" * 20_000}))
    log_in(client)
    page = client.get("/admin/participants/SYNTH1")
    assert page.status_code == 200 and "too large to show here" in page.text
    assert "too large to check" in page.text
    view = client.get(f"/admin/participants/SYNTH1/view/submissions/{key.rsplit('/', 1)[1]}")
    assert view.status_code == 200 and "too large to show here" in view.text and "y" * 100 not in view.text
    assert 'id="truncated"' in view.text


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_trial_sessions_are_paged_and_each_submission_is_read_once(
    settings: Settings, store: ObjectStore, layout: KeyLayout
) -> None:
    pid = "SYNTHTRIALS"
    put_status(store, layout, make_status(pid, sessions=1))
    for number in range(PAGE_ROWS + 1):  # one session more than a page
        trial = {"participantId": pid, "sessionId": f"s{number:03d}", "trialIndex": 0, "trialData": {}}
        store.put(layout.trial_key(pid, f"s{number:03d}", 0), encode(trial))
    put_submission(store, layout, make_submission(pid, sessionId="s000", keyVerified=False))
    counting = CountingStore(store)
    with TestClient(create_app(settings, store=counting)) as client:
        log_in(client)
        counting.requests.clear()
        first = client.get(f"/admin/participants/{pid}")
        assert first.status_code == 200
        submission_reads = [key for op, key in counting.requests if op == "get" and "/submissions/" in key]
        assert len(submission_reads) == 1  # the table's read also tells which sessions it completes
        section = first.text[first.text.index('id="trial-sessions"') :]
        assert section.count("<tr class=") == PAGE_ROWS and "?trials_page=2" in section
        # Stored without the key: it never completes the session it names, it is counted beside it.
        assert '<tr class="partial">\n    <td><code>s000</code>' in section
        assert "1 unverified</span>" in section.split("</tr>")[1]
        assert "badge unverified" in first.text
        second = client.get(f"/admin/participants/{pid}?trials_page=2").text
        rows = second[second.index('id="trial-sessions"') :]
        assert rows.count("<tr class=") == 1 and f"s{PAGE_ROWS:03d}" in rows


def test_a_forged_non_ascii_form_token_is_refused_not_a_crash(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    put_status(store, layout, make_status("SYNTH1", sessions=1))
    log_in(client)
    answer = client.post(
        "/admin/participants/SYNTH1/release-key",
        data={"reason": "x", "token": "é" * 64},
        follow_redirects=False,
    )
    assert answer.status_code == 403
