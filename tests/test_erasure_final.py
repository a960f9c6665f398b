"""Erasure is final when it returns, though another process streams trials all through it.

A real collector process serves; a second process (bench/trial_flood.py) floods it with the
participant's trials; this process erases the participant meanwhile. When the erasure returns,
only the tombstone is left, and it stays so while the flood goes on (every trial after it: 410).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from collector.erasure import erase_participant
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.collector_process import REPO, CollectorProcess

pytestmark = pytest.mark.processes

KEY = "flood-key-0123456789ab"


def test_nothing_is_stored_after_the_erasure_returns_under_a_trial_flood(
    settings: Settings, store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> None:
    pid = "FLOOD1"
    settings = settings.model_copy(update={"rate_limit_per_minute": 0})
    with CollectorProcess(settings, log_path=tmp_path / "collector.log") as collector:
        claim = {"participantId": pid, "uploadType": "status", "participantKey": KEY}
        assert httpx.post(f"{collector.url}/api/upload-user-data", json=claim).status_code == 200
        flood = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "trial_flood.py"), collector.url, pid, KEY, "6", "4"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 10
            while len(list(store.list(layout.trials_dir(pid)))) < 20 and time.monotonic() < deadline:
                time.sleep(0.05)  # the flood is landing
            # The real settle wait: this is the race it is there for.
            result = erase_participant(
                store,
                layout,
                pid,
                who="test",
                reason="withdrew during the run",
                settle_seconds=settings.erasure_settle_seconds,
            )
            left_at_return = [info.key for info in store.list(layout.participant_dir(pid))]
            time.sleep(1.5)  # the flood goes on
            left_later = [info.key for info in store.list(layout.participant_dir(pid))]
        finally:
            out, _ = flood.communicate(timeout=30)
    counts = json.loads(out)
    assert counts.get("200", 0) >= 20 and counts.get("410", 0) > 0, counts
    assert set(counts) <= {"200", "410"}, counts
    assert len(result.objects) >= 20
    assert left_at_return == [layout.status_key(pid)]
    assert left_later == [layout.status_key(pid)]
    if settings.storage_kind == "local":  # the emptied folders went too
        participant = settings.local_storage_dir / layout.participant_dir(pid)
        assert sorted(p.name for p in participant.iterdir()) == ["user-status"]
