"""The per-process status cache over HTTP, on the local folder and on S3 (moto).

It may save storage requests, never change an outcome: request counts on the common path; two
apps over one store (two collector processes) end exactly as two apps without the cache; an
erasure, a key release, a new claim made elsewhere; a forged key; a retry after a half-done upload.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.erasure import erase_participant
from collector.errors import ParticipantErased
from collector.keys import KeyLayout
from collector.participant_keys import HASH_FIELD, key_hash, release_key
from collector.settings import Settings
from collector.status_cache import StatusCache
from collector.storage import AlreadyExists, ObjectStore, StorageError, open_store
from collector.tombstone import CONFIRM_WINDOW_SECONDS
from collector.verify import verify_bucket
from tests.support.counting_store import CountingStore
from tests.support.fake_clock import FakeClock
from tests.support.settings import local_settings, s3_settings

URL = "/api/upload-user-data"
KEY = "k" * 10 + "A1b2C3d4E5f6G7"
NEW_KEY = "new-device-key-00000000"
FORGED = "attacker-key-0000000000"


def stamp(second: int) -> str:
    return f"2026-03-01T10:{second // 60:02d}:{second % 60:02d}.000Z"


def status_upload(pid: str, second: int, key: str | None = KEY, **extra: Any) -> dict[str, Any]:
    body = {"participantId": pid, "uploadType": "status", "timestamp": stamp(second), "step": second}
    if key is not None:
        body["participantKey"] = key
    return {**body, **extra}


def submission(pid: str, second: int, key: str | None = KEY, **extra: Any) -> dict[str, Any]:
    body = {
        "participantId": pid,
        "uploadType": "submission",
        "timestamp": stamp(second),
        "uploadId": f"{pid}-sub-{second}",
        "submissionData": {"answers": [second]},
    }
    if key is not None:
        body["participantKey"] = key
    return {**body, **extra}


def trial(pid: str, index: int, key: str | None = KEY) -> dict[str, Any]:
    body = {
        "participantId": pid,
        "uploadType": "trial",
        "sessionId": "run-A",
        "trialIndex": index,
        "trialData": {"rt": 400 + index},
        "uploadId": f"{pid}-trial-{index}",
        "timestamp": stamp(index),
    }
    if key is not None:
        body["participantKey"] = key
    return body


class SharedStore(CountingStore):
    """Counts requests; leaves the shared store open when one app shuts down."""

    def close(self) -> None:
        pass


class Collector:
    """One collector "process": an app with its own status cache over a (shared) store."""

    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.counting = SharedStore(store)
        self.app = create_app(settings, store=self.counting)
        self.clock = FakeClock(start=1000.0)
        uploads = self.app.state.services.uploads
        if uploads.status_cache is not None:  # same size, a clock the test moves
            uploads.status_cache = StatusCache(settings.status_cache_size, clock=self.clock)
        self.client = TestClient(self.app)
        self.client.__enter__()

    def post(self, body: dict[str, Any]) -> Any:
        return self.client.post(URL, json=body)

    def requests(self, body: dict[str, Any]) -> tuple[Any, dict[str, int]]:
        """Post ``body``; the answer and the storage requests it cost, by operation."""
        self.counting.reset()
        answer = self.post(body)
        return answer, dict(self.counting.counts)

    def close(self) -> None:
        self.client.__exit__(None, None, None)


def fresh_settings(settings: Settings, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of the same backend over a new, empty store (another folder or bucket)."""
    overrides = {"rate_limit_per_minute": 0, **overrides}
    if settings.storage_kind == "s3":
        assert settings.s3_endpoint_url is not None
        return s3_settings(settings.s3_endpoint_url, **overrides)
    return local_settings(tmp_path / uuid.uuid4().hex, **overrides)


@pytest.fixture
def world(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, ObjectStore, KeyLayout]]:
    """A fresh store with the cache on, and the settings to open collectors over it."""
    own = fresh_settings(settings, tmp_path)
    store = open_store(own)
    yield own, store, KeyLayout(own.data_prefix)
    store.close()


