"""A misconfiguration stops the collector at start, with a message naming what is wrong and no traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from pydantic import ValidationError

from collector.app import create_app
from collector.cli import main
from collector.settings import Settings
from collector.web.cors import MAX_LOGGED_ORIGINS
from tests.support.settings import local_settings

SECRET = "secret-value-never-printed-7q"


def start(env: dict[str, str]) -> tuple[int, str]:
    """``collector serve`` in-process with exactly ``env`` as the bucket/origin environment."""
    cleared = {name: None for name in ("R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY")}
    cleared |= {"S3_ENDPOINT_URL": None, "STORAGE": None, "ALLOWED_ORIGINS": None}
    result = CliRunner().invoke(main, ["serve"], env={**cleared, **env})
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # The case: the account forgotten, so no endpoint.
        (
            {"R2_ACCESS_KEY_ID": "AKID", "R2_SECRET_ACCESS_KEY": SECRET, "R2_BUCKET_NAME": "b"},
            "R2_ACCOUNT_ID (or S3_ENDPOINT_URL) missing",
        ),
        ({"R2_ACCOUNT_ID": "acc", "R2_ACCESS_KEY_ID": "AKID"}, "R2_SECRET_ACCESS_KEY missing"),
        ({"S3_ENDPOINT_URL": "http://127.0.0.1:9"}, "R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY missing"),
        ({"R2_SECRET_ACCESS_KEY": SECRET}, "R2_ACCESS_KEY_ID missing"),
        ({"STORAGE": "s3"}, "STORAGE=s3 but the bucket is not configured"),
        ({"STORAGE": "s3", "R2_ACCOUNT_ID": "acc"}, "R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY"),
        ({"STORAGE": "r2"}, "STORAGE: Input should be 'local' or 's3'"),
        ({"ALLOWED_ORIGINS": "https://study.example.org/index.html"}, "is not an origin"),
        ({"ALLOWED_ORIGINS": "study.example.org"}, "is not an origin"),
        ({"ALLOWED_ORIGINS": "ftp://study.example.org"}, "is not an origin"),
        ({"ALLOWED_ORIGINS": "https://user@study.example.org"}, "is not an origin"),
        ({"ALLOWED_ORIGINS": "https://study.example.org:99999"}, "is not an origin"),
        # An erasure that waits less than the uploads' confirmation window would not be final.
        ({"ERASURE_SETTLE_SECONDS": "1.0"}, "ERASURE_SETTLE_SECONDS must be longer than"),
        ({"ERASURE_SETTLE_SECONDS": "0"}, "ERASURE_SETTLE_SECONDS must be longer than"),
    ],
)
def test_a_misconfiguration_stops_the_start_naming_what_is_wrong(env: dict[str, str], named: str) -> None:
    code, output = start(env)
    assert code == 1
    assert "invalid configuration" in output and named in output
    assert "Traceback" not in output
    assert SECRET not in output  # the values are never echoed: they may be credentials


def test_blank_bucket_variables_count_as_unset() -> None:
    settings = Settings(r2_account_id="", r2_access_key_id=" ", r2_secret_access_key="", s3_endpoint_url="")
    assert settings.storage_kind == "local"


def test_storage_local_is_honoured_even_with_a_partial_bucket_configuration() -> None:
    settings = Settings(storage="local", r2_access_key_id="AKID", r2_secret_access_key=SECRET)
    assert settings.storage_kind == "local"


def test_a_complete_bucket_configuration_is_s3_with_or_without_storage() -> None:
    complete = {"r2_account_id": "acc", "r2_access_key_id": "AKID", "r2_secret_access_key": SECRET}
    assert Settings(**complete).storage_kind == "s3"
    assert Settings(storage="s3", **complete).endpoint_url == "https://acc.r2.cloudflarestorage.com"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://study.example.org/", ["https://study.example.org"]),  # copied from an address bar
        ("HTTPS://Study.Example.ORG", ["https://study.example.org"]),
        ("https://study.example.org:443", ["https://study.example.org"]),
        ("http://study.example.org:80/", ["http://study.example.org"]),
        ("http://localhost:8080/ , https://a.example", ["http://localhost:8080", "https://a.example"]),
        ("http://[::1]:3000", ["http://[::1]:3000"]),
        ("*", ["*"]),
    ],
)
def test_allowed_origins_are_written_as_browsers_send_them(given: str, expected: list[str]) -> None:
    assert Settings(allowed_origins=given).cors_origins == expected


def test_an_origin_with_a_path_is_refused() -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings(allowed_origins="https://study.example.org/experiment/")


def preflight(client: TestClient, origin: str) -> int:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    return client.options("/api/upload-user-data", headers=headers).status_code


def test_an_origin_copied_with_a_trailing_slash_still_lets_the_study_upload(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, allowed_origins="https://Study.Example.org:443/")
    with TestClient(create_app(settings)) as client:
        assert preflight(client, "https://study.example.org") == 200
        answer = client.post(
            "/api/upload-user-data",
            json={"participantId": "O1", "uploadType": "status"},
            headers={"Origin": "https://study.example.org"},
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://study.example.org"


def test_a_refused_origin_is_logged_once_naming_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = local_settings(tmp_path, allowed_origins="https://study.example.org")
    with TestClient(create_app(settings)) as client, caplog.at_level(logging.WARNING, "collector.cors"):
        assert preflight(client, "https://study.example.org") == 200
        assert [preflight(client, "https://elsewhere.example") for _ in range(3)] == [400] * 3
        assert preflight(client, "http://study.example.org") == 400
    refused = [r.getMessage() for r in caplog.records if r.name == "collector.cors"]
    assert len(refused) == 2
    assert "'https://elsewhere.example'" in refused[0] and "ALLOWED_ORIGINS" in refused[0]
    assert "'http://study.example.org'" in refused[1]


def test_inventing_origins_cannot_flood_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = local_settings(tmp_path, allowed_origins="https://study.example.org")
    with TestClient(create_app(settings)) as client, caplog.at_level(logging.WARNING, "collector.cors"):
        for number in range(MAX_LOGGED_ORIGINS + 50):
            preflight(client, f"https://o{number}.example")
    lines = [r for r in caplog.records if r.name == "collector.cors"]
    assert len(lines) == MAX_LOGGED_ORIGINS + 1  # one per origin up to the cap, then one saying so
