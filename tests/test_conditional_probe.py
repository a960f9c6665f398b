"""The collector proves the bucket honours conditional writes before it acknowledges any upload.

moto honours both conditions, so a proxy in front of it strips them (a bucket that ignores them),
or answers 503 to everything (a bucket that cannot be reached).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.cli import main
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ConditionalWritesIgnored, open_store
from collector.storage.conditional_probe import PROBE_BODY
from collector.verify import verify_bucket
from tests.faults.proxy import Fault, FaultPlan, FaultProxy
from tests.support.collector_process import (
    collector_environment,
    free_port,
    settings_environment,
    terminate,
    wait_until_healthy,
)
from tests.support.settings import make_bucket, s3_settings

URL = "/api/upload-user-data"
BODY = {"participantId": "P1", "uploadType": "submission", "submissionData": {"answer": 1}}
IGNORES_IF_NONE_MATCH = FaultPlan(strip_headers=frozenset({"if-none-match"}))
IGNORES_IF_MATCH = FaultPlan(strip_headers=frozenset({"if-match"}))
UNREACHABLE = FaultPlan({Fault.ERROR_503: 1.0})


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    parts = urlsplit(moto_endpoint)
    started = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 80).start()
    yield started
    started.stop()


@pytest.fixture
def settings(proxy: FaultProxy, moto_endpoint: str) -> Settings:
    """The collector talks to moto through the proxy; the test looks at moto directly."""
    return s3_settings(
        proxy.url,
        bucket=make_bucket(moto_endpoint),
        # Room for moto behind the proxy on a loaded machine: at 0.5 s a slow answer once looked
        # like an unreachable bucket, and `serve` then started instead of refusing.
        storage_deadline_seconds=2.0,
        storage_timeout_seconds=2.0,
        retry_after_seconds=1,
    )


def stored_participant_objects(settings: Settings, moto_endpoint: str) -> list[str]:
    direct = open_store(settings.model_copy(update={"s3_endpoint_url": moto_endpoint}))
    try:
        return [info.key for info in direct.list(KeyLayout(settings.data_prefix).participants_root)]
    finally:
        direct.close()


def test_an_honest_bucket_is_proven_once_under_one_documented_key(
    settings: Settings, proxy: FaultProxy, moto_endpoint: str
) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        proven_after = proxy.counts["requests"]
        assert client.post(URL, json=BODY).status_code == 200
        assert proxy.counts["requests"] - proven_after <= 3  # the upload's own requests, no new proof
    direct = open_store(settings.model_copy(update={"s3_endpoint_url": moto_endpoint}))
    layout = KeyLayout(settings.data_prefix)
    outside = [
        info.key for info in direct.list(settings.data_prefix + "/") if "/participants/" not in info.key
    ]
    assert outside == [layout.conditional_probe_key]
    assert direct.get(layout.conditional_probe_key).body == PROBE_BODY
    report = verify_bucket(direct, layout)
    assert report.ok, report.defects
    direct.close()


@pytest.mark.parametrize(
    ("plan", "condition"), [(IGNORES_IF_NONE_MATCH, "If-None-Match"), (IGNORES_IF_MATCH, "If-Match")]
)
def test_a_bucket_ignoring_a_condition_stops_the_start(
    settings: Settings, proxy: FaultProxy, moto_endpoint: str, plan: FaultPlan, condition: str
) -> None:
    proxy.set_plan(plan)
    with pytest.raises(ConditionalWritesIgnored, match=condition), TestClient(create_app(settings)):
        pass
    assert stored_participant_objects(settings, moto_endpoint) == []


@pytest.mark.parametrize(
    ("plan", "condition"), [(IGNORES_IF_NONE_MATCH, "If-None-Match"), (IGNORES_IF_MATCH, "If-Match")]
)
def test_collector_serve_refuses_such_a_bucket_with_a_plain_message(
    settings: Settings, proxy: FaultProxy, plan: FaultPlan, condition: str
) -> None:
    proxy.set_plan(plan)
    result = CliRunner().invoke(main, ["serve"], env=settings_environment(settings))
    assert result.exit_code == 1
    assert "refusing to start" in result.output and condition in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_bucket_at_start_answers_503_then_recovers(
    settings: Settings, proxy: FaultProxy, moto_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.set_plan(UNREACHABLE)
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as client:
        answer = client.post(URL, json=BODY)
        assert answer.status_code == 503 and "Retry-After" in answer.headers
        assert client.get("/healthz").status_code == 503
        assert stored_participant_objects(settings, moto_endpoint) == []

        proxy.set_plan(FaultPlan())  # the bucket is back
        deadline = time.monotonic() + 20
        while client.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "never recovered"
            time.sleep(0.2)
        assert client.post(URL, json=BODY).status_code == 200
    assert "Cannot reach the bucket" in caplog.text
    assert len(stored_participant_objects(settings, moto_endpoint)) == 2  # status and submission


def test_after_an_outage_the_bucket_is_proven_again_before_any_200(
    settings: Settings, proxy: FaultProxy, moto_endpoint: str
) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.post(URL, json=BODY).status_code == 200
        proxy.set_plan(UNREACHABLE)
        assert client.post(URL, json={**BODY, "participantId": "P2"}).status_code == 503
        # Back, but now something that ignores If-None-Match answers at that address.
        proxy.set_plan(IGNORES_IF_NONE_MATCH)
        time.sleep(1.1)  # past the gate's pause between proofs
        answers = [client.post(URL, json={**BODY, "participantId": "P3"}).status_code for _ in range(3)]
        assert answers == [503, 503, 503]
        health = client.get("/healthz")
        assert health.status_code == 503 and "ignores conditional writes" in health.json()["error"]
    assert not any("/P3/" in key for key in stored_participant_objects(settings, moto_endpoint))


@pytest.mark.processes
def test_collector_serve_starts_on_an_unreachable_bucket_and_recovers(
    settings: Settings, proxy: FaultProxy, tmp_path: Path
) -> None:
    """The real command: it must not stop (R2 may hiccup during a deploy), nor acknowledge early."""
    proxy.set_plan(UNREACHABLE)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "collector", "serve"],
            env=collector_environment(settings, port),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:  # up, answering 503
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                try:
                    health = httpx.get(url + "/healthz", timeout=2)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            assert health.status_code == 503
            assert httpx.post(url + URL, json=BODY, timeout=10).status_code == 503
            proxy.set_plan(FaultPlan())
            wait_until_healthy(process, url, 30, log_hint=log.read_text())
            assert httpx.post(url + URL, json=BODY, timeout=10).status_code == 200
        finally:
            terminate(process)
    assert "Bucket not reachable yet" in log.read_text()