@pytest.fixture
def collectors(world: tuple[Settings, ObjectStore, KeyLayout]) -> Iterator[list[Collector]]:
    """Two collector processes over the same store."""
    own, store, _ = world
    made = [Collector(own, store), Collector(own, store)]
    yield made
    for collector in made:
        collector.close()


def everything(store: ObjectStore, layout: KeyLayout) -> dict[str, bytes]:
    return {info.key: store.get(info.key).body for info in store.list(f"{layout.prefix}/")}


def status_of(store: ObjectStore, layout: KeyLayout, pid: str) -> dict[str, Any]:
    return json.loads(store.get(layout.status_key(pid)).body)


# --- Requests on the common path --------------------------------------------------------------


def test_common_path_costs_one_request_per_status_two_per_submission_one_per_trial(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout]
) -> None:
    _, store, layout = world
    collector = collectors[0]
    status_key = layout.status_key("C1")
    costs = {}
    # First upload of a participant: no read, status create then submission.
    answer, costs["first submission"] = collector.requests(submission("C1", 1))
    assert answer.status_code == 200 and costs["first submission"] == {"put": 2}
    assert collector.counting.requests == [("put", status_key), ("put", answer.json()["filesUploaded"][1])]
    collector.counting.reset()
    answer, costs["status"] = collector.requests(status_upload("C1", 2))
    assert answer.status_code == 200 and "statusSuperseded" not in answer.json()
    assert costs["status"] == {"put": 1}
    answer, costs["submission"] = collector.requests(submission("C1", 3))
    assert answer.status_code == 200 and costs["submission"] == {"put": 2}
    assert answer.json()["filesUploaded"][0] == status_key
    answer, costs["trial"] = collector.requests(trial("C1", 0))
    assert answer.status_code == 200 and costs["trial"] == {"put": 1}
    assert "keyVerified" not in answer.json()
    # What the cached path stored is what the uncached one would have stored.
    assert status_of(store, layout, "C1")["timestamp"] == stamp(3)
    assert status_of(store, layout, "C1")[HASH_FIELD] == key_hash("C1", KEY)
    assert json.loads(store.get(answer.json()["filesUploaded"][0]).body)["trialData"] == {"rt": 400}
    # Trials of a participant with no status yet: the first reads, the next ones do not.
    _, costs["first trial, new participant"] = collector.requests(trial("T9", 0))
    _, costs["next trial"] = collector.requests(trial("T9", 1))
    # (and a listing: a participant with no status and never met here may be a new one)
    assert costs["first trial, new participant"] == {"get": 1, "list": 1, "put": 1}
    assert costs["next trial"] == {"put": 1}
    print("storage requests per upload with a warm cache:", costs)


def test_answers_that_write_no_status_are_confirmed_by_a_read(collectors: list[Collector]) -> None:
    collector = collectors[0]
    assert collector.post(status_upload("C2", 10)).status_code == 200
    # Older than the stored status: superseded, decided from a fresh read (one GET, no write).
    answer, cost = collector.requests(status_upload("C2", 5))
    assert answer.json().get("statusSuperseded") is True and cost == {"get": 1}
    # An older submission is still stored in full (read, submission).
    answer, cost = collector.requests(submission("C2", 6))
    assert answer.status_code == 200 and answer.json().get("statusSuperseded") is True
    assert cost == {"get": 1, "put": 1}


# --- New participants: status.json created first, without a read -------------------------------


def test_a_new_participants_submission_costs_two_requests_and_a_status_upload_one(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout]
) -> None:
    _, store, layout = world
    collector = collectors[0]
    for pid, key in (("NEW1", KEY), ("NEW2", None)):
        collector.counting.reset()
        answer = collector.post(submission(pid, 1, key=key))
        status_key, submission_key = answer.json()["filesUploaded"]
        assert answer.status_code == 200 and status_key == layout.status_key(pid)
        # Status first (an erasure fails it before anything is stored), then the submission.
        assert collector.counting.requests == [("put", status_key), ("put", submission_key)]
        assert json.loads(store.get(submission_key).body)["submissionData"] == {"answers": [1]}
    assert status_of(store, layout, "NEW1")[HASH_FIELD] == key_hash("NEW1", KEY)  # claimed
    assert HASH_FIELD not in status_of(store, layout, "NEW2")
    answer, cost = collector.requests(status_upload("NEW3", 1))
    assert answer.status_code == 200 and cost == {"put": 1}
    assert status_of(store, layout, "NEW3")["step"] == 1


