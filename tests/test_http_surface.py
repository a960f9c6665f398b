"""What every route shares: one error shape for every documented status (docs/api.md §2), OpenAPI,
CORS, metrics, the CLI entry points."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.keys import KeyLayout
from collector.routes.static import MODULES
from collector.storage import MemoryStore, ObjectStore, StoredObject, open_store
from tests.support.collector_process import REPO, CollectorProcess, free_port, venv_bin
from tests.support.settings import TEST_ADMIN_PASSWORD, local_settings, s3_settings

UPLOAD = "/api/upload-user-data"
BATCH = "/api/upload-user-data/batch"
RESTORE = "/api/user-status"
STATUS = {"participantId": "E1", "uploadType": "status"}


class BuggyStore(MemoryStore):
    """A store with a bug (not a storage failure): what reaches the catch-all 500 handler."""

    def get(self, key: str) -> StoredObject:
        raise RuntimeError("a bug, not a storage failure")

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        raise RuntimeError("a bug, not a storage failure")


@dataclass
class Scene:
    """One collector to provoke an answer from: its client, store and layout."""

    client: TestClient
    store: ObjectStore
    layout: KeyLayout


# Scenes are built inside the parametrized cases below (lambdas get only tmp_path), so their
# clients are entered here, which runs each app's lifespan, and left after the test.
_entered: list[TestClient] = []


@pytest.fixture(autouse=True)
def _leave_scenes() -> Iterator[None]:
    yield
    while _entered:
        _entered.pop().__exit__(None, None, None)


def _entered_client(client: TestClient) -> TestClient:
    client.__enter__()
    _entered.append(client)
    return client


def scene(tmp_path: Path, store: ObjectStore | None = None, **overrides: object) -> Scene:
    settings = local_settings(tmp_path / "data", **overrides)
    store = store or open_store(settings)
    # A server exception must come back as the 500 answer it becomes, not be raised in the test.
    client = _entered_client(TestClient(create_app(settings, store=store), raise_server_exceptions=False))
    return Scene(client, store, KeyLayout(settings.data_prefix))


def unreachable_s3() -> Scene:
    settings = s3_settings(
        f"http://127.0.0.1:{free_port()}",  # nothing listens there
        bucket="nobody-home",
        storage_deadline_seconds=0.3,
        storage_timeout_seconds=0.3,
    )
    store = open_store(settings)
    return Scene(
        _entered_client(TestClient(create_app(settings, store=store))), store, KeyLayout(settings.data_prefix)
    )


def logged_in(tmp_path: Path) -> Scene:
    here = scene(tmp_path)
    answer = here.client.post("/admin/login", data={"password": TEST_ADMIN_PASSWORD}, follow_redirects=False)
    assert answer.status_code == 303
    return here


def rate_limited(tmp_path: Path) -> Scene:
    here = scene(tmp_path, rate_limit_per_minute=1, rate_limit_burst=1)
    assert here.client.post(UPLOAD, json=STATUS).status_code == 200  # spends the only token
    return here


def claimed(tmp_path: Path) -> Scene:
    """A participant claimed by a key (docs/trust-model.md §2)."""
    here = scene(tmp_path)
    assert here.client.post(UPLOAD, json={**STATUS, "participantKey": "k" * 22}).status_code == 200
    return here


def erased(tmp_path: Path) -> Scene:
    """A participant whose status.json is an erasure tombstone (docs/bucket-layout.md §6)."""
    here = scene(tmp_path)
    tombstone = {"participantId": "E1", "erased": True, "erasedAt": "2026-01-01T00:00:00.000Z"}
    here.store.put(here.layout.status_key("E1"), json.dumps(tombstone).encode())
    return here


Provoke = Callable[[Path], httpx.Response]


def case(route: str, status: int, provoke: Provoke, *, id: str) -> pytest.param:  # type: ignore[valid-type]
    return pytest.param(route, status, provoke, id=id)


def tiny(tmp_path: Path) -> Scene:
    return scene(tmp_path, max_upload_bytes=1024)


BIG = {**STATUS, "padding": "x" * 2048}
XML = {"content": b"<upload/>", "headers": {"Content-Type": "application/xml"}}

# Every status docs/api.md §2 lists, on every route where a request can provoke it:
# (route as documented, status, how to provoke it).
ERROR_CASES = [
    case("GET /no/such/route", 404, lambda t: scene(t).client.get("/no/such/route"), id="unknown-route-404"),
    # POST /api/upload-user-data
    case(
        "POST " + UPLOAD,
        400,
        lambda t: scene(t).client.post(UPLOAD, json={"participantId": "../x"}),
        id="upload-400-bad-id",
    ),
    case(
        "POST " + UPLOAD,
        400,
        lambda t: scene(t).client.post(UPLOAD, content=b"{", headers={"Content-Type": "application/json"}),
        id="upload-400-not-json",
    ),
    case(
        "POST " + UPLOAD,
        403,
        lambda t: claimed(t).client.post(UPLOAD, json={**STATUS, "participantKey": "w" * 22}),
        id="upload-403-wrong-key",
    ),
    case("POST " + UPLOAD, 405, lambda t: scene(t).client.get(UPLOAD), id="upload-405"),
    case(
        "POST " + UPLOAD,
        410,
        lambda t: erased(t).client.post(UPLOAD, json=STATUS),
        id="upload-410-erased",
    ),
    case("POST " + UPLOAD, 413, lambda t: tiny(t).client.post(UPLOAD, json=BIG), id="upload-413"),
    case("POST " + UPLOAD, 415, lambda t: scene(t).client.post(UPLOAD, **XML), id="upload-415"),
    case(
        "POST " + UPLOAD,
        422,
        lambda t: scene(t).client.post(UPLOAD, json={**STATUS, "uploadType": "bogus"}),
        id="upload-422",
    ),
    case("POST " + UPLOAD, 429, lambda t: rate_limited(t).client.post(UPLOAD, json=STATUS), id="upload-429"),
    case(
        "POST " + UPLOAD,
        500,
        lambda t: scene(t, store=BuggyStore()).client.post(UPLOAD, json=STATUS),
        id="upload-500-bug",
    ),
    case(
        "POST " + UPLOAD,
        503,
        lambda t: unreachable_s3().client.post(UPLOAD, json=STATUS),
        id="upload-503-storage",
    ),
    # POST /api/upload-user-data/batch
    case("POST " + BATCH, 400, lambda t: scene(t).client.post(BATCH, json={"uploads": "no"}), id="batch-400"),
    case("POST " + BATCH, 405, lambda t: scene(t).client.get(BATCH), id="batch-405"),
    case("POST " + BATCH, 413, lambda t: tiny(t).client.post(BATCH, json={"uploads": [BIG]}), id="batch-413"),
    case("POST " + BATCH, 415, lambda t: scene(t).client.post(BATCH, **XML), id="batch-415"),
    case(
        "POST " + BATCH,
        422,
        lambda t: scene(t).client.post(BATCH, json={"uploads": []}),
        id="batch-422-empty",
    ),
    case(
        "POST " + BATCH,
        422,
        lambda t: scene(t).client.post(BATCH, json={"uploads": [STATUS] * 51}),
        id="batch-422-too-many",
    ),
    case(
        "POST " + BATCH,
        429,
        lambda t: rate_limited(t).client.post(BATCH, json={"uploads": [STATUS]}),
        id="batch-429",
    ),
    # POST /api/user-status (restore)
    case(
        "POST " + RESTORE,
        400,
        lambda t: scene(t).client.post(RESTORE, json={"participantId": "bad id"}),
        id="restore-400",
    ),
    case(
        "POST " + RESTORE,
        404,
        lambda t: scene(t).client.post(RESTORE, json={"participantId": "NOBODY", "participantKey": "k" * 22}),
        id="restore-404-unknown",
    ),
    case(
        "POST " + RESTORE,
        404,
        lambda t: claimed(t).client.post(RESTORE, json={"participantId": "E1", "participantKey": "w" * 22}),
        id="restore-404-wrong-key",
    ),
    case(
        "POST " + RESTORE,
        404,
        lambda t: erased(t).client.post(RESTORE, json={"participantId": "E1", "participantKey": "k" * 22}),
        id="restore-404-erased",
    ),
    case(
        "POST " + RESTORE,
        405,
        lambda t: scene(t).client.put(RESTORE, json={}),
        id="restore-405",
    ),
    case(
        "POST " + RESTORE,
        413,
        lambda t: tiny(t).client.post(RESTORE, json=BIG),
        id="restore-413",
    ),
    case(
        "POST " + RESTORE,
        415,
        lambda t: scene(t).client.post(RESTORE, **XML),
        id="restore-415",
    ),
    case(
        "POST " + RESTORE,
        429,
        lambda t: rate_limited(t).client.post(RESTORE, json={"participantId": "E1"}),
        id="restore-429",
    ),
    case(
        "POST " + RESTORE,
        503,
        lambda t: unreachable_s3().client.post(
            RESTORE, json={"participantId": "E1", "participantKey": "k" * 22}
        ),
        id="restore-503",
    ),
    # Operations and the module
    case("GET /healthz", 405, lambda t: scene(t).client.post("/healthz"), id="healthz-405"),
    case("GET /healthz", 503, lambda t: unreachable_s3().client.get("/healthz"), id="healthz-503"),
    case("GET /metrics", 405, lambda t: scene(t).client.post("/metrics"), id="metrics-405"),
    case(
        "GET /js/data-uploader.js",
        405,
        lambda t: scene(t).client.post("/js/data-uploader.js"),
        id="module-405",
    ),
    case(
        "GET /js/data-uploader.js",
        413,
        lambda t: tiny(t).client.request("GET", "/js/data-uploader.js", content=b"x" * 2048),
        id="module-413",
    ),
    # The dashboard's JSON refusals (pages redirect to the login form instead)
    case("POST /admin/refresh", 401, lambda t: scene(t).client.post("/admin/refresh"), id="admin-401"),
    case(
        "POST /admin/login",
        403,
        lambda t: scene(t).client.post(
            "/admin/login", data={"password": "x"}, headers={"Origin": "https://evil.example"}
        ),
        id="admin-403-cross-site",
    ),
    case(
        "GET /admin/participants/{id}/download.zip",
        404,
        lambda t: logged_in(t).client.get("/admin/participants/NOBODY/download.zip"),
        id="admin-404",
    ),
    case(
        "POST /admin/login",
        413,
        lambda t: tiny(t).client.post("/admin/login", data={"password": "x" * 2048}),
        id="admin-413",
    ),
]

RETRY_STATUSES = {429, 503}
CLOSING_STATUSES = {408, 413}


@pytest.mark.parametrize(("route", "status", "provoke"), ERROR_CASES)
def test_every_refusal_has_the_one_error_shape(
    route: str, status: int, provoke: Provoke, tmp_path: Path
) -> None:
    answer = provoke(tmp_path)
    assert answer.status_code == status, answer.text
    payload = answer.json()
    assert set(payload) <= {"status", "error", "reason"}
    assert payload["status"] == "error"
    assert isinstance(payload["error"], str) and payload["error"]
    assert "Traceback" not in answer.text
    if status in RETRY_STATUSES:
        assert int(answer.headers["retry-after"]) >= 1
    if status == 405:
        assert answer.headers["allow"]
    if status in CLOSING_STATUSES:
        assert answer.headers["connection"] == "close"
    if status == 403 and route.startswith("POST /api"):
        assert payload["reason"] == "participant-key"
    if status == 410:
        assert payload["reason"] == "erased"


def test_a_batch_answers_storage_trouble_per_item_with_retry_after() -> None:
    answer = unreachable_s3().client.post(
        BATCH, json={"uploads": [STATUS, {**STATUS, "participantId": "E2"}]}
    )
    assert answer.status_code == 200
    assert [item["httpStatus"] for item in answer.json()["results"]] == [503, 503]
    assert int(answer.headers["retry-after"]) >= 1


def test_the_module_answers_304_to_a_current_etag(tmp_path: Path) -> None:
    client = scene(tmp_path).client
    first = client.get("/js/data-uploader.js")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/javascript")
    again = client.get("/js/data-uploader.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_a_missing_pyarrow_is_the_servers_problem_not_the_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """501, not 400: the request is fine; this installation lacks an optional part."""
    here = logged_in(tmp_path)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real_find_spec(name, *a)
    )
    answer = here.client.get("/admin/export.zip?format=parquet")
    assert answer.status_code == 501
    assert answer.json()["status"] == "error"


@pytest.mark.processes
@pytest.mark.parametrize("path", [UPLOAD, BATCH, RESTORE])
def test_a_body_slower_than_the_timeout_is_408_in_the_one_shape(tmp_path: Path, path: str) -> None:
    settings = local_settings(tmp_path / "data", body_timeout_seconds=0.5)
    with (
        CollectorProcess(settings) as collector,
        socket.create_connection(("127.0.0.1", collector.port), timeout=10) as sock,
    ):
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n{".encode()
        )
        head, body = read_answer(sock)
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body)["status"] == "error"


def read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP/1.1 answer's head and body (by its Content-Length), without waiting for a close."""
    received = b""
    while b"\r\n\r\n" not in received and (chunk := sock.recv(4096)):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length and (chunk := sock.recv(4096)):
        body += chunk
    return head, body


