"""The generated dashboard password: kept hashed in the storage, shared, printed once, replaceable;
``ADMIN_PASSWORD`` still wins. Runs on the local folder and on S3 (moto)."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from collector.admin.auth import COOKIE_NAME
from collector.admin.password import PasswordHash, StoredPassword
from collector.app import create_app
from collector.cli import main, print_generated_admin_password
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from collector.verify import verify_bucket
from tests.support.collector_process import settings_environment

PRINTED = re.compile(r"Admin dashboard password(?: \(generated\))?: (\S+)")


@pytest.fixture
def unset(settings: Settings) -> Settings:
    """No ADMIN_PASSWORD, and every request re-reads the stored password (no cache)."""
    return settings.model_copy(update={"admin_password": None, "admin_session_check_seconds": 0.0})


def cli(settings: Settings, *args: str, given: str | None = None) -> tuple[int, str]:
    env = {**settings_environment(settings), "ADMIN_PASSWORD": None}
    if settings.admin_password:
        env["ADMIN_PASSWORD"] = settings.admin_password
    result = CliRunner().invoke(main, list(args), env=env, input=given)
    return result.exit_code, result.output


def first_start(settings: Settings, capsys: pytest.CaptureFixture[str]) -> str | None:
    """The password ``collector serve`` prints before it starts serving, if it prints one."""
    capsys.readouterr()
    print_generated_admin_password(settings)
    printed = capsys.readouterr()
    found = PRINTED.search(printed.err + printed.out)
    return found.group(1) if found else None


def logs_in(client: TestClient, password: str) -> str | None:
    answer = client.post("/admin/login", data={"password": password}, follow_redirects=False)
    assert answer.status_code in (303, 401), answer.text
    return answer.cookies.get(COOKIE_NAME) if answer.status_code == 303 else None


def opens(client: TestClient, cookie: str) -> bool:
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, cookie, path="/admin")
    return client.get("/admin", follow_redirects=False).status_code == 200


def test_generated_once_kept_hashed_and_shared_by_every_process(
    unset: Settings, store: ObjectStore, layout: KeyLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    password = first_start(unset, capsys)
    assert password is not None and len(password) >= 20
    assert first_start(unset, capsys) is None  # a restart (or another instance) prints nothing
    body = store.get(layout.admin_password_key).body
    assert password.encode() not in body
    assert json.loads(body)["scheme"] == "scrypt"
    with (
        TestClient(create_app(unset), base_url="http://127.0.0.1") as first,
        TestClient(create_app(unset), base_url="http://127.0.0.1") as second,  # another worker
    ):
        assert logs_in(first, "not-the-password-123") is None
        cookie = logs_in(second, password)
        assert cookie is not None and opens(first, cookie)
    report = verify_bucket(store, layout)
    assert report.ok, report.defects


def test_admin_password_command_replaces_it_and_ends_sessions(
    unset: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    old = first_start(unset, capsys)
    assert old is not None
    with TestClient(create_app(unset), base_url="http://127.0.0.1") as client:
        cookie = logs_in(client, old)
        assert cookie is not None and opens(client, cookie)
        code, output = cli(unset, "admin-password", "--generate")
        assert code == 0, output
        found = PRINTED.search(output)
        assert found is not None
        new = found.group(1)
        assert new != old
        assert not opens(client, cookie)  # the running app sees the new one: the session ended
        assert logs_in(client, old) is None
        assert logs_in(client, new) is not None


def test_admin_password_command_asks_twice_and_refuses_a_weak_one(
    unset: Settings, store: ObjectStore
) -> None:
    code, output = cli(unset, "admin-password", given="short\nshort\n")
    assert code != 0 and "at least 10 characters" in output
    code, output = cli(unset, "admin-password", given="changeme\nchangeme\n")
    assert code != 0
    chosen = "a-long-enough-dashboard-secret"
    code, output = cli(unset, "admin-password", given=f"{chosen}\n{chosen}\n")
    assert code == 0, output
    assert chosen not in output
    with TestClient(create_app(unset), base_url="http://127.0.0.1") as client:
        assert logs_in(client, chosen) is not None


def test_admin_password_in_the_environment_still_wins(
    unset: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = first_start(unset, capsys)
    assert stored is not None
    configured = unset.model_copy(update={"admin_password": "configured-password-42"})
    with TestClient(create_app(configured), base_url="http://127.0.0.1") as client:
        assert logs_in(client, stored) is None
        assert logs_in(client, "configured-password-42") is not None


def test_without_a_stored_password_the_first_login_attempt_creates_and_logs_it(
    unset: Settings, store: ObjectStore, layout: KeyLayout, caplog: pytest.LogCaptureFixture
) -> None:
    """A start that could not reach the storage left no password: the first attempt makes one."""
    with TestClient(create_app(unset), base_url="http://127.0.0.1") as client:
        assert logs_in(client, "a-guess-at-the-password") is None
        found = PRINTED.search(caplog.text)
        assert found is not None and store.get_or_none(layout.admin_password_key) is not None
        assert logs_in(client, found.group(1)) is not None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        json.dumps({"scheme": "plain", "password": "x"}).encode(),
        # A tampered cost would make each login take gigabytes and minutes: refused.
        json.dumps({"scheme": "scrypt", "n": 2**30, "r": 8, "p": 1, "salt": "00", "hash": "00"}).encode(),
    ],
)
def test_a_damaged_password_object_lets_nobody_in(
    unset: Settings, store: ObjectStore, layout: KeyLayout, body: bytes
) -> None:
    store.put(layout.admin_password_key, body)
    assert StoredPassword(store, layout.admin_password_key, check_seconds=0).current() is None
    with TestClient(create_app(unset), base_url="http://127.0.0.1") as client:
        assert logs_in(client, "x") is None
        assert logs_in(client, "anything-at-all-12") is None
    assert store.get(layout.admin_password_key).body == body  # left for the team to replace


def test_the_hash_checks_the_password() -> None:
    stored = PasswordHash.decode(PasswordHash.of("right-password-1").encode())
    assert stored.matches("right-password-1")
    assert not stored.matches("right-password-2")
    assert not stored.matches("")