def test_a_participant_stored_elsewhere_is_decided_by_the_read_after_a_refused_create(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout]
) -> None:
    """The other process has never met these participants: its create is refused, it reads."""
    _, store, layout = world
    first, second = collectors
    for pid in ("X1", "X2", "X3", "X4"):
        assert first.post(submission(pid, 10)).status_code == 200
    erase_participant(store, layout, "X1", who="cli", reason="withdrew", settle_seconds=0)  # nothing races it
    before = everything(store, layout)
    # Erased: 410 for the key holder, stored nothing.
    answer, cost = second.requests(submission("X1", 20))
    assert answer.status_code == 410 and cost == {"put": 1, "get": 1}
    # Claimed by another key: a status upload is refused, a submission kept as unverified.
    answer, cost = second.requests(status_upload("X2", 20, key=FORGED))
    assert answer.status_code == 403 and cost == {"put": 1, "get": 1}
    assert everything(store, layout) == before
    answer = second.post(submission("X2", 21, key=FORGED))
    assert answer.status_code == 200 and answer.json()["keyVerified"] is False
    assert status_of(store, layout, "X2")["timestamp"] == stamp(10)
    # Older than the stored status: superseded, nothing written.
    answer, cost = second.requests(status_upload("X3", 5))
    assert answer.json().get("statusSuperseded") is True and cost == {"put": 1, "get": 1}
    # Newer, with the key: read, then the swap and the submission (4; the next one costs 2).
    answer, cost = second.requests(submission("X4", 20))
    assert answer.status_code == 200 and cost == {"put": 3, "get": 1}
    assert status_of(store, layout, "X4")["timestamp"] == stamp(20)
    assert second.requests(submission("X4", 21))[1] == {"put": 2}