def test_every_documented_status_is_provoked_above(tmp_path: Path) -> None:
    """Each status the OpenAPI description documents for a route is one of the cases above."""
    provoked = {(p.values[0], p.values[1]) for p in ERROR_CASES}
    # GET /api/user-status/{id} is replaced by POST /api/user-status (docs/api.md §5).
    retired = {"/api/user-status/{participant_id}"}
    untestable_here = {
        # 408 needs a real socket: test_a_body_slower_than_the_timeout_is_408_in_the_one_shape.
        ("POST " + UPLOAD, 408),
        ("POST " + BATCH, 408),
        ("POST " + RESTORE, 408),
        # Uploads in progress over the limit: tests/test_hostile_input.py (a store that blocks).
        ("POST " + BATCH, 503),
        # Every module missing from the installation (tests/browser/test_module_route.py).
        *((f"GET /js/{name}", 404) for name in MODULES),
    }
    spec = scene(tmp_path).client.get("/openapi.json").json()
    missing = [
        (f"{method.upper()} {path}", int(code))
        for path, operations in spec["paths"].items()
        if path not in retired
        for method, operation in operations.items()
        for code in operation.get("responses", {})
        if code.isdigit()
        and int(code) >= 400
        and (f"{method.upper()} {path}", int(code)) not in provoked | untestable_here
    ]
    assert missing == []


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
    with TestClient(create_app(settings)) as client:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        allowed = client.options(
            "/api/upload-user-data", headers={"Origin": "https://study.example.org", **preflight}
        )
        assert allowed.headers["access-control-allow-origin"] == "https://study.example.org"
        refused = client.options(
            "/api/upload-user-data", headers={"Origin": "https://evil.example", **preflight}
        )
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


@pytest.mark.processes
@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-m", "collector", "--help"], id="python-m"),
        pytest.param([str(venv_bin("collector")), "--help"], id="console-script"),
        pytest.param([sys.executable, "backend/collector_loop.py", "--help"], id="script-entry-point"),
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
