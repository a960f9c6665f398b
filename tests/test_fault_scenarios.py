"""Fault scenarios, small: real collector processes, S3 through a fault-injecting proxy, browser-like
clients; every acknowledged upload must be stored once with its content (``bench/reliability.py``
runs the same scenarios large)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.keys import KeyLayout
from collector.storage import MemoryStore
from tests.faults.clients import RetryPolicy, make_uploads
from tests.faults.scenarios import Size, run_scenario, scenario_ids
from tests.faults.verdict import judge

pytestmark = [pytest.mark.slow, pytest.mark.processes]

SMALL = Size(
    uploads=80, participants=12, concurrency=8, policy=RetryPolicy(max_delay=0.5, give_up_seconds=60)
)


SCENARIOS = [pytest.param(name, backend, id=f"{name}-{backend}") for name, backend in scenario_ids()]


@pytest.mark.parametrize(("name", "backend"), SCENARIOS)
def test_no_acknowledged_upload_lost_or_duplicated(
    name: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    moto = request.getfixturevalue("moto_endpoint") if backend == "s3" else None
    result = run_scenario(name, backend, workdir=tmp_path, moto_endpoint=moto, size=SMALL)
    verdict, stats = result.verdict, result.stats
    assert result.exercised, "the scenario injected no fault"
    assert verdict.problems == []
    assert (verdict.lost, verdict.duplicated, verdict.partial, verdict.stale_status) == (0, 0, 0, 0)
    assert verdict.acknowledged == verdict.stored == SMALL.uploads  # the clients retried until stored
    assert (stats.abandoned, stats.rejected, stats.answers[500]) == (0, 0, 0)
    if name in ("storage-outage", "collector-sigkill", "answers-lost"):
        # These must reach the clients (elsewhere the collector's own retries may absorb them all).
        assert stats.retries > 0
    assert result.log_leaks == []  # no stack trace or storage credential in the collector's log
    if name == "storage-outage":
        assert stats.answers[503] > 0  # the outage outlasted the deadline: 503s, not 500s or hangs


def test_the_verdict_finds_lost_duplicated_stale_and_partial_objects() -> None:
    """The harness can fail: a store missing, doubling and corrupting uploads is caught."""
    layout, store = KeyLayout("p"), MemoryStore()
    uploads = make_uploads(4, participants=1, prefix="V", submission_share=1.0)
    for upload in uploads:
        upload.outcome = "acknowledged"
    first, second, third, _fourth = uploads  # fourth is never stored
    documents = {u.upload_id: json.loads(u.body or b"") for u in uploads}
    for number, upload in enumerate((first, second, second), start=1):  # second stored twice
        key = f"p/participants/V00000/submissions/V00000_Complete_2025-11-19_14-00-00_{number + 1}.json"
        store.put(key, json.dumps(documents[upload.upload_id]).encode())
        upload.stored_key = upload.stored_key or key
    third.stored_key = "p/participants/V00000/submissions/V00000_Complete_2025-11-19_14-00-00_9.json"
    store.put(third.stored_key, b'{"participantId": "V00000", "upl')  # cut short
    status = {k: v for k, v in documents[first.upload_id].items() if k != "submissionData"}
    store.put(layout.status_key("V00000"), json.dumps({**status, "serverReceivedAt": "x"}).encode())
    verdict = judge(store, layout, uploads)
    assert verdict.duplicated == 1
    assert verdict.lost == 2  # third (only a partial object) and fourth (nothing)
    assert verdict.partial == 1
    assert verdict.stale_status == 1  # status.json is first's, older than fourth's acknowledgement
    assert not verdict.ok