class RacingCreateStore(SharedStore):
    """Refuses the first create of each ``status.json`` as S3 does a racing one (409), unwritten."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.refused: set[str] = set()

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        if if_absent and key.endswith("/status.json") and key not in self.refused:
            self.refused.add(key)
            self._count("put", key)
            raise AlreadyExists(key)
        return super().put(key, body, if_absent=if_absent, if_match=if_match)


def test_a_refused_create_that_left_nothing_is_read_back_and_the_participant_created(
    settings: Settings, tmp_path: Path
) -> None:
    own = fresh_settings(settings, tmp_path, rate_limit_per_minute=10_000, new_participants_per_hour=1)
    store = open_store(own)
    layout = KeyLayout(own.data_prefix)
    racing = RacingCreateStore(store)
    try:
        with TestClient(create_app(own, store=racing)) as client:
            answer = client.post(URL, json=submission("RC1", 1))
            assert answer.status_code == 200, answer.text
            assert [op for op, _ in racing.requests] == ["put", "get", "put", "put"]
            assert status_of(store, layout, "RC1")[HASH_FIELD] == key_hash("RC1", KEY)
            # The token given back on the refusal was taken again once: the cap of 1 is spent.
            assert client.post(URL, json=status_upload("RC2", 1)).status_code == 429
    finally:
        store.close()


def test_the_new_participant_cap_counts_only_created_participants(settings: Settings, tmp_path: Path) -> None:
    own = fresh_settings(settings, tmp_path, rate_limit_per_minute=10_000, new_participants_per_hour=2)
    store = open_store(own)
    try:
        elsewhere = Collector(own.model_copy(update={"rate_limit_per_minute": 0}), store)  # no cap
        for pid in ("K1", "K2", "K3"):
            assert elsewhere.post(status_upload(pid, 1)).status_code == 200
        elsewhere.close()
        here = Collector(own, store)
        # Known participants, met here for the first time: each create is refused, its token returned.
        assert [here.post(status_upload(pid, 2)).status_code for pid in ("K1", "K2", "K3")] == [200] * 3
        assert [here.post(submission(f"M{n}", 3)).status_code for n in range(3)] == [200, 200, 429]
        assert not list(store.list(KeyLayout(own.data_prefix).participant_dir("M2")))
        # With the cap spent, a known participant not in the cache is still served (it reads).
        here.app.state.services.uploads.status_cache = StatusCache(10, clock=here.clock)
        assert here.post(submission("K1", 4)).status_code == 200
        assert here.post(status_upload("M3", 4)).status_code == 429
        here.close()
    finally:
        store.close()


# --- A forged key ------------------------------------------------------------------------------


def test_a_forged_key_from_a_warm_cache_is_refused_exactly_as_without_it(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout]
) -> None:
    _, store, layout = world
    collector = collectors[0]
    assert collector.post(submission("F1", 1)).status_code == 200
    assert collector.post(status_upload("F1", 2)).status_code == 200  # warm: written here
    before = everything(store, layout)
    answer, cost = collector.requests(status_upload("F1", 3, key=FORGED))
    assert answer.status_code == 403 and answer.json()["reason"] == "participant-key"
    assert cost == {"get": 1}  # confirmed by a read, nothing written
    answer, cost = collector.requests(status_upload("F1", 4, key=None))
    assert answer.status_code == 403
    assert everything(store, layout) == before
    answer, cost = collector.requests(submission("F1", 5, key=FORGED))
    assert answer.status_code == 200 and answer.json()["keyVerified"] is False
    assert cost == {"get": 1, "put": 1}
    stored = answer.json()["filesUploaded"]
    assert len(stored) == 1 and json.loads(store.get(stored[0]).body)["keyVerified"] is False
    answer = collector.post(trial("F1", 1, key=FORGED))
    assert answer.json()["keyVerified"] is False
    assert status_of(store, layout, "F1")["timestamp"] == stamp(2)  # unchanged throughout
    # The right key still works from the cache afterwards.
    answer, cost = collector.requests(status_upload("F1", 6))
    assert answer.status_code == 200 and cost == {"put": 1}


# --- Erasure by another process ----------------------------------------------------------------


@pytest.mark.parametrize("upload", ["status", "submission", "trial"])
def test_an_erasure_elsewhere_makes_the_next_upload_410_storing_nothing(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout], upload: str
) -> None:
    _, store, layout = world
    collector = collectors[0]
    assert collector.post(submission("E1", 1)).status_code == 200
    assert collector.post(status_upload("E1", 2)).status_code == 200
    assert collector.post(trial("E1", 0)).status_code == 200
    # Another process; nothing races it, so it skips the settle wait (the cache's clock moves below).
    erase_participant(store, layout, "E1", who="cli", reason="withdrew", settle_seconds=0)
    # A trial's cached decision is only good for the freshness window; past it, it reads.
    collector.clock.now += collector.app.state.services.uploads.trial_fresh_seconds + 1
    before = everything(store, layout)
    body = {"status": status_upload("E1", 3), "submission": submission("E1", 3), "trial": trial("E1", 1)}
    answer = collector.post(body[upload])
    assert answer.status_code == 410 and answer.json()["reason"] == "erased"
    assert everything(store, layout) == before
    assert verify_bucket(store, layout).ok


def test_erased_participant_with_a_cold_trial_cache_stores_nothing_at_all(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout]
) -> None:
    """Status and submissions go through the swap: they never need the freshness window."""
    _, store, layout = world
    collector = collectors[0]
    assert collector.post(submission("E2", 1)).status_code == 200
    erase_participant(store, layout, "E2", who="cli", reason="withdrew", settle_seconds=0)
    before = everything(store, layout)
    for body in (submission("E2", 2), status_upload("E2", 3), submission("E2", 4)):
        assert collector.post(body).status_code == 410
    assert everything(store, layout) == before


def test_a_warm_trial_cache_lands_nothing_once_an_erasure_elsewhere_returns(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout]
) -> None:
    """The erasure fence (collector.tombstone): the erasure outlasts every cached confirmation."""
    _, store, layout = world
    collector = collectors[0]
    assert collector.post(status_upload("E3", 1)).status_code == 200
    erase_participant(store, layout, "E3", who="cli", reason="withdrew", settle_seconds=0)
    # A real erasure spends ERASURE_SETTLE_SECONDS after its tombstone: the cache's clock sees them pass.
    collector.clock.now += Settings.model_fields["erasure_settle_seconds"].default
    before = everything(store, layout)
    assert collector.post(trial("E3", 0)).status_code == 410
    assert collector.post(status_upload("E3", 2)).status_code == 410
    assert everything(store, layout) == before
    assert verify_bucket(store, layout).ok


def test_a_trial_written_past_the_window_confirms_and_withdraws_itself(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout]
) -> None:
    """A write that completes later than the window after its confirmation reads status again."""
    _, store, layout = world
    collector = collectors[0]
    assert collector.post(status_upload("E4", 1)).status_code == 200
    services = collector.app.state.services
    decided = services.uploads.states.fresh("E4", services.uploads.trial_fresh_seconds)  # from the cache
    assert decided is not None
    written = layout.trial_key("E4", "run-1", 0)
    store.put(written, b"{}")  # the trial lands...
    erase_participant(store, layout, "E4", who="cli", reason="withdrew", settle_seconds=0)
    store.put(written, b"{}")  # ...and, slower than the window, again after the erasure
    collector.clock.now += CONFIRM_WINDOW_SECONDS + 0.1
    with pytest.raises(ParticipantErased):
        asyncio.run(services.uploads.confirm_not_erased("E4", decided.confirmed_at, [written]))
    assert [info.key for info in store.list(layout.participant_dir("E4"))] == [layout.status_key("E4")]


# --- Key release and a new claim elsewhere ----------------------------------------------------


def test_a_key_release_elsewhere_lets_the_old_key_claim_again_as_without_the_cache(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout]
) -> None:
    _, store, layout = world
    collector = collectors[0]
    assert collector.post(status_upload("R1", 1)).status_code == 200
    release_key(store, layout, "R1", reason="new laptop", by="cli")
    answer, cost = collector.requests(status_upload("R1", 2))
    assert answer.status_code == 200
    assert cost == {"put": 2, "get": 1}  # the swap on the old ETag failed: read, decide, swap
    assert status_of(store, layout, "R1")[HASH_FIELD] == key_hash("R1", KEY)


def test_after_a_release_and_a_new_claim_elsewhere_the_old_key_is_refused(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout]
) -> None:
    _, store, layout = world
    here, there = collectors
    assert here.post(submission("R2", 1)).status_code == 200
    assert here.post(status_upload("R2", 2)).status_code == 200  # warm, with the old key's hash
    release_key(store, layout, "R2", reason="new laptop", by="cli")
    assert there.post(status_upload("R2", 3, key=NEW_KEY)).status_code == 200  # claims anew
    before = status_of(store, layout, "R2")
    answer = here.post(status_upload("R2", 4))
    assert answer.status_code == 403 and answer.json()["reason"] == "participant-key"
    answer = here.post(submission("R2", 5))
    assert answer.status_code == 200 and answer.json()["keyVerified"] is False
    assert status_of(store, layout, "R2") == before
    # A trial reads once its freshness window is over (within it, see the erasure case above).
    here.clock.now += here.app.state.services.uploads.trial_fresh_seconds + 1
    assert here.post(trial("R2", 0)).json()["keyVerified"] is False
    assert here.post(status_upload("R2", 6, key=NEW_KEY)).status_code == 200


@pytest.mark.parametrize("upload", ["status", "submission", "trial"])
def test_the_new_key_claimed_elsewhere_is_accepted_though_the_cache_holds_the_old_hash(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout], upload: str
) -> None:
    """A cached "wrong key" writes nothing to confirm it: it is confirmed by a read first."""
    _, store, layout = world
    here, there = collectors
    assert here.post(status_upload("R3", 1)).status_code == 200  # warm, with the old key's hash
    release_key(store, layout, "R3", reason="new laptop", by="cli")
    assert there.post(status_upload("R3", 2, key=NEW_KEY)).status_code == 200
    body = {
        "status": status_upload("R3", 3, key=NEW_KEY),
        "submission": submission("R3", 3, key=NEW_KEY),
        "trial": trial("R3", 0, key=NEW_KEY),
    }[upload]
    answer = here.post(body)
    assert answer.status_code == 200 and "keyVerified" not in answer.json()
    stored = [json.loads(store.get(key).body) for key in answer.json()["filesUploaded"]]
    assert all(document.get("keyVerified", True) is True for document in stored)
    assert status_of(store, layout, "R3")[HASH_FIELD] == key_hash("R3", NEW_KEY)


# --- Two processes ------------------------------------------------------------------------------


def alternating_run() -> list[tuple[int, dict[str, Any]]]:
    """Uploads for two participants, sent by collector 0 or 1 in turn, some of them late."""
    steps: list[tuple[int, dict[str, Any]]] = []
    for round_ in range(6):
        for pid in ("A1", "A2"):
            second = 10 * round_ + 10
            steps.append((round_ % 2, status_upload(pid, second + 1)))
            steps.append(((round_ + 1) % 2, submission(pid, second + 2)))
            steps.append((round_ % 2, submission(pid, second + 2, uploadId=f"{pid}-same-second-{round_}")))
            steps.append(((round_ + 1) % 2, status_upload(pid, second - 5)))  # arrives late
            steps.append((round_ % 2, trial(pid, round_)))
            steps.append(((round_ + 1) % 2, submission(pid, second + 2)))  # a retry
    steps.append((0, status_upload("A1", 100, key=FORGED)))
    steps.append((1, submission("A2", 101, key=None)))
    return steps


def run_two_collectors(settings: Settings, steps: list[tuple[int, dict[str, Any]]]) -> tuple[Any, ...]:
    store = open_store(settings)
    layout = KeyLayout(settings.data_prefix)
    collectors = [Collector(settings, store), Collector(settings, store)]
    try:
        answers = []
        for which, body in steps:
            answer = collectors[which].post(body)
            answers.append((answer.status_code, answer.json()))
        requests = sum(c.counting.total for c in collectors)
        stored = {
            key: _without_receipt(body)
            for key, body in everything(store, layout).items()
            if "/audit/" not in key
        }
        return answers, stored, requests
    finally:
        for collector in collectors:
            collector.close()
        store.close()


def _without_receipt(body: bytes) -> Any:
    document = json.loads(body)
    document.pop("serverReceivedAt", None)  # the only field that differs between two runs
    return document


def test_two_processes_end_exactly_as_without_the_cache(settings: Settings, tmp_path: Path) -> None:
    steps = alternating_run()
    cached = run_two_collectors(fresh_settings(settings, tmp_path), steps)
    uncached = run_two_collectors(fresh_settings(settings, tmp_path, status_cache_size=0), steps)
    assert cached[0] == uncached[0]  # every answer, in order
    assert cached[1] == uncached[1]  # every stored object
    submissions = [key for key in cached[1] if "/submissions/" in key]
    assert len(submissions) == 2 * 6 * 2 + 1  # each submission exactly once, retries recognised
    print(f"two processes alternating: {cached[2]} storage requests with the cache, {uncached[2]} without")


def test_newest_status_wins_across_processes_with_warm_caches(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout]
) -> None:
    _, store, layout = world
    first, second = collectors
    assert first.post(status_upload("N1", 10)).status_code == 200
    assert second.post(status_upload("N1", 20)).status_code == 200
    # ``first`` still remembers second 10: its stale swap fails, it reads, and an older one loses.
    answer, cost = first.requests(status_upload("N1", 15))
    assert answer.json().get("statusSuperseded") is True and cost == {"put": 1, "get": 1}
    assert status_of(store, layout, "N1")["timestamp"] == stamp(20)
    answer, cost = first.requests(status_upload("N1", 25))
    assert "statusSuperseded" not in answer.json() and cost == {"put": 1}  # it read: warm again


def test_concurrent_uploads_in_one_process_store_each_submission_once(
    collectors: list[Collector], world: tuple[Settings, ObjectStore, KeyLayout]
) -> None:
    _, store, layout = world
    collector = collectors[0]
    assert collector.post(status_upload("M1", 0)).status_code == 200
    lock = threading.Lock()
    codes: list[int] = []

    def send(second: int) -> None:
        body = submission("M1", second) if second % 2 else status_upload("M1", second)
        code = collector.post(body).status_code
        with lock:
            codes.append(code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, range(1, 81)))
    assert codes == [200] * 80
    assert len(list(store.list(layout.submissions_dir("M1")))) == 40
    assert status_of(store, layout, "M1")["timestamp"] == stamp(80)


# --- A retry after a half-done upload ---------------------------------------------------------


class SubmissionsDown(SharedStore):
    """Fails every submission write while ``down`` (a store that refuses, not a slow one)."""

    down = False

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        if self.down and "/submissions/" in key:
            raise StorageError("injected: the store refused the write")
        return super().put(key, body, if_absent=if_absent, if_match=if_match)


def test_a_retry_after_the_status_was_swapped_but_the_submission_failed_stores_it_once(
    world: tuple[Settings, ObjectStore, KeyLayout],
) -> None:
    own, store, layout = world
    flaky = SubmissionsDown(store)
    with TestClient(create_app(own, store=flaky)) as client:
        assert client.post(URL, json=status_upload("H1", 1)).status_code == 200  # warm
        flaky.down = True
        failed = client.post(URL, json=submission("H1", 2))
        assert failed.status_code == 503  # the status was swapped first; the submission was not stored
        assert list(store.list(layout.submissions_dir("H1"))) == []
        flaky.down = False
        for _ in range(2):  # the client's retry, then a duplicate of it
            retried = client.post(URL, json=submission("H1", 2))
            assert retried.status_code == 200 and "statusSuperseded" not in retried.json()
    stored = list(store.list(layout.submissions_dir("H1")))
    assert len(stored) == 1
    assert json.loads(store.get(stored[0].key).body)["submissionData"] == {"answers": [2]}
    assert status_of(store, layout, "H1")["timestamp"] == stamp(2)


# --- The cache itself ---------------------------------------------------------------------------


def test_the_cache_is_bounded_and_forgets_only_the_etag_it_was_told() -> None:
    clock = FakeClock(start=1000.0)
    cache = StatusCache(3, clock=clock)
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    for pid in ("P1", "P2", "P3"):
        cache.remember(pid, f"etag-{pid}", None, moment)
    assert cache.get("P1") is not None  # now the most recently used
    cache.remember("P4", "etag-P4", None, moment)
    assert cache.get("P2") is None and len(cache) == 3  # the least recently used went
    cache.forget("P1", "another-etag")  # a newer entry than the failed swap saw stays
    assert cache.get("P1") is not None
    cache.forget("P1", "etag-P1")
    assert cache.get("P1") is None
    assert cache.fresh("P3", 5.0) is not None
    clock.now += 6
    assert cache.fresh("P3", 5.0) is None and cache.get("P3") is not None
    with pytest.raises(ValueError):
        StatusCache(0)


def test_status_cache_size_zero_reads_before_every_upload(settings: Settings, tmp_path: Path) -> None:
    own = fresh_settings(settings, tmp_path, status_cache_size=0)
    store = open_store(own)
    collector = Collector(own, store)
    try:
        assert collector.app.state.services.uploads.status_cache is None
        assert collector.post(status_upload("Z1", 1)).status_code == 200
        assert collector.requests(status_upload("Z1", 2))[1] == {"get": 1, "put": 1}
        assert collector.requests(submission("Z1", 3))[1] == {"get": 1, "put": 2}
        assert collector.requests(trial("Z1", 0))[1] == {"get": 1, "put": 1}
    finally:
        collector.close()
        store.close()
