"""The admin dashboard against a hostile client over a real socket: password guessing from one
address and from many (never locking the right password out), forged and absurd session
cookies, an oversized login form. (Access control route by route is tested in-process in
test_admin_http.py.)"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from collector.admin.auth import COOKIE_NAME, AdminAuth
from tests.support.collector_process import CollectorProcess
from tests.support.settings import local_settings

pytestmark = pytest.mark.processes

PASSWORD = "test-admin-password-1"
MARKER = "SECRET-ANSWER-7f3a"


def start_collector(data: Path) -> CollectorProcess:
    process = CollectorProcess(local_settings(data / "data"), log_path=data / "collector.log")
    upload = {"participantId": "ADM1", "uploadType": "submission", "submissionData": {"answer": MARKER}}
    assert httpx.post(process.url + "/api/upload-user-data", json=upload).status_code == 200
    return process


def stop_collector(process: CollectorProcess, data: Path) -> None:
    process.stop()
    log = (data / "collector.log").read_text()
    assert "Traceback" not in log
    assert PASSWORD not in log


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    """A fresh collector: the login throttle starts empty."""
    process = start_collector(tmp_path)
    yield process
    stop_collector(process, tmp_path)


@pytest.fixture(scope="module")
def shared_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """One collector for the cases that leave no state behind."""
    data = tmp_path_factory.mktemp("admin-hostile")
    process = start_collector(data)
    yield process
    stop_collector(process, data)


def test_guessing_the_password_from_one_address_is_throttled(collector: CollectorProcess) -> None:
    with httpx.Client(base_url=collector.url, follow_redirects=False) as http:
        statuses = [http.post("/admin/login", data={"password": f"guess-{n}"}).status_code for n in range(8)]
        assert statuses[:5] == [401] * 5
        assert set(statuses[5:]) == {429}
        locked = http.post("/admin/login", data={"password": PASSWORD})
        assert locked.status_code == 429  # even the right password: a lockout is no oracle
        assert int(locked.headers["Retry-After"]) >= 1
        assert COOKIE_NAME not in locked.cookies
        assert MARKER not in http.get("/admin/participants/ADM1/download.zip").text


def test_guessing_from_many_addresses_never_locks_the_right_password_out(collector: CollectorProcess) -> None:
    # uvicorn takes the client address from X-Forwarded-For when the peer is a trusted proxy
    # (127.0.0.1 by default), so this is what a reverse proxy forwarding a botnet looks like:
    # 20 addresses x 5 wrong guesses. Each guessing address is slowed; nobody else is.
    with httpx.Client(base_url=collector.url, follow_redirects=False) as http:
        statuses = [
            http.post(
                "/admin/login",
                data={"password": f"guess-{n}"},
                headers={"X-Forwarded-For": f"203.0.113.{n // 5}"},
            ).status_code
            for n in range(100)
        ]
        again = http.post(
            "/admin/login", data={"password": "guess"}, headers={"X-Forwarded-For": "203.0.113.7"}
        )
        fresh = http.post(
            "/admin/login", data={"password": PASSWORD}, headers={"X-Forwarded-For": "198.51.100.1"}
        )
    assert statuses == [401] * 100
    assert again.status_code == 429 and int(again.headers["Retry-After"]) >= 1
    assert fresh.status_code == 303  # the research team gets in
    assert COOKIE_NAME in fresh.cookies


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param("", id="empty"),
        pytest.param("9999999999.nonce.", id="no-signature"),
        pytest.param("9999999999.nonce." + "0" * 64, id="zero-signature"),
        pytest.param(AdminAuth("another-password-9").issue(), id="other-password"),
        pytest.param(AdminAuth(PASSWORD).issue(), id="right-password-other-secret"),
        pytest.param("v2.0.9999999999.nonce." + "0" * 64, id="v2-zero-signature"),
        pytest.param("a.b.c.d.e.f", id="many-dots"),
        pytest.param("9" * 4000 + ".n.s", id="huge-expiry"),
        pytest.param("\u00e9t\u00e9.n.s", id="non-ascii"),
    ],
)
def test_forged_session_cookies_open_nothing(shared_collector: CollectorProcess, cookie: str) -> None:
    raw = cookie.encode("utf-8")
    with socket.create_connection(("127.0.0.1", shared_collector.port), timeout=10) as sock:
        sock.sendall(
            b"GET /admin/participants/ADM1/download.zip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Cookie: " + COOKIE_NAME.encode() + b"=" + raw + b"\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (303, 401), answer[:200]
    assert MARKER.encode() not in answer


def test_an_oversized_login_form_is_refused_unread(shared_collector: CollectorProcess) -> None:
    with socket.create_connection(("127.0.0.1", shared_collector.port), timeout=10) as sock:
        sock.sendall(
            b"POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1000000000\r\n\r\npassword="
        )
        answer = b""
        while chunk := sock.recv(65536):  # the server closes after answering
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'{"status":"error","error":' in answer
    assert b"connection: close" in answer.lower()
