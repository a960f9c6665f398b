"""Admin sessions over HTTP: revocation on logout (one app and two sharing a bucket), a signing
secret independent of the password, password change, the Secure flag, and the stored secret."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from collector.admin.auth import COOKIE_NAME
from collector.app import create_app
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from collector.verify import verify_bucket
from tests.support.factories import make_status, put_status
from tests.test_admin_http import form_token

PASSWORD = "test-admin-password-1"


@pytest.fixture
def shared(settings: Settings) -> Settings:
    """Settings that re-check the shared session state on every request (no cache)."""
    return settings.model_copy(update={"admin_session_check_seconds": 0.0})


def client_for(settings: Settings) -> TestClient:
    return TestClient(create_app(settings), base_url="http://127.0.0.1")


@pytest.fixture
def two_instances(shared: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """Two collector apps on one bucket, as behind a load balancer (or two workers)."""
    with client_for(shared) as first, client_for(shared) as second:
        yield first, second


def logged_in_cookie(client: TestClient, password: str = PASSWORD) -> str:
    answer = client.post("/admin/login", data={"password": password}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return answer.cookies[COOKIE_NAME]


def opens(client: TestClient, cookie: str) -> bool:
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, cookie, path="/admin")
    status = client.get("/admin", follow_redirects=False).status_code
    assert status in (200, 303)
    return status == 200


def test_a_cookie_used_after_logout_is_refused(client: TestClient) -> None:
    cookie = logged_in_cookie(client)
    assert opens(client, cookie)
    logout = client.post("/admin/logout", data={"token": form_token(client)}, follow_redirects=False)
    assert logout.status_code == 303
    # A stolen copy of the cookie (or a browser that kept it) opens nothing any more.
    assert not opens(client, cookie)
    assert client.get("/admin/participants", follow_redirects=False).status_code == 303


def test_logout_on_one_instance_ends_the_session_on_the_other(
    two_instances: tuple[TestClient, TestClient],
) -> None:
    first, second = two_instances
    cookie = logged_in_cookie(first)
    assert opens(second, cookie)  # one shared secret: either instance accepts the session
    other = logged_in_cookie(second)
    assert opens(first, cookie)
    logout = first.post("/admin/logout", data={"token": form_token(first)}, follow_redirects=False)
    assert logout.status_code == 303
    assert not opens(second, cookie)
    assert not opens(first, cookie)
    assert opens(first, other) and opens(second, other)  # only that session ended


def test_a_password_change_ends_every_session(shared: Settings) -> None:
    with client_for(shared) as old:
        cookie = logged_in_cookie(old)
        assert opens(old, cookie)
    changed = shared.model_copy(update={"admin_password": "a-new-admin-password-2"})
    with client_for(changed) as new:
        assert not opens(new, cookie)
        assert opens(new, logged_in_cookie(new, "a-new-admin-password-2"))


def test_the_signing_secret_is_random_and_independent_of_the_password(
    settings: Settings, store: ObjectStore, layout: KeyLayout
) -> None:
    with client_for(settings) as client:
        cookie = logged_in_cookie(client)
    payload, _, signature = cookie.rpartition(".")
    # Knowing (or guessing) the password is not enough to check or forge a signature.
    for derived in (
        hmac.new(PASSWORD.encode(), b"collector admin session cookie v1", hashlib.sha256).digest(),
        hashlib.sha256(PASSWORD.encode()).digest(),
        PASSWORD.encode(),
    ):
        assert hmac.new(derived, payload.encode(), hashlib.sha256).hexdigest() != signature
    stored = json.loads(store.get(layout.admin_session_key).body)
    assert len(bytes.fromhex(stored["secret"])) == 32
    assert PASSWORD not in json.dumps(stored)
    # Another bucket, same password: another secret, so this cookie opens nothing there.
    elsewhere = settings.model_copy(update={"data_prefix": "another-study"})
    with client_for(elsewhere) as other:
        assert not opens(other, cookie)


def test_a_configured_secret_is_used_and_the_stored_one_created_once(
    settings: Settings, store: ObjectStore, layout: KeyLayout
) -> None:
    configured = settings.model_copy(update={"admin_session_secret": "s" * 40})
    with client_for(configured) as first:
        cookie = logged_in_cookie(first)
    body = store.get(layout.admin_session_key).body
    with client_for(configured) as second:
        assert opens(second, cookie)
    assert store.get(layout.admin_session_key).body == body  # created once, not replaced
    with client_for(settings) as without:  # the stored secret is not the configured one
        assert not opens(without, cookie)


def test_verify_does_not_report_the_session_object(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    put_status(store, layout, make_status("SYNTH1"))
    logged_in_cookie(client)
    assert store.get_or_none(layout.admin_session_key) is not None
    report = verify_bucket(store, layout)
    assert report.ok, report.defects


def test_a_damaged_session_object_is_replaced_not_a_500(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    store.put(layout.admin_session_key, b"not json")
    cookie = logged_in_cookie(client)
    assert opens(client, cookie)


@pytest.mark.parametrize(
    ("host", "mode", "base", "secure"),
    [
        pytest.param("127.0.0.1", "auto", "http://127.0.0.1", False, id="loopback-http"),
        pytest.param("0.0.0.0", "auto", "http://collector.example", True, id="public-http-behind-proxy"),
        pytest.param("127.0.0.1", "auto", "https://127.0.0.1", True, id="loopback-https"),
        pytest.param("127.0.0.1", "always", "http://127.0.0.1", True, id="always"),
        pytest.param("0.0.0.0", "never", "http://collector.example", False, id="never"),
    ],
)
def test_the_cookie_is_secure_unless_plain_http_on_loopback(
    settings: Settings, host: str, mode: str, base: str, secure: bool
) -> None:
    configured = settings.model_copy(update={"host": host, "admin_cookie_secure": mode})
    with TestClient(create_app(configured), base_url=base) as client:
        answer = client.post("/admin/login", data={"password": PASSWORD}, follow_redirects=False)
    assert answer.status_code == 303
    assert ("secure" in answer.headers["set-cookie"].lower()) is secure
