"""The admin dashboard over HTTP (in-process): access control, login throttle, headers, downloads."""

from __future__ import annotations

import io
import zipfile

import pytest
from fastapi.testclient import TestClient

from collector.admin.auth import COOKIE_NAME, AdminAuth
from collector.keys import KeyLayout
from collector.storage import ObjectStore
from tests.support.factories import make_status, make_submission, put_status, put_submission

PASSWORD = "test-admin-password-1"  # what tests/conftest.py's settings use
SUBMISSION = "submissions/SYNTH1_Complete_2025-11-17_09-00-00.json"

PROTECTED = [
    pytest.param("GET", "/admin", id="overview"),
    pytest.param("GET", "/admin/participants", id="participants"),
    pytest.param("GET", "/admin/participants?q=SYNTH", id="search"),
    pytest.param("GET", "/admin/participants/SYNTH1", id="participant"),
    pytest.param("GET", f"/admin/participants/SYNTH1/view/{SUBMISSION}", id="view-submission"),
    pytest.param("GET", f"/admin/participants/SYNTH1/files/{SUBMISSION}", id="download-submission"),
    pytest.param("GET", "/admin/participants/SYNTH1/files/user-status/status.json", id="download-status"),
    pytest.param("GET", "/admin/participants/SYNTH1/download.zip", id="participant-zip"),
    pytest.param("GET", "/admin/export.zip", id="export-zip"),
    pytest.param("POST", "/admin/refresh", id="refresh"),
]


@pytest.fixture
def seeded(store: ObjectStore, layout: KeyLayout) -> None:
    # SYNTH1 and SYNTH10: a prefix trap for anything that lists "SYNTH1" without its slash.
    for pid in ("SYNTH1", "SYNTH10"):
        put_status(store, layout, make_status(pid, sessions=1, responses={"q": "synthetic"}))
        put_submission(store, layout, make_submission(pid))


def log_in(client: TestClient, password: str = PASSWORD) -> object:
    return client.post("/admin/login", data={"password": password}, follow_redirects=False)


def form_token(client: TestClient, page: str = "/admin") -> str:
    """The token a logged-in page's forms carry (every form that changes anything needs it)."""
    text = client.get(page).text
    return text.split('name="token" value="', 1)[1].split('"', 1)[0]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_admin_route_refuses_without_a_session(
    client: TestClient, seeded: None, method: str, path: str
) -> None:
    for cookie in (None, "forged.token.value", AdminAuth("another-password-9").issue()):
        client.cookies.clear()
        if cookie:
            client.cookies.set(COOKIE_NAME, cookie, path="/admin")
        answer = client.request(method, path, follow_redirects=False)
        if method == "GET":
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/admin/login?next=/admin")
        else:
            assert answer.status_code == 401
            assert answer.json()["status"] == "error"
        assert b"SYNTH1" not in answer.content
        assert "application/zip" not in answer.headers.get("content-type", "")


def test_expired_session_is_refused(client: TestClient, seeded: None) -> None:
    old = AdminAuth(PASSWORD).issue(now=0)
    client.cookies.set(COOKIE_NAME, old, path="/admin")
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_bad_password_is_refused_and_sets_no_cookie(client: TestClient) -> None:
    answer = log_in(client, "wrong-password")
    assert answer.status_code == 401
    assert "Wrong password" in answer.text
    assert COOKIE_NAME not in answer.headers.get("set-cookie", "")


def test_login_sets_a_safe_cookie_and_opens_the_dashboard(client: TestClient, seeded: None) -> None:
    answer = log_in(client)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/admin" in cookie
    page = client.get("/admin")
    assert page.status_code == 200
    assert 'id="participant-count">2<' in page.text and 'id="submission-count">2<' in page.text
    logout = client.post("/admin/logout", data={"token": form_token(client)}, follow_redirects=False)
    assert logout.status_code == 303
    client.cookies.clear()  # what a browser does with the expired cookie
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_failed_logins_are_rate_limited(client: TestClient) -> None:
    for _ in range(5):
        assert log_in(client, "guess").status_code == 401
    limited = log_in(client, "guess")
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    # Even the right password waits: the throttle is checked before the password.
    assert log_in(client).status_code == 429


def test_cross_site_login_post_is_refused(client: TestClient) -> None:
    answer = client.post(
        "/admin/login",
        data={"password": PASSWORD},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert answer.status_code == 403
    assert COOKIE_NAME not in answer.headers.get("set-cookie", "")


def test_open_redirect_after_login_is_refused(client: TestClient) -> None:
    answer = client.post(
        "/admin/login", data={"password": PASSWORD, "next": "//evil.example/admin"}, follow_redirects=False
    )
    assert answer.headers["location"] == "/admin"


def test_security_headers_on_admin_pages(client: TestClient) -> None:
    for path in ("/admin/login", "/admin"):
        headers = client.get(path, follow_redirects=False).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"


def test_participant_zip_holds_exactly_their_objects(
    client: TestClient, seeded: None, store: ObjectStore, layout: KeyLayout
) -> None:
    log_in(client)
    answer = client.get("/admin/participants/SYNTH1/download.zip")
    assert answer.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    expected = [info.key for info in store.list(layout.participant_dir("SYNTH1"))]
    assert sorted(archive.namelist()) == sorted(expected) and len(expected) == 2
    for key in expected:
        assert archive.read(key) == store.get(key).body


def test_files_outside_the_participant_are_unreachable(client: TestClient, seeded: None) -> None:
    # Encoded dots reach the route as "../": the client cannot normalise them away.
    log_in(client)
    assert client.get(f"/admin/participants/SYNTH1/files/{SUBMISSION}").status_code == 200
    for name in (
        "../SYNTH10/user-status/status.json",
        "submissions/SYNTH10_Complete_2025-11-17_09-00-00.json",
        "%2E%2E%2FSYNTH10%2Fuser-status%2Fstatus.json",
        "notes.txt",
    ):
        assert client.get(f"/admin/participants/SYNTH1/files/{name}").status_code == 404, name


def test_dashboard_export_zip_has_every_table(client: TestClient, seeded: None) -> None:
    log_in(client)
    answer = client.get("/admin/export.zip?format=csv")
    assert answer.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert sorted(archive.namelist()) == [
        "export/README.md",
        "export/load.R",  # the typed loaders, as beside a CSV export on disk
        "export/load.py",
        "export/participants.csv",
        "export/responses.csv",
        "export/sessions.csv",
        "export/submissions.csv",
        "export/trial_sessions.csv",
        "export/trials.csv",
    ]
    assert archive.read("export/participants.csv").decode().count("\n") == 3  # header + 2 rows
