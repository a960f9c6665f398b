"""Hostile input: tricks in IDs and bodies, slow and oversized requests over a real socket, CORS
from elsewhere, floods. Every refusal is the one error shape, stores nothing, and is never a 5xx."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.keys import KeyLayout
from collector.storage import MemoryStore, ObjectStore, StoredObject, open_store
from collector.web.rate_limit import RateLimiter
from tests.support.collector_process import CollectorProcess, free_port
from tests.support.settings import local_settings

URL = "/api/upload-user-data"


def stored_keys(store: ObjectStore, layout: KeyLayout) -> list[str]:
    return [info.key for info in store.list(layout.participants_root)]


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, ObjectStore, KeyLayout]]:
    """One collector for the refusal cases (they are refused before storage is touched, so the
    backend does not matter; the upload API tests cover refusals on S3 too). Nothing may appear."""
    settings = local_settings(tmp_path_factory.mktemp("refusing") / "data")
    store = open_store(settings)
    with TestClient(create_app(settings)) as client:
        yield client, store, KeyLayout(settings.data_prefix)


def assert_refused(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json() == {"status": "error", "error": answer.json()["error"]}
    assert "Traceback" not in answer.text


ID_TRICKS = [
    pytest.param("..", id="dot-dot"),
    pytest.param(".", id="dot"),
    pytest.param("..%2F..%2Fetc", id="encoded-slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("P1\x00", id="nul"),
    pytest.param("\uff30001", id="fullwidth-letter"),
    pytest.param("P\u202e1", id="right-to-left-override"),
    pytest.param("P\u200d1", id="zero-width-joiner"),
    pytest.param("e\u0301", id="combining-accent"),
    pytest.param("\ufb01le", id="ligature"),
    pytest.param("\u0130", id="dotted-capital-i"),
    pytest.param("P\u00a01", id="no-break-space"),
    pytest.param("\U0001f600", id="emoji"),
    pytest.param("P1\r\nX-Injected: 1", id="header-injection"),
    pytest.param(["P1"], id="list"),
    pytest.param({"id": "P1"}, id="object"),
    pytest.param(True, id="boolean"),
]


@pytest.mark.parametrize("participant_id", ID_TRICKS)
def test_tricky_participant_ids_are_refused(
    refusing: tuple[TestClient, ObjectStore, KeyLayout], participant_id: object
) -> None:
    client, store, layout = refusing
    answer = client.post(
        URL, json={"participantId": participant_id, "uploadType": "submission", "submissionData": {"a": 1}}
    )
    assert_refused(answer, 400)
    batch = client.post(URL + "/batch", json={"uploads": [{"participantId": participant_id}]})
    assert batch.json()["results"][0]["httpStatus"] == 400
    assert stored_keys(store, layout) == []


@pytest.mark.parametrize(
    "participant_id",
    [
        pytest.param("../../etc/passwd", id="traversal"),
        pytest.param("..", id="dot-dot"),
        pytest.param("Pé1", id="non-ascii"),
        pytest.param("P\x001", id="nul"),
        pytest.param("x" * 65, id="too-long"),
        pytest.param(["P1"], id="list"),
    ],
)
def test_restore_refuses_tricky_ids(
    refusing: tuple[TestClient, ObjectStore, KeyLayout], participant_id: object
) -> None:
    client = refusing[0]
    answer = client.post("/api/user-status", json={"participantId": participant_id})
    assert answer.status_code == 400
    assert answer.json()["status"] == "error"


BODY_TRICKS = [
    pytest.param(b'{"participantId": "P1", "submissionData": {"a": NaN}}', id="nan"),
    pytest.param(b'{"participantId": "P1", "submissionData": {"a": -Infinity}}', id="infinity"),
    pytest.param(b'{"participantId": "P1", "submissionData": {"a": 1e999}}', id="overflowing-number"),
    pytest.param(b'{"participantId": "P1", "submissionData": {"a": "\\ud800"}}', id="lone-surrogate"),
    pytest.param(b'{"participantId": "P1", "submissionData": {"\\udc00": 1}}', id="lone-surrogate-key"),
    pytest.param(b'{"participantId": "P1", "uploadId": "\\ud800x", "submissionData": {}}', id="surrogate-id"),
    pytest.param(b'{"participantId": "P1", "submissionData": {"a": ' + b"9" * 5000 + b"}}", id="huge-int"),
    pytest.param(b'{"participantId": "P1", "submissionData": {"a": 1, "a": 2}}', id="nested-duplicate"),
    pytest.param(
        b'{"participantId": "P1", "submissionData": ' + b'{"a": ' * 80 + b"1" + b"}" * 81, id="deep-objects"
    ),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"participantId": "P1"} {"participantId": "P2"}', id="two-documents"),
]


@pytest.mark.parametrize("raw", BODY_TRICKS)
def test_bodies_that_cannot_be_stored_as_json_are_refused(
    refusing: tuple[TestClient, ObjectStore, KeyLayout], raw: bytes
) -> None:
    client, store, layout = refusing
    answer = client.post(URL, content=raw, headers={"Content-Type": "application/json"})
    assert_refused(answer, 400)
    assert stored_keys(store, layout) == []


@pytest.mark.parametrize(
    "timestamp",
    [
        pytest.param("0001-01-01T00:00:00+01:00", id="before-year-one-in-utc"),
        pytest.param("9999-12-31T23:59:59-01:00", id="after-year-9999-in-utc"),
        pytest.param("../../../etc", id="traversal"),
        pytest.param("2025-02-30T00:00:00Z", id="no-such-day"),
    ],
)
def test_unusable_timestamps_are_named_by_server_time(client: TestClient, timestamp: str) -> None:
    body = {"participantId": "T1", "uploadType": "submission", "timestamp": timestamp, "submissionData": {}}
    answer = client.post(URL, json=body)
    assert answer.status_code == 200
    assert answer.json()["timestamp"] == timestamp  # kept as sent, as the contract says
    assert "_Complete_20" in answer.json()["filesUploaded"][-1]  # the name uses the server's time


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/html", id="html"),
        pytest.param("multipart/form-data; boundary=x", id="multipart"),
        pytest.param("application/json-patch+json", id="json-patch"),
        pytest.param("application/jsonx", id="json-prefix"),
        pytest.param("application/javascript", id="javascript"),
    ],
)
def test_wrong_content_types_are_refused(
    refusing: tuple[TestClient, ObjectStore, KeyLayout], content_type: str
) -> None:
    client, store, layout = refusing
    answer = client.post(URL, content=b'{"participantId": "P1"}', headers={"Content-Type": content_type})
    assert_refused(answer, 415)
    assert stored_keys(store, layout) == []


def test_cors_gives_a_disallowed_origin_nothing_to_read(tmp_path: Path) -> None:
    with TestClient(
        create_app(local_settings(tmp_path, allowed_origins="https://study.example.org"))
    ) as client:
        evil = {"Origin": "https://evil.example"}
        preflight = client.options(
            URL + "/batch",
            headers={
                **evil,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert "access-control-allow-origin" not in preflight.headers
        restore = client.post("/api/user-status", json={"participantId": "P1"}, headers=evil)
        assert "access-control-allow-origin" not in restore.headers
        # A simple (preflight-free) request is still served, as CORS only hides the answer: it is
        # not access control, and a participant's upload needs none.
        beacon = client.post(
            URL, content=b'{"participantId": "P1"}', headers={**evil, "Content-Type": "text/plain"}
        )
        assert "access-control-allow-origin" not in beacon.headers


def test_a_flood_from_one_address_is_rate_limited_and_stores_nothing(tmp_path: Path) -> None:
    # One token a minute: a slow machine must not earn a refill between the five posts.
    settings = local_settings(tmp_path, rate_limit_per_minute=1, rate_limit_burst=3)
    with TestClient(create_app(settings)) as client:
        answers = [
            client.post(URL, json={"participantId": f"R{n}", "uploadType": "status"}) for n in range(5)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert_refused(answers[3], 429)
        assert int(answers[3].headers["Retry-After"]) >= 1
        restore = client.post("/api/user-status", json={"participantId": "R0"})
        assert restore.status_code == 429  # the restore route counts too
        assert client.get("/healthz").status_code == 200  # operations routes are not limited
        assert sorted(p.name for p in (tmp_path / settings.data_prefix / "participants").iterdir()) == [
            "R0",
            "R1",
            "R2",
        ]


def test_rate_limit_is_per_address_refills_and_forgets_the_oldest() -> None:
    now = [0.0]
    limiter = RateLimiter(60, 2, max_clients=3, clock=lambda: now[0])
    assert [limiter.wait_seconds("a") for _ in range(3)] == [0.0, 0.0, 1.0]
    assert limiter.wait_seconds("b") == 0.0  # another address has its own bucket
    now[0] += 1.0
    assert limiter.wait_seconds("a") == 0.0  # one token a second came back
    for n in range(10):
        limiter.wait_seconds(f"spoofed-{n}")
    assert limiter.tracked_clients == 3  # bounded, whatever the number of addresses
    assert RateLimiter(0, 1).wait_seconds("x") == 0.0  # 0 switches it off


class BlockingStore(MemoryStore):
    """Holds every write until released, so uploads pile up in progress."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        self.entered.set()
        self.release.wait(30)
        return super().put(key, body, if_absent=if_absent, if_match=if_match)

    def get(self, key: str) -> StoredObject:
        return super().get(key)


