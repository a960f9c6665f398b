"""Trial uploads over HTTP on both backends: stored exactly once per (session, index), one write each.

Every test talks to the real app (TestClient, or real collector processes for the cross-process
race); the counting wrapper sits between the app and the real backend to count storage requests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.keys import MAX_TRIAL_INDEX, KeyLayout
from collector.settings import Settings
from collector.storage import (
    AlreadyExists,
    ObjectStore,
    PreconditionFailed,
    TransientStorageError,
)
from tests.support.collector_process import CollectorProcess
from tests.support.counting_store import CountingStore

URL = "/api/upload-user-data"
BATCH = "/api/upload-user-data/batch"


def trial(index: int = 0, *, pid: str = "T1", session: str = "run-A", **extra: Any) -> dict[str, Any]:
    """A trial upload as the browser module sends it (jsPsych-shaped trialData)."""
    body: dict[str, Any] = {
        "participantId": pid,
        "uploadType": "trial",
        "sessionId": session,
        "trialIndex": index,
        "trialData": {
            "rt": 512 + index,
            "stimulus": f"<p>{index}</p>",
            "response": "f",
            "trial_index": index,
        },
        "uploadId": f"trial-{session}-{index}",
        "timestamp": "2026-11-25T10:00:00.000Z",
    }
    body.update(extra)
    return body


@pytest.fixture
def counting(store: ObjectStore) -> CountingStore:
    return CountingStore(store)


@pytest.fixture
def counted_client(settings: Settings, counting: CountingStore) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store=counting)) as test_client:
        yield test_client


def stored_under(store: ObjectStore, layout: KeyLayout, pid: str) -> list[str]:
    return [info.key for info in store.list(layout.participant_dir(pid))]


def test_a_trial_is_stored_at_its_key_without_the_participant_key(
    counted_client: TestClient, counting: CountingStore, store: ObjectStore, layout: KeyLayout
) -> None:
    body = trial(7, participantKey="k" * 22, studyCondition="B")
    answer = counted_client.post(URL, json=body)
    assert answer.status_code == 200, answer.text
    key = layout.trial_key("T1", "run-A", 7)
    assert key.endswith("/participants/T1/trials/run-A/000007.json")
    assert answer.json() == {
        "status": "success",
        "participantId": "T1",
        "timestamp": "2026-11-25T10:00:00.000Z",
        "filesUploaded": [key],
    }
    assert stored_under(store, layout, "T1") == [key]  # a trial never writes status.json
    stored = json.loads(store.get(key).body)
    assert "participantKey" not in stored
    assert stored.pop("serverReceivedAt").endswith("Z")
    assert stored == {k: v for k, v in body.items() if k != "participantKey"}
    assert counting.writes == [key]
    # One write for a new trial, after the one read of status.json (erased? key verified?)
    # and, for a participant this process never met, one listing (a new participant?).
    folder = layout.participant_dir("T1")
    assert counting.requests == [("get", layout.status_key("T1")), ("list", folder), ("put", key)]


def test_a_retried_trial_is_stored_once_and_answered_with_the_same_key(
    counted_client: TestClient, counting: CountingStore, store: ObjectStore, layout: KeyLayout
) -> None:
    answers = [counted_client.post(URL, json=trial(3)) for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.json() == answers[0].json() for a in answers)  # no "duplicate": it is the same trial
    key = layout.trial_key("T1", "run-A", 3)
    assert stored_under(store, layout, "T1") == [key]
    assert counting.writes == [key]
    # Each retry costs one refused create-if-absent and one read to compare, no write.
    assert counting.count("put", key) == 4 and counting.count("get", key) == 3


def test_a_different_trial_at_a_taken_index_is_not_stored_and_the_answer_says_so(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    first = client.post(URL, json=trial(0))
    other = trial(0, uploadId="another-upload")
    other["trialData"] = {"rt": 999, "response": "j"}
    second = client.post(URL, json=other)
    assert second.status_code == 200
    assert second.json()["filesUploaded"] == first.json()["filesUploaded"]
    assert second.json()["duplicate"] is True
    assert "first" in second.json()["message"]
    stored = json.loads(store.get(layout.trial_key("T1", "run-A", 0)).body)
    assert stored["trialData"]["rt"] == 512  # first write wins


def test_the_same_trial_from_another_tab_is_not_a_duplicate(client: TestClient) -> None:
    client.post(URL, json=trial(1))
    again = client.post(URL, json=trial(1, uploadId="tab-2", timestamp="2026-11-25T10:00:09.000Z"))
    assert again.status_code == 200
    assert "duplicate" not in again.json()  # envelope (uploadId, timestamp) aside, same content


def test_twenty_tabs_racing_on_one_trial_store_it_once(
    settings: Settings, counting: CountingStore, store: ObjectStore, layout: KeyLayout
) -> None:
    """Two apps over one store (two collector instances), 20 concurrent sends of trial 5."""
    barrier = threading.Barrier(20)
    with (
        TestClient(create_app(settings, store=counting)) as one,
        TestClient(create_app(settings, store=counting)) as other,
    ):
        clients = [one, other]

        def send(n: int) -> httpx.Response:
            barrier.wait()  # all at once, as far as threads allow
            return clients[n % 2].post(URL, json=trial(5, uploadId=f"tab-{n}"))

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(send, range(20)))
    key = layout.trial_key("T1", "run-A", 5)
    assert [a.status_code for a in answers] == [200] * 20
    assert {a.json()["filesUploaded"][0] for a in answers} == {key}
    assert not any(a.json().get("duplicate") for a in answers)
    assert stored_under(store, layout, "T1") == [key]
    assert counting.writes == [key]  # 20 sends, one write
    assert json.loads(store.get(key).body)["uploadId"] in {f"tab-{n}" for n in range(20)}


@pytest.mark.processes
def test_two_collector_processes_racing_store_each_trial_once(
    settings: Settings, store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> None:
    """Real processes, real sockets: 20 sends of each of 5 trials spread over two collectors."""
    with (
        CollectorProcess(settings, log_path=tmp_path / "a.log") as one,
        CollectorProcess(settings, log_path=tmp_path / "b.log") as two,
    ):
        urls = [one.url, two.url]
        sends = [(n, index) for index in range(5) for n in range(20)]
        with httpx.Client(timeout=60) as http, ThreadPoolExecutor(20) as pool:
            answers = list(
                pool.map(
                    lambda s: http.post(urls[s[0] % 2] + URL, json=trial(s[1], uploadId=f"tab-{s[0]}")),
                    sends,
                )
            )
    assert [a.status_code for a in answers] == [200] * len(sends)
    assert stored_under(store, layout, "T1") == [layout.trial_key("T1", "run-A", i) for i in range(5)]


def test_a_batch_of_trials_and_submissions_is_answered_item_by_item(
    counted_client: TestClient, counting: CountingStore, store: ObjectStore, layout: KeyLayout
) -> None:
    bad = trial(2)
    bad["trialData"] = ["not", "an", "object"]
    uploads = [
        trial(0),
        {"participantId": "T1", "uploadType": "submission", "sessionId": "run-A", "submissionData": {"n": 1}},
        trial(1),
        bad,
        trial(0),  # the queue sent it again
        trial(0, session="run-B"),
    ]
    answer = counted_client.post(BATCH, json={"uploads": uploads})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["httpStatus"] for r in results] == [200, 200, 200, 422, 200, 200]
    assert [r["index"] for r in results] == list(range(6))
    assert results[0]["filesUploaded"] == [layout.trial_key("T1", "run-A", 0)]
    assert results[4]["filesUploaded"] == results[0]["filesUploaded"]
    assert results[0]["uploadId"] == "trial-run-A-0"
    assert "trialData" in results[3]["error"]
    keys = stored_under(store, layout, "T1")
    trials = [k for k in keys if "/trials/" in k]
    assert trials == [
        layout.trial_key("T1", "run-A", 0),
        layout.trial_key("T1", "run-A", 1),
        layout.trial_key("T1", "run-B", 0),
    ]
    assert sum(1 for k in keys if "/submissions/" in k) == 1
    assert all(counting.writes.count(k) == 1 for k in trials)


def test_storage_writes_per_trial_over_a_run_with_retries(
    counted_client: TestClient, counting: CountingStore, layout: KeyLayout
) -> None:
    """30 trials, the first 10 also sent again in a batch: at most one write per trial."""
    for index in range(30):
        assert counted_client.post(URL, json=trial(index)).status_code == 200
    again = counted_client.post(BATCH, json={"uploads": [trial(i) for i in range(10)]})
    assert all(r["httpStatus"] == 200 for r in again.json()["results"])
    trial_keys = {layout.trial_key("T1", "run-A", i) for i in range(30)}
    assert len(counting.writes) == 30 and set(counting.writes) == trial_keys
    assert counting.count("put") == 40  # the 10 repeats tried and were refused
    # status.json is only ever read (one read per trial), never written.
    assert all(op == "get" for op, key in counting.requests if "status.json" in key)


REFUSED = [
    pytest.param({"sessionId": ""}, 422, "sessionId", id="empty-session"),
    pytest.param({"sessionId": "../../x"}, 422, "sessionId", id="session-path"),
    pytest.param({"sessionId": "a/b"}, 422, "sessionId", id="session-slash"),
    pytest.param({"sessionId": "s" * 65}, 422, "sessionId", id="session-too-long"),
    pytest.param({"sessionId": 12}, 422, "sessionId", id="session-number"),
    pytest.param({"sessionId": "é"}, 422, "sessionId", id="session-unicode"),
    pytest.param({"sessionId": None}, 422, "sessionId", id="session-missing"),
    pytest.param({"trialIndex": -1}, 422, "trialIndex", id="index-negative"),
    pytest.param({"trialIndex": MAX_TRIAL_INDEX + 1}, 422, "trialIndex", id="index-too-big"),
    pytest.param({"trialIndex": 10**30}, 422, "trialIndex", id="index-huge"),
    pytest.param({"trialIndex": 1.5}, 422, "trialIndex", id="index-float"),
    pytest.param({"trialIndex": True}, 422, "trialIndex", id="index-bool"),
    pytest.param({"trialIndex": "3"}, 422, "trialIndex", id="index-string"),
    pytest.param({"trialIndex": None}, 422, "trialIndex", id="index-missing"),
    pytest.param({"trialData": ["a"]}, 422, "trialData", id="data-list"),
    pytest.param({"trialData": "x"}, 422, "trialData", id="data-string"),
    pytest.param({"trialData": None}, 422, "trialData", id="data-missing"),
    pytest.param({"participantId": None}, 400, "participantId", id="participant-missing"),
    pytest.param({"participantId": "../T1"}, 400, "participantId", id="participant-path"),
    pytest.param({"timestamp": 12}, 422, "timestamp", id="timestamp-number"),
    pytest.param({"uploadId": ""}, 422, "uploadId", id="upload-id-empty"),
    pytest.param({"uploadId": "u" * 129}, 422, "uploadId", id="upload-id-long"),
]


@pytest.mark.parametrize(("change", "status", "names"), REFUSED)
def test_refused_trials_store_nothing(
    counted_client: TestClient,
    counting: CountingStore,
    store: ObjectStore,
    layout: KeyLayout,
    change: dict[str, Any],
    status: int,
    names: str,
) -> None:
    body = trial(4)
    for field, value in change.items():
        if value is None:
            body.pop(field)
        else:
            body[field] = value
    answer = counted_client.post(URL, json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["status"] == "error"
    assert names in answer.json()["error"]
    batch = counted_client.post(BATCH, json={"uploads": [body]})
    assert batch.json()["results"][0]["httpStatus"] == status
    assert counting.requests == []  # refused before any storage request
    assert list(store.list(layout.participants_root)) == []


def test_an_unknown_upload_type_is_still_refused(client: TestClient) -> None:
    answer = client.post(URL, json={**trial(0), "uploadType": "trials"})
    assert answer.status_code == 422


def test_highest_index_is_accepted_and_keys_stay_six_digits(client: TestClient, layout: KeyLayout) -> None:
    answer = client.post(URL, json=trial(MAX_TRIAL_INDEX))
    assert answer.status_code == 200
    assert answer.json()["filesUploaded"] == [layout.trial_key("T1", "run-A", MAX_TRIAL_INDEX)]
    assert answer.json()["filesUploaded"][0].endswith("/100000.json")


class _RefusingStore(CountingStore):
    """Says "already exists" to a create-if-absent, then cannot find the object (S3 409 race)."""

    def __init__(self, inner: ObjectStore, lies: int) -> None:
        super().__init__(inner)
        self.lies = lies

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        if self.lies > 0:
            self.lies -= 1
            self._count("put", key)
            raise AlreadyExists(key) if self.lies % 2 else PreconditionFailed(key)
        return super().put(key, body, if_absent=if_absent, if_match=if_match)


def test_a_racing_write_that_did_not_land_leaves_the_key_free(
    settings: Settings, store: ObjectStore, layout: KeyLayout
) -> None:
    racing = _RefusingStore(store, lies=2)
    with TestClient(create_app(settings, store=racing)) as test_client:
        answer = test_client.post(URL, json=trial(9))
    assert answer.status_code == 200
    assert racing.writes == [layout.trial_key("T1", "run-A", 9)]
    assert json.loads(store.get(racing.writes[0]).body)["trialIndex"] == 9


class _DownStore(CountingStore):
    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        self._count("put", key)
        raise TransientStorageError("injected: connection reset")


@pytest.mark.parametrize("broken", [_DownStore, lambda inner: _RefusingStore(inner, lies=10_000)])
def test_storage_trouble_is_503_and_the_retry_stores_once(
    settings: Settings, store: ObjectStore, layout: KeyLayout, broken: Any
) -> None:
    """Storage down past the deadline, or a key that never becomes free nor readable."""
    quick = settings.model_copy(update={"storage_deadline_seconds": 0.2})
    always = broken(store)
    with TestClient(create_app(quick, store=always)) as test_client:
        answer = test_client.post(URL, json=trial(2))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == str(quick.retry_after_seconds)
    assert "retry" in answer.json()["error"]
    assert "injected" not in answer.text
    assert list(store.list(layout.participants_root)) == []
    with TestClient(create_app(quick, store=store)) as healthy:
        assert healthy.post(URL, json=trial(2)).status_code == 200
    assert stored_under(store, layout, "T1") == [layout.trial_key("T1", "run-A", 2)]


def test_trial_metrics_are_counted(client: TestClient) -> None:
    client.post(URL, json=trial(0))
    client.post(URL, json=trial(0))
    metrics = client.get("/metrics").text
    assert 'collector_uploads_total{outcome="stored",upload_type="trial"} 2.0' in metrics


# --- the key layout ---------------------------------------------------------------------------


def test_trial_keys_parse_back() -> None:
    layout = KeyLayout("p")
    key = layout.trial_key("P1", "s_1-x", 42)
    assert key == "p/participants/P1/trials/s_1-x/000042.json"
    parsed = layout.parse(key)
    assert parsed is not None
    assert (parsed.participant_id, parsed.kind, parsed.session_id, parsed.trial_index) == (
        "P1",
        "trial",
        "s_1-x",
        42,
    )


@pytest.mark.parametrize(
    "rest",
    [
        "trials/s1/42.json",  # not 6 digits: not a name the collector makes
        "trials/s1/0000042.json",
        "trials/s1/100001.json",  # past the highest index
        "trials/s1/-00001.json",
        "trials/s1/000001.json.bak",
        "trials/000001.json",
        "trials/s1/x/000001.json",
        "trials/s.1/000001.json",
        "trials//000001.json",
    ],
)
def test_keys_outside_the_trial_layout_do_not_parse(rest: str) -> None:
    assert KeyLayout("p").parse(f"p/participants/P1/{rest}") is None


@pytest.mark.parametrize(("session", "index"), [("a/b", 1), ("", 1), ("s", -1), ("s", 100_001), ("s", True)])
def test_trial_key_refuses_what_the_layout_cannot_hold(session: str, index: int) -> None:
    with pytest.raises(ValueError):
        KeyLayout("p").trial_key("P1", session, index)


def test_a_whole_number_written_as_a_float_is_that_index(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    """JSON has one number type (3.0 is 3, as the OpenAPI schema says); the document agrees with its key."""
    answer = client.post(URL, json=trial(0) | {"trialIndex": 3.0})
    assert answer.status_code == 200
    key = layout.trial_key("T1", "run-A", 3)
    assert answer.json()["filesUploaded"] == [key]
    assert json.loads(store.get(key).body)["trialIndex"] == 3
    assert type(json.loads(store.get(key).body)["trialIndex"]) is int
