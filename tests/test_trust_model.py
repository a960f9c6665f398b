"""The trust model over HTTP, on the local folder and on S3 (moto): every attack of the open internet.

Participant keys (trust on first use), restore that tells a guesser nothing, erased participants,
a client clock that is wrong by years, same-second names at bounded cost, costs per item.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore, open_store
from tests.support.counting_store import CountingStore
from tests.support.settings import local_settings

URL = "/api/upload-user-data"
RESTORE = "/api/user-status"
KEY = "k" * 10 + "A1b2C3d4E5f6G7"  # 24 characters of the key alphabet
OTHER_KEY = "attacker-key-0000000000"
SEED_BODY = {"participantId": "TEST123", "uploadType": "submission", "submissionData": {"test": True}}


def status_upload(pid: str = "P001ABC", key: str | None = KEY, **extra: object) -> dict:
    body: dict = {"participantId": pid, "uploadType": "status", "hasSeenTutorial": True, **extra}
    if key is not None:
        body["participantKey"] = key
    return body


def submission(pid: str = "P001ABC", key: str | None = KEY, **extra: object) -> dict:
    body: dict = {"participantId": pid, "uploadType": "submission", "submissionData": {"answers": [1, 2]}}
    body.update(extra)
    if key is not None:
        body["participantKey"] = key
    return body


@pytest.fixture
def counted(settings: Settings) -> Iterator[tuple[TestClient, CountingStore]]:
    """A collector whose every storage request is counted (no rate limit: one address sends a lot)."""
    settings = settings.model_copy(update={"rate_limit_per_minute": 0})
    counting = CountingStore(open_store(settings))
    with TestClient(create_app(settings, store=counting)) as client:
        yield client, counting


def all_bodies(store: ObjectStore, layout: KeyLayout) -> dict[str, bytes]:
    return {info.key: store.get(info.key).body for info in store.list(f"{layout.prefix}/")}


# --- Participant key ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, OTHER_KEY], ids=["keyless", "wrong-key"])
def test_claimed_status_cannot_be_changed_without_its_key(
    client: TestClient, store: ObjectStore, layout: KeyLayout, key: str | None
) -> None:
    assert client.post(URL, json=status_upload(totalSessionsCompleted=4)).status_code == 200
    before = store.get(layout.status_key("P001ABC")).body
    attack = status_upload(key=key, totalSessionsCompleted=999, timestamp="2099-01-01T00:00:00Z")
    answer = client.post(URL, json=attack)
    assert answer.status_code == 403
    assert answer.json() == {
        "status": "error",
        "error": "participant key does not match; status not changed",
        "reason": "participant-key",
    }
    assert store.get(layout.status_key("P001ABC")).body == before  # byte-identical
    # The same attack in a batch: the item is refused the same way, nothing changes.
    batch = client.post(URL + "/batch", json={"uploads": [attack]}).json()["results"][0]
    assert (batch["httpStatus"], batch["reason"]) == (403, "participant-key")
    assert store.get(layout.status_key("P001ABC")).body == before
    # The participant's own browser still gets through.
    assert client.post(URL, json=status_upload(totalSessionsCompleted=5)).status_code == 200


@pytest.mark.parametrize("key", [None, OTHER_KEY], ids=["keyless", "wrong-key"])
def test_submission_without_the_key_is_stored_marked_and_leaves_status_alone(
    client: TestClient, store: ObjectStore, layout: KeyLayout, key: str | None
) -> None:
    client.post(URL, json=status_upload())
    before = store.get(layout.status_key("P001ABC")).body
    answer = client.post(URL, json=submission(key=key, totalSessionsCompleted=999))
    assert answer.status_code == 200
    body = answer.json()
    assert body["keyVerified"] is False
    [submission_key] = body["filesUploaded"]  # only the submission: status.json was not written
    assert "/submissions/" in submission_key
    stored = json.loads(store.get(submission_key).body)
    assert stored["keyVerified"] is False
    assert stored["submissionData"] == {"answers": [1, 2]}
    assert "participantKey" not in stored
    assert store.get(layout.status_key("P001ABC")).body == before


def test_first_keyed_upload_claims_and_only_a_hash_is_kept(
    client: TestClient, store: ObjectStore, layout: KeyLayout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = client.post(URL, json=submission()).json()
    assert "keyVerified" not in answer
    status = json.loads(store.get(layout.status_key("P001ABC")).body)
    expected = hashlib.sha256(b"participant-key-v1\0P001ABC\0" + KEY.encode()).hexdigest()
    assert status["participantKeyHash"] == expected
    submission_doc = json.loads(store.get(answer["filesUploaded"][1]).body)
    assert submission_doc["keyVerified"] is True
    assert "participantKeyHash" not in submission_doc
    for key, body in all_bodies(store, layout).items():
        assert KEY.encode() not in body, key
    assert KEY not in caplog.text


def test_client_cannot_forge_server_fields(client: TestClient, store: ObjectStore, layout: KeyLayout) -> None:
    client.post(URL, json=status_upload())
    forged = submission(key=OTHER_KEY, keyVerified=True, participantKeyHash="0" * 64)
    answer = client.post(URL, json=forged).json()
    stored = json.loads(store.get(answer["filesUploaded"][0]).body)
    assert stored["keyVerified"] is False
    assert "participantKeyHash" not in stored


@pytest.mark.parametrize("key", ["short", "x" * 257, "has space in it!!!", 12345], ids=str)
def test_malformed_key_is_refused(
    client: TestClient, store: ObjectStore, layout: KeyLayout, key: object
) -> None:
    answer = client.post(URL, json={**SEED_BODY, "participantKey": key})
    assert answer.status_code == 422
    assert "participantKey" in answer.json()["error"]
    assert [i.key for i in store.list(f"{layout.prefix}/") if i.key not in layout.server_keys] == []


def test_seed_curl_example_still_works_for_a_new_participant(client: TestClient) -> None:
    answer = client.post(URL, json=SEED_BODY)
    assert answer.status_code == 200
    assert len(answer.json()["filesUploaded"]) == 2
    assert "keyVerified" not in answer.json()
    # A keyless participant stays open until a key claims it (trust on first use).
    assert client.post(URL, json=status_upload("TEST123", key=None)).status_code == 200
    assert client.post(URL, json=status_upload("TEST123")).status_code == 200
    assert client.post(URL, json=status_upload("TEST123", key=None)).status_code == 403


def test_keys_off_gives_the_old_open_behaviour(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, participant_keys=False)
    with TestClient(create_app(settings)) as client:
        assert client.post(URL, json=status_upload(n=1)).status_code == 200
        assert client.post(URL, json=status_upload(key=OTHER_KEY, n=2)).status_code == 200
        assert client.post(URL, json=status_upload(key=None, n=3)).status_code == 200
        restored = client.post(RESTORE, json={"participantId": "P001ABC"})
        assert restored.status_code == 200
        assert restored.json()["userStatus"]["n"] == 3
        assert "participantKeyHash" not in restored.json()["userStatus"]


# --- Restore ------------------------------------------------------------------------------------


def test_restore_needs_the_key_and_says_nothing_otherwise(client: TestClient, store: ObjectStore) -> None:
    client.post(URL, json=submission(participantResponses={"q": "private"}, weeklySessionCount=2))
    right = client.post(RESTORE, json={"participantId": "P001ABC", "participantKey": KEY})
    assert right.status_code == 200
    status = right.json()["userStatus"]
    assert status["weeklySessionCount"] == 2
    for private in ("participantKeyHash", "participantResponses", "submissionData", "participantKey"):
        assert private not in status
    client.post(URL, json=status_upload("KEYLESS1", key=None))  # exists, but holds no key
    denied = [
        client.post(RESTORE, json={"participantId": "P001ABC", "participantKey": OTHER_KEY}),
        client.post(RESTORE, json={"participantId": "P001ABC"}),
        client.post(RESTORE, json={"participantId": "P001ABC", "participantKey": "bad"}),
        client.post(RESTORE, json={"participantId": "NOBODY1", "participantKey": KEY}),
        client.post(RESTORE, json={"participantId": "KEYLESS1", "participantKey": KEY}),
    ]
    unknown = denied[3]
    assert unknown.status_code == 404
    assert unknown.json() == {"status": "error", "error": "no status stored for this participant"}
    for answer in denied:
        assert (answer.status_code, answer.content) == (unknown.status_code, unknown.content)
        assert dict(answer.headers) == dict(unknown.headers)


def test_old_restore_url_is_gone(client: TestClient) -> None:
    client.post(URL, json=status_upload())
    answer = client.get("/api/user-status/P001ABC")
    assert answer.status_code in (404, 405)
    assert b"hasSeenTutorial" not in answer.content


# --- Erased participants (tombstone) -------------------------------------------------------------


def test_erased_participant_is_answered_410_and_nothing_is_stored(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    tombstone = json.dumps({"participantId": "GONE1", "erased": True, "erasedAt": "2026-01-01T00:00:00.000Z"})
    store.put(layout.status_key("GONE1"), tombstone.encode())
    before = all_bodies(store, layout)
    for body in (submission("GONE1"), status_upload("GONE1"), submission("GONE1", key=None)):
        answer = client.post(URL, json=body)
        assert answer.status_code == 410
        assert answer.json()["reason"] == "erased"
        assert "erased" in answer.json()["error"]
    item = client.post(URL + "/batch", json={"uploads": [submission("GONE1")]}).json()["results"][0]
    assert (item["httpStatus"], item["reason"]) == (410, "erased")
    assert all_bodies(store, layout) == before
    erased = client.post(RESTORE, json={"participantId": "GONE1", "participantKey": KEY})
    unknown = client.post(RESTORE, json={"participantId": "NOBODY1", "participantKey": KEY})
    assert (erased.status_code, erased.content) == (unknown.status_code, unknown.content)


# --- Storage requests: the key costs none -------------------------------------------------------


def test_key_checks_cost_no_extra_storage_request(counted: tuple[TestClient, CountingStore]) -> None:
    client, store = counted
    cases = [
        # A new participant: status.json created without a read, then the submission.
        ("claiming submission", submission("C1", timestamp="2025-01-01T00:00:00Z"), 2),
        # This process wrote C1's status last: no status read (collector.status_cache).
        ("keyed submission", submission("C1", timestamp="2025-01-01T00:00:01Z"), 2),
        ("keyed status", status_upload("C1"), 1),
        ("keyless submission, new participant", submission("C2", key=None), 2),
        ("keyless status, new participant", status_upload("C3", key=None), 1),
        ("wrong-key submission", submission("C1", key=OTHER_KEY, timestamp="2025-01-01T00:00:02Z"), 2),
        ("wrong-key status (refused)", status_upload("C1", key=OTHER_KEY), 1),
    ]
    counts = {}
    for name, body, expected in cases:
        store.reset()
        assert client.post(URL, json=body).status_code in (200, 403), name
        counts[name] = dict(store.counts)
        assert store.total == expected, (name, store.counts)
    print("storage requests per upload:", counts)


# --- Client clock -------------------------------------------------------------------------------


@pytest.mark.parametrize("future", ["2099-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_a_clock_far_ahead_neither_orders_status_nor_names_files(
    client: TestClient, store: ObjectStore, layout: KeyLayout, future: str
) -> None:
    ahead = client.post(URL, json=submission(timestamp=future, weeklySessionCount=999))
    assert ahead.status_code == 200
    assert ahead.json()["timestamp"] == future  # the client's text, kept as sent
    this_year = f"_Complete_{datetime.now(UTC).year:04d}-"
    submission_key = ahead.json()["filesUploaded"][1]
    assert this_year in submission_key  # named by server receipt time
    assert layout.parse(submission_key) is not None
    assert json.loads(store.get(submission_key).body)["timestamp"] == future
    # An honest upload made now still replaces the status (it was frozen by 2099 before).
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    honest = client.post(URL, json=status_upload(timestamp=now, weeklySessionCount=3)).json()
    assert "statusSuperseded" not in honest
    assert json.loads(store.get(layout.status_key("P001ABC")).body)["weeklySessionCount"] == 3


def test_a_status_frozen_in_2099_before_this_rule_is_replaced(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    poisoned = {
        "participantId": "OLD1",
        "timestamp": "2099-01-01T00:00:00Z",
        "serverReceivedAt": "2025-01-01T00:00:00.000Z",
    }
    store.put(layout.status_key("OLD1"), json.dumps(poisoned).encode())
    answer = client.post(URL, json=status_upload("OLD1", key=None, timestamp="2025-06-01T00:00:00Z")).json()
    assert "statusSuperseded" not in answer
    assert json.loads(store.get(layout.status_key("OLD1")).body)["timestamp"] == "2025-06-01T00:00:00Z"


def test_year_one_gets_a_four_digit_key_the_layout_reads(client: TestClient, layout: KeyLayout) -> None:
    answer = client.post(URL, json=submission(timestamp="0001-01-01T00:00:00Z"))
    assert answer.status_code == 200
    key = answer.json()["filesUploaded"][1]
    assert key.endswith("P001ABC_Complete_0001-01-01_00-00-00.json")
    parsed = layout.parse(key)
    assert parsed is not None and parsed.submitted_at == datetime(1, 1, 1, tzinfo=UTC)
    # Far past, so it does not replace a newer status; the submission is kept in full.
    assert (
        client.post(URL, json=submission(timestamp="0001-01-01T00:00:00Z", uploadId="x")).status_code == 200
    )


# --- Same-second names ---------------------------------------------------------------------------


def store_same_second(client: TestClient, store: CountingStore, layout: KeyLayout, count: int) -> None:
    worst = 0
    keys = set()
    for index in range(count):
        store.reset()
        body = submission("SAME1", timestamp="2025-11-19T14:30:45.000Z", uploadId=f"u-{index}")
        answer = client.post(URL, json=body)
        assert answer.status_code == 200, answer.text
        keys.add(answer.json()["filesUploaded"][-1])
        worst = max(worst, store.total)
        # GET status, PUT plain name (taken), GET it, PUT hashed name, PUT status: 5 at most
        # (a hash collision would add a GET and a PUT: 7).
        assert store.total <= 7, store.counts
    assert len(keys) == count
    assert all(layout.parse(key) is not None for key in keys)
    print(f"{count} same-second submissions, worst {worst} storage requests for one")


def test_same_second_submissions_cost_bounded_requests(
    counted: tuple[TestClient, CountingStore], layout: KeyLayout
) -> None:
    client, store = counted
    store_same_second(client, store, layout, 30)
    # A retry of an early one, and of a late one, is still recognised: nothing new is stored.
    for index in (0, 1, 29):
        store.reset()
        body = submission("SAME1", timestamp="2025-11-19T14:30:45.000Z", uploadId=f"u-{index}")
        first_key = client.post(URL, json=body).json()["filesUploaded"][-1]
        assert store.total <= 7, store.counts
        assert first_key.endswith(".json")
    submissions = list(store.inner.list(layout.submissions_dir("SAME1")))
    assert len(submissions) == 30


@pytest.mark.slow
# The bound on requests per name is the collector's, not the backend's: the local folder shows it
# (the 30-submission test above runs on S3 too), at half the suite's time.
@pytest.mark.parametrize("backend", ["local"])
def test_eleven_hundred_same_second_submissions_all_stored(
    counted: tuple[TestClient, CountingStore], layout: KeyLayout
) -> None:
    client, store = counted
    store_same_second(client, store, layout, 1100)


def test_old_counter_suffixes_and_new_hash_suffixes_are_read(layout: KeyLayout) -> None:
    base = layout.submissions_dir("P1") + "P1_Complete_2025-11-19_14-30-45"
    for suffix in ("", "_2", "_3", "_17", "_0a1b2c3d", "_12345678"):
        assert layout.parse(f"{base}{suffix}.json") is not None, suffix
    for suffix in ("_1", "_0", "_0A1B2C3D", "_0a1b2c3", "_x"):
        assert layout.parse(f"{base}{suffix}.json") is None, suffix
    assert layout.parse(layout.submissions_dir("P1") + "P1_Complete_0000-01-01_00-00-00.json") is None


# --- Costs per item ------------------------------------------------------------------------------


def test_every_batch_item_costs_a_token(tmp_path: Path) -> None:
    # One token a minute: a batch slowed by a loaded machine must not earn a refill mid-test.
    with TestClient(
        create_app(local_settings(tmp_path, rate_limit_per_minute=1, rate_limit_burst=5))
    ) as client:
        uploads = [status_upload(f"B{n}", key=None, uploadId=f"b{n}") for n in range(8)]
        answer = client.post(URL + "/batch", json={"uploads": uploads})
        assert answer.status_code == 200
        results = answer.json()["results"]
        assert [r["httpStatus"] for r in results] == [200] * 5 + [429] * 3
        assert all(r["retryAfter"] >= 1 for r in results[5:])
        assert int(answer.headers["Retry-After"]) >= 1
        stored = sorted(
            p.name for p in (tmp_path / "volcano-audio-anonymized-data" / "participants").iterdir()
        )
        assert stored == [f"B{n}" for n in range(5)]
        assert client.post(URL, json=status_upload("B9", key=None)).status_code == 429  # the budget is spent


def test_new_participants_per_address_are_capped(tmp_path: Path) -> None:
    with TestClient(create_app(local_settings(tmp_path, new_participants_per_hour=2))) as client:
        assert client.post(URL, json=status_upload("N1")).status_code == 200
        assert client.post(URL, json=status_upload("N2")).status_code == 200
        refused = client.post(URL, json=status_upload("N3"))
        assert refused.status_code == 429
        assert "new participants" in refused.json()["error"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert not (tmp_path / "volcano-audio-anonymized-data" / "participants" / "N3").exists()
        assert client.post(URL, json=submission("N1")).status_code == 200  # known participants go on


def test_rate_limit_zero_switches_the_new_participant_cap_off(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, new_participants_per_hour=1, rate_limit_per_minute=0)
    with TestClient(create_app(settings)) as client:
        assert [client.post(URL, json=status_upload(f"Z{n}")).status_code for n in range(5)] == [200] * 5


# --- JSON bodies -------------------------------------------------------------------------------


def test_a_body_of_a_million_tiny_objects_is_refused_before_parsing(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    raw = b'{"participantId": "J1", "submissionData": {"a": [' + b",".join([b"{}"] * 1_000_000) + b"]}}"
    answer = client.post(URL, content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert "MAX_JSON_VALUES" in answer.json()["error"]
    assert [i.key for i in store.list(f"{layout.prefix}/") if i.key not in layout.server_keys] == []


def test_json_value_cap_is_a_setting(tmp_path: Path) -> None:
    with TestClient(create_app(local_settings(tmp_path, max_json_values=100))) as client:
        small = {**SEED_BODY, "submissionData": {"a": list(range(50))}}
        large = {**SEED_BODY, "submissionData": {"a": list(range(150))}}
        assert client.post(URL, json=small).status_code == 200
        assert client.post(URL, json=large).status_code == 413