def test_uploads_over_the_concurrency_limit_get_503_and_retry_after(tmp_path: Path) -> None:
    store = BlockingStore()
    settings = local_settings(tmp_path, max_concurrent_uploads=1, upload_queue_seconds=0)
    with TestClient(create_app(settings, store=store)) as client:
        first: list[httpx.Response] = []
        worker = threading.Thread(
            target=lambda: first.append(
                client.post(URL, json={"participantId": "C1", "uploadType": "status"})
            )
        )
        worker.start()
        assert store.entered.wait(30)
        second = client.post(URL, json={"participantId": "C2", "uploadType": "status"})
        store.release.set()
        worker.join(30)
    assert_refused(second, 503)
    assert second.headers["Retry-After"] == str(settings.retry_after_seconds)
    assert first[0].status_code == 200
    assert [i.key.split("/")[2] for i in store.list(KeyLayout(settings.data_prefix).participants_root)] == [
        "C1"
    ]


@pytest.fixture
def live_collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    settings = local_settings(tmp_path / "data", body_timeout_seconds=1.0)
    process = CollectorProcess(settings, log_path=tmp_path / "collector.log")
    yield process
    process.stop()


@pytest.mark.processes
def test_a_body_trickling_one_byte_at_a_time_is_cut_off(
    live_collector: CollectorProcess, tmp_path: Path
) -> None:
    """Slow-loris over a real socket: uvicorn + body_timeout_seconds answer 408 and close."""
    sock = socket.create_connection(("127.0.0.1", live_collector.port), timeout=10)
    sock.sendall(
        b"POST /api/upload-user-data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    sock.settimeout(0.25)
    received, closed = b"", False
    for _ in range(40):  # at most 40 bytes; the body needs 1000
        try:
            sock.sendall(b" ")
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:  # reset: closed under our feet
            closed = True
            break
        if not chunk:
            closed = True
            break
        received += chunk
        # Meanwhile the server serves others: the trickle holds no worker.
        if received and not closed:
            ok = httpx.post(live_collector.url + URL, json={"participantId": "S1", "uploadType": "status"})
            assert ok.status_code == 200
    sock.close()
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in received.lower()
    assert closed
    assert "Traceback" not in (tmp_path / "collector.log").read_text()


@pytest.mark.processes
def test_an_absurd_declared_length_is_refused_before_reading(live_collector: CollectorProcess) -> None:
    with socket.create_connection(("127.0.0.1", live_collector.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/upload-user-data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000000\r\n\r\n"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer.lower()


def test_no_answer_names_the_storage_endpoint_or_credentials(tmp_path: Path) -> None:
    settings = local_settings(tmp_path).model_copy(
        update={
            "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "r2_account_id": "acct7q2z",
            "r2_access_key_id": "AKIDHOSTILE7Q",
            "r2_secret_access_key": "secret-hostile-7q",
            "storage_deadline_seconds": 0.3,
            "storage_timeout_seconds": 0.3,
        }
    )
    with TestClient(create_app(settings)) as client:
        answers = [
            client.get("/healthz"),
            client.post(URL, json={"participantId": "H1", "uploadType": "status"}),
            client.post(URL + "/batch", json={"uploads": [{"participantId": "H1"}]}),
            client.post("/api/user-status", json={"participantId": "H1"}),
        ]
        for answer in answers:
            assert answer.status_code in (200, 503)
            for secret in (
                str(settings.s3_endpoint_url),
                "127.0.0.1",
                settings.r2_bucket_name,
                "AKIDHOSTILE7Q",
                "7q",
            ):
                assert secret not in answer.text
