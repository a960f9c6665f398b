"""What every route shares: one error shape, OpenAPI, CORS, metrics, the CLI entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from tests.support.collector_process import REPO, venv_bin
from tests.support.settings import local_settings

ERROR_CASES = [
    pytest.param("GET", "/no/such/route", None, 404, id="unknown-route"),
    pytest.param("GET", "/api/upload-user-data", None, 405, id="wrong-method"),
    pytest.param("POST", "/api/upload-user-data", {"participantId": "../x"}, 400, id="upload-refused"),
    pytest.param("POST", "/api/upload-user-data/batch", {"uploads": "no"}, 400, id="batch-refused"),
    pytest.param("POST", "/api/user-status", {"participantId": "bad id"}, 400, id="restore-bad-id"),
    pytest.param("POST", "/api/user-status", {"participantId": "NOBODY"}, 404, id="restore-unknown"),
    pytest.param("GET", "/api/user-status/NOBODY", None, 404, id="old-restore-route-is-gone"),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), ERROR_CASES)
def test_every_refusal_has_the_one_error_shape(
    client: TestClient, method: str, path: str, body: object, status: int
) -> None:
    answer = client.request(method, path, json=body)
    assert answer.status_code == status
    payload = answer.json()
    assert set(payload) == {"status", "error"}
    assert payload["status"] == "error"
    assert isinstance(payload["error"], str) and payload["error"]


def test_openapi_describes_every_api_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/api/upload-user-data", "/api/upload-user-data/batch", "/healthz", "/metrics"} <= set(
        spec["paths"]
    )
    upload = spec["paths"]["/api/upload-user-data"]["post"]
    schema = upload["requestBody"]["content"]["application/json"]["schema"]
    assert "participantId" in schema["required"]
    assert {"400", "413", "415", "422", "503"} <= set(upload["responses"])


def test_batch_answers_each_item_on_its_own(client: TestClient) -> None:
    uploads = [
        {"participantId": "B1", "uploadType": "status", "uploadId": "a"},
        {"participantId": "bad id", "uploadType": "status", "uploadId": "b"},
        {"participantId": "B1", "uploadType": "submission", "uploadId": "c", "submissionData": {"k": 1}},
    ]
    answer = client.post("/api/upload-user-data/batch", json={"uploads": uploads})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [(r["uploadId"], r["httpStatus"]) for r in results] == [("a", 200), ("b", 400), ("c", 200)]
    assert len(results[2]["filesUploaded"]) == 2


def test_restore_returns_status_fields_only(client: TestClient) -> None:
    key = "restore-key-0123456789abcdef"
    client.post(
        "/api/upload-user-data",
        json={
            "participantId": "R1",
            "participantKey": key,
            "uploadType": "submission",
            "submissionData": {"survey": "secret"},
            "participantResponses": {"q1": "private answer"},
            "hasSeenTutorial": True,
            "weeklySessionCount": 3,
        },
    )
    answer = client.post("/api/user-status", json={"participantId": "R1", "participantKey": key}).json()
    assert answer["userStatus"]["hasSeenTutorial"] is True
    assert "participantKeyHash" not in answer["userStatus"]
    assert "participantKey" not in answer["userStatus"]
    assert answer["userStatus"]["weeklySessionCount"] == 3
    assert "submissionData" not in answer["userStatus"]
    assert "participantResponses" not in answer["userStatus"]


def test_cors_allows_only_configured_origins(tmp_path) -> None:
    settings = local_settings(tmp_path, allowed_origins="https://study.example.org")
    client = TestClient(create_app(settings))
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = client.options(
        "/api/upload-user-data", headers={"Origin": "https://study.example.org", **preflight}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://study.example.org"
    refused = client.options("/api/upload-user-data", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in refused.headers


def test_cors_is_open_on_the_local_default(client: TestClient, settings) -> None:
    if settings.storage_kind != "local":
        assert settings.cors_origins == []
        return
    answer = client.post(
        "/api/upload-user-data",
        json={"participantId": "C1", "uploadType": "status"},
        headers={"Origin": "http://localhost:8000"},
    )
    assert answer.headers["access-control-allow-origin"] == "*"


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    client.post("/api/upload-user-data", json={"participantId": "M1", "uploadType": "status"})
    client.post("/api/upload-user-data", json={"participantId": "../M1"})
    text = client.get("/metrics").text
    assert 'collector_uploads_total{outcome="stored",upload_type="status"} 1.0' in text
    assert 'collector_uploads_total{outcome="refused",upload_type="unknown"} 1.0' in text
    assert 'collector_storage_request_seconds_count{operation="put"}' in text


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-m", "collector", "--help"], id="python-m"),
        pytest.param([str(venv_bin("collector")), "--help"], id="console-script"),
        pytest.param([sys.executable, "backend/collector_loop.py", "--help"], id="seed-entry-point"),
    ],
)
def test_command_line_entry_points(command: list[str]) -> None:
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout


def test_placeholder_admin_password_is_refused() -> None:
    from pydantic import ValidationError

    from collector.settings import Settings

    with pytest.raises(ValidationError, match="placeholder"):
        Settings(admin_password="changeme")
