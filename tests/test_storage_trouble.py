"""Storage trouble: transient faults are retried; past the deadline the answer is 503 + Retry-After."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from collector.app import create_app
from collector.settings import Settings
from collector.storage import ObjectStore, StoredObject, TransientStorageError, open_store
from tests.support.collector_process import free_port
from tests.support.settings import local_settings, s3_settings

URL = "/api/upload-user-data"
BODY = {
    "participantId": "F1",
    "timestamp": "2025-11-19T14:30:45.123Z",
    "uploadType": "submission",
    "submissionData": {"x": 1},
}


class FaultyStore(ObjectStore):
    """Wraps a real backend and fails chosen calls with a transient error, like a flaky network."""

    def __init__(self, inner: ObjectStore, fail: dict[str, int]) -> None:
        self.inner = inner
        self.fail = dict(fail)  # operation -> how many more calls of it fail
        self.calls: list[str] = []

    def _maybe_fail(self, operation: str) -> None:
        self.calls.append(operation)
        if self.fail.get(operation, 0) > 0:
            self.fail[operation] -= 1
            raise TransientStorageError(f"injected {operation} failure")

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        self._maybe_fail("put_status" if key.endswith("status.json") else "put_submission")
        return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

    def get(self, key: str) -> StoredObject:
        self._maybe_fail("get")
        return self.inner.get(key)

    def list(self, prefix: str) -> Iterator:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._maybe_fail("delete")
        self.inner.delete(key)

    def check(self) -> None:
        self._maybe_fail("check")
        self.inner.check()


@contextmanager
def faulty_client(
    settings: Settings, store: ObjectStore, fail: dict[str, int]
) -> Iterator[tuple[TestClient, FaultyStore]]:
    faulty = FaultyStore(store, fail)
    with TestClient(create_app(settings, store=faulty)) as client:
        yield client, faulty


def test_transient_failures_are_retried_and_counted(settings: Settings, store: ObjectStore) -> None:
    # F1 was stored by another collector process: this one's create of status.json is refused
    # and it reads the status (a new participant's upload would make no GET).
    status_key = "volcano-audio-anonymized-data/participants/F1/user-status/status.json"
    store.put(status_key, b'{"participantId":"F1"}')
    with faulty_client(settings, store, {"put_submission": 2, "get": 1}) as (client, faulty):
        answer = client.post(URL, json=BODY)
        assert answer.status_code == 200
        assert faulty.calls.count("put_submission") == 3 and faulty.calls.count("get") == 2
        metrics = client.get("/metrics").text
        assert 'collector_storage_retries_total{operation="put"} 2.0' in metrics
        assert 'collector_storage_retries_total{operation="get"} 1.0' in metrics
        assert 'collector_uploads_total{outcome="stored",upload_type="submission"} 1.0' in metrics


def test_failure_past_the_deadline_is_503_and_the_retry_stores_exactly_once(
    settings: Settings, store: ObjectStore
) -> None:
    quick = settings.model_copy(update={"storage_deadline_seconds": 0.3})
    # The submission lands, then status.json keeps failing: the client must be told to retry.
    with faulty_client(quick, store, {"put_status": 10_000}) as (client, _):
        answer = client.post(URL, json=BODY)
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == str(quick.retry_after_seconds)
        assert answer.json()["status"] == "error"
        assert "retry" in answer.json()["error"]
        assert "injected" not in answer.text  # internals stay in the log
        # The client retries once storage is back: the submission is recognised, not duplicated.
        with TestClient(create_app(quick, store=store)) as healthy:
            again = healthy.post(URL, json=BODY)
            assert again.status_code == 200
            keys = [i.key for i in store.list("volcano-audio-anonymized-data/participants/F1/")]
            assert len([k for k in keys if "/submissions/" in k]) == 1
            assert json.loads(store.get(again.json()["filesUploaded"][0]).body)["participantId"] == "F1"


def test_unreachable_s3_answers_503_and_healthz_says_so(tmp_path) -> None:
    dead = Settings(
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        r2_access_key_id="test",
        r2_secret_access_key="test",
        s3_region="us-east-1",
        storage_deadline_seconds=0.5,
        storage_timeout_seconds=0.5,
        admin_password="test-admin-password-1",
    )
    with TestClient(create_app(dead)) as client:
        answer = client.post(URL, json=BODY)
        assert answer.status_code == 503
        assert "Retry-After" in answer.headers
        assert "test" not in answer.json()["error"]  # no credentials echoed
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "error"


def test_missing_bucket_is_503_not_500(moto_endpoint: str) -> None:
    settings = s3_settings(moto_endpoint, bucket="no-such-bucket-here")
    with TestClient(create_app(settings)) as client:
        assert client.post(URL, json=BODY).status_code == 503
        assert client.get("/healthz").status_code == 503


def test_healthz_ok_on_a_working_store(client: TestClient, settings: Settings) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "storage": settings.storage_kind}


def test_unusable_local_folder_is_503(tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    with TestClient(create_app(local_settings(blocker / "data"))) as client:
        answer = client.post(URL, json=BODY)
        assert answer.status_code == 503
        assert client.get("/healthz").status_code == 503
        assert blocker.read_text() == "a file where the data folder should be"


def test_open_store_picks_the_backend_from_settings(tmp_path, moto_endpoint: str) -> None:
    assert type(open_store(local_settings(tmp_path))).__name__ == "LocalStore"
    assert Settings(r2_account_id="acc", r2_access_key_id="k", r2_secret_access_key="s").endpoint_url == (
        "https://acc.r2.cloudflarestorage.com"
    )
    assert (
        Settings(s3_endpoint_url=moto_endpoint, r2_access_key_id="k", r2_secret_access_key="s").storage_kind
        == "s3"
    )
