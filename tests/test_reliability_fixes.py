"""Bugs the fault harness found, each pinned by a test that fails without its fix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.errors import StorageUnavailable
from collector.keys import KeyLayout
from collector.metrics import Metrics
from collector.models import parse_upload
from collector.pipeline.run import UploadPipeline
from collector.storage import (
    MemoryStore,
    ObjectStore,
    RetryingStore,
    S3Store,
    StoredObject,
    TransientStorageError,
)
from collector.trials import parse_trial
from tests.faults.proxy import Fault, FaultPlan, FaultProxy
from tests.support.fake_clock import FakeClock
from tests.support.settings import local_settings, make_bucket


class SlowFlakyStore(ObjectStore):
    """Every call takes 0.5 s; two calls in three fail transiently, the third succeeds."""

    def __init__(self, clock: FakeClock) -> None:
        self.inner, self.clock, self.calls = MemoryStore(), clock, 0

    def _turn(self) -> None:
        self.calls += 1
        self.clock.sleep(0.5)
        if self.calls % 3:
            raise TransientStorageError("injected")

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        self._turn()
        return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

    def get(self, key: str) -> StoredObject:
        self._turn()
        return self.inner.get(key)

    def list(self, prefix: str) -> Iterator:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._turn()
        self.inner.delete(key)

    def check(self) -> None:
        self._turn()


def struggling_pipeline(clock: FakeClock) -> UploadPipeline:
    """The upload pipeline over a slow, flaky store, with a 2 s storage deadline."""
    store = RetryingStore(
        SlowFlakyStore(clock), Metrics(), deadline_seconds=2.0, sleep=clock.sleep, clock=clock
    )
    return UploadPipeline(
        store,
        KeyLayout("p"),
        retry_after=5,
        deadline_seconds=2.0,
        participant_keys=True,
        clock_skew=timedelta(seconds=300),
        clock=clock,
    )


def test_one_deadline_covers_all_storage_requests_of_an_upload() -> None:
    # Bug: the deadline applied to each storage request, so an upload making three requests
    # against a struggling store could take three deadlines (past the browser's timeout).
    clock = FakeClock()
    service = struggling_pipeline(clock)
    skew = service.clock_skew
    now = datetime(2025, 11, 19, tzinfo=UTC)
    upload = parse_upload(
        {"participantId": "D1", "uploadType": "submission", "submissionData": {"a": 1}},
        received_at=now,
        clock_skew=skew,
    )
    refusal = asyncio.run(service.store_upload(upload, received_at=now))
    assert refusal.status == StorageUnavailable.status
    # Each request alone succeeds within 2 s; all three together would need about 4.5 s.
    assert clock.now < 2.0 + 0.5 + 1.0  # the deadline, one call in flight, one backoff at most


def test_a_trials_key_check_shares_the_deadline_of_its_write() -> None:
    # Bug: a trial read status.json (its key check) outside the deadline its write had, so a
    # struggling store kept it about two deadlines before the 503.
    clock = FakeClock()
    service = struggling_pipeline(clock)
    trial = parse_trial(
        {"participantId": "D2", "uploadType": "trial", "sessionId": "run-1", "trialIndex": 0, "trialData": {}}
    )
    refusal = asyncio.run(service.store_upload(trial, received_at=datetime(2025, 11, 19, tzinfo=UTC)))
    assert refusal.status == StorageUnavailable.status
    assert clock.now < 2.0 + 0.5 + 1.0  # one deadline for the read and the write, not one each


def test_s3_backend_sends_each_attempt_once(moto_endpoint: str) -> None:
    # Bug: botocore's retries={"max_attempts": 1} still retried once, doubling every stall.
    moto = urlsplit(moto_endpoint)
    proxy = FaultProxy(moto.hostname or "127.0.0.1", moto.port or 80).start()
    try:
        store = S3Store(
            make_bucket(moto_endpoint),
            endpoint_url=proxy.url,
            access_key_id="test",
            secret_access_key="test",
            region="us-east-1",
        )
        proxy.set_plan(FaultPlan({Fault.ERROR_503: 1.0}))
        with pytest.raises(TransientStorageError):
            store.put("k.json", b"{}", if_absent=True)
        assert proxy.counts["503"] == 1
        store.close()
    finally:
        proxy.stop()


class RecordingFaultyStore(ObjectStore):
    """Fails every write transiently and records which keys were tried."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.tried = inner, set()

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        self.tried.add(key.split("/")[2])  # the participant
        raise TransientStorageError("injected")

    def get(self, key: str) -> StoredObject:
        return self.inner.get(key)

    def list(self, prefix: str) -> Iterator:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        raise TransientStorageError("injected")

    def check(self) -> None:
        self.inner.check()


def test_batch_stops_trying_storage_once_it_failed(tmp_path: Path) -> None:
    # Bug: a batch of 50 during an outage spent the storage deadline on every item in turn.
    settings = local_settings(tmp_path, storage_deadline_seconds=0.2)
    faulty = RecordingFaultyStore(MemoryStore())
    with TestClient(create_app(settings, store=faulty)) as client:
        uploads = [{"participantId": f"B{n}", "uploadType": "status", "uploadId": f"u{n}"} for n in range(5)]
        answer = client.post("/api/upload-user-data/batch", json={"uploads": uploads})
        assert answer.status_code == 200
        assert [r["httpStatus"] for r in answer.json()["results"]] == [503] * 5
        assert faulty.tried == {"B0"}
        assert answer.headers["Retry-After"] == str(settings.retry_after_seconds)
