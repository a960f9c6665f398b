"""Several collector processes sharing one store stay exactly-once (docs/bucket-layout.md §7)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.collector_process import CollectorProcess
from tests.support.settings import local_settings

pytestmark = pytest.mark.processes

URL = "/api/upload-user-data"


@pytest.fixture
def two_collectors(settings: Settings, tmp_path: Path) -> Iterator[list[str]]:
    """Two separate collector processes over the same folder or bucket."""
    processes = [CollectorProcess(settings, log_path=tmp_path / f"collector-{n}.log") for n in range(2)]
    yield [p.url for p in processes]
    for process in processes:
        process.stop()


def post_all(bodies: list[dict], urls: list[str]) -> list[httpx.Response]:
    """Send every body at once, alternating between the collectors."""
    with httpx.Client(timeout=60) as http, ThreadPoolExecutor(len(bodies)) as pool:
        return list(
            pool.map(lambda n: http.post(urls[n % len(urls)] + URL, json=bodies[n]), range(len(bodies)))
        )


def test_twenty_same_second_submissions_become_twenty_objects(
    two_collectors: list[str], store: ObjectStore, layout: KeyLayout
) -> None:
    bodies = [
        {
            "participantId": "RACE1",
            "timestamp": "2025-11-19T14:30:45.000Z",
            "uploadType": "submission",
            "uploadId": f"sub-{n}",
            "submissionData": {"n": n},
        }
        for n in range(20)
    ]
    answers = post_all(bodies, two_collectors)
    assert [a.status_code for a in answers] == [200] * 20
    keys = [info.key for info in store.list(layout.submissions_dir("RACE1"))]
    assert len(keys) == 20
    stored = sorted(json.loads(store.get(k).body)["submissionData"]["n"] for k in keys)
    assert stored == list(range(20))
    assert sorted(a.json()["filesUploaded"][-1] for a in answers) == keys


def test_forty_racing_status_uploads_end_at_the_newest(
    two_collectors: list[str], store: ObjectStore, layout: KeyLayout
) -> None:
    bodies = [
        {
            "participantId": "RACE2",
            "uploadType": "status",
            "timestamp": f"2025-11-19T14:{n // 60:02d}:{n % 60:02d}.000Z",
            "totalSessionsStarted": n,
        }
        for n in range(40)
    ]
    answers = post_all(bodies[::-1], two_collectors)  # newest first: most arrive late and older
    assert [a.status_code for a in answers] == [200] * 40
    status = json.loads(store.get(layout.status_key("RACE2")).body)
    assert status["totalSessionsStarted"] == 39
    assert status["timestamp"] == "2025-11-19T14:00:39.000Z"


def test_retries_racing_across_processes_store_one_submission(
    two_collectors: list[str], store: ObjectStore, layout: KeyLayout
) -> None:
    body = {
        "participantId": "RACE3",
        "timestamp": "2025-11-19T14:30:45.000Z",
        "uploadType": "submission",
        "uploadId": "the-same-upload",
        "submissionData": {"answer": 42},
    }
    answers = post_all([body] * 10, two_collectors)
    assert [a.status_code for a in answers] == [200] * 10
    assert len({a.json()["filesUploaded"][-1] for a in answers}) == 1
    assert len(list(store.list(layout.submissions_dir("RACE3")))) == 1


def test_workers_setting_starts_that_many_server_processes(tmp_path: Path) -> None:
    log = tmp_path / "collector.log"
    process = CollectorProcess(local_settings(tmp_path / "data"), workers=2, log_path=log)
    try:
        bodies = [{"participantId": f"W{n}", "uploadType": "status"} for n in range(8)]
        assert [a.status_code for a in post_all(bodies, [process.url])] == [200] * 8
    finally:
        process.stop()
    assert log.read_text().count("Started server process") == 2
