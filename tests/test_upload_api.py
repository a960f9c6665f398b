"""The upload endpoint over HTTP, on both backends (docs/api.md §3)."""

from __future__ import annotations

import json
import logging
from hashlib import sha256

import pytest
from fastapi.testclient import TestClient

from collector.keys import KeyLayout
from collector.storage import ObjectStore

MINIMAL_BODY = {"participantId": "TEST123", "uploadType": "submission", "submissionData": {"test": True}}
URL = "/api/upload-user-data"


def stored_keys(store: ObjectStore, layout: KeyLayout) -> list[str]:
    return [info.key for info in store.list(layout.participants_root)]


def read_json(store: ObjectStore, key: str) -> dict:
    return json.loads(store.get(key).body)


def submission(pid: str = "P001ABC", timestamp: str = "2025-11-19T14:30:45.123Z", **extra: object) -> dict:
    return {
        "participantId": pid,
        "timestamp": timestamp,
        "uploadType": "submission",
        "submissionData": {"regions": [1, 2], "survey": {"q1": "a"}},
        **extra,
    }


def test_minimal_curl_body_stores_status_and_submission(
    client: TestClient, store: ObjectStore, layout: KeyLayout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = client.post(URL, json=MINIMAL_BODY)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "success"
    assert body["participantId"] == "TEST123"
    status_key, submission_key = body["filesUploaded"]
    assert status_key == "volcano-audio-anonymized-data/participants/TEST123/user-status/status.json"
    assert submission_key.startswith(
        "volcano-audio-anonymized-data/participants/TEST123/submissions/TEST123_Complete_"
    )
    assert sorted(stored_keys(store, layout)) == sorted(body["filesUploaded"])
    assert read_json(store, submission_key)["submissionData"] == {"test": True}
    assert "submissionData" not in read_json(store, status_key)
    assert f"✅ Uploaded user data for TEST123: {body['filesUploaded']}" in caplog.text


def test_design_example_keeps_every_field_and_names_file_by_upload_timestamp(
    client: TestClient, store: ObjectStore
) -> None:
    body = submission(
        hasSeenWelcome=True,
        weeklySessionCount=2,
        sessionHistory=[{"start": 1}],
        totalSessionTimeHours=2.0,
        someFutureField={"nested": ["kept"]},
    )
    answer = client.post(URL, json=body).json()
    assert answer["timestamp"] == "2025-11-19T14:30:45.123Z"
    status_key, submission_key = answer["filesUploaded"]
    assert submission_key.endswith("/submissions/P001ABC_Complete_2025-11-19_14-30-45.json")
    stored = read_json(store, submission_key)
    assert {k: stored[k] for k in body} == body
    assert "serverReceivedAt" in stored
    status = read_json(store, status_key)
    assert status["someFutureField"] == {"nested": ["kept"]}
    assert status["weeklySessionCount"] == 2


def test_timestamp_with_offset_is_named_in_utc(client: TestClient) -> None:
    answer = client.post(URL, json=submission(timestamp="2025-11-19T16:30:45+02:00")).json()
    assert answer["filesUploaded"][1].endswith("P001ABC_Complete_2025-11-19_14-30-45.json")


def test_status_upload_writes_only_status(client: TestClient, store: ObjectStore, layout: KeyLayout) -> None:
    answer = client.post(URL, json={"participantId": "S1", "uploadType": "status", "hasSeenWelcome": True})
    assert answer.status_code == 200
    assert answer.json()["filesUploaded"] == [layout.status_key("S1")]
    assert stored_keys(store, layout) == [layout.status_key("S1")]


def test_identical_retry_creates_nothing_new(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    first = client.post(URL, json=submission()).json()
    again = client.post(URL, json=submission()).json()
    assert again["filesUploaded"] == first["filesUploaded"]
    assert len([k for k in stored_keys(store, layout) if "/submissions/" in k]) == 1


def test_retry_with_same_upload_id_is_recognised(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    first = client.post(URL, json=submission(uploadId="u-1")).json()
    # Same uploadId, same second: the same upload even if a counter changed in between.
    again = client.post(URL, json=submission(uploadId="u-1", weeklySessionCount=3)).json()
    assert again["filesUploaded"][1] == first["filesUploaded"][1]
    assert len([k for k in stored_keys(store, layout) if "/submissions/" in k]) == 1


def test_different_submissions_in_one_second_all_survive(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    keys = [client.post(URL, json=submission(uploadId=f"u-{i}")).json()["filesUploaded"][1] for i in range(3)]
    assert keys[0].endswith("P001ABC_Complete_2025-11-19_14-30-45.json")
    # Later ones: 8 hex of SHA-256 of their uploadId (not a counter: bounded requests each).
    assert keys[1].endswith(f"P001ABC_Complete_2025-11-19_14-30-45_{sha256(b'u-1').hexdigest()[:8]}.json")
    assert keys[2].endswith(f"P001ABC_Complete_2025-11-19_14-30-45_{sha256(b'u-2').hexdigest()[:8]}.json")
    assert [read_json(store, k)["uploadId"] for k in keys] == ["u-0", "u-1", "u-2"]
    assert all(layout.parse(k) is not None for k in keys)


def test_late_older_upload_never_replaces_newer_status(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    newer = {"participantId": "S2", "uploadType": "status", "timestamp": "2025-11-19T15:00:00Z", "n": 2}
    older = {"participantId": "S2", "uploadType": "status", "timestamp": "2025-11-19T14:00:00Z", "n": 1}
    assert client.post(URL, json=newer).status_code == 200
    answer = client.post(URL, json=older)
    assert answer.status_code == 200
    assert answer.json()["filesUploaded"] == []
    assert answer.json()["statusSuperseded"] is True
    assert read_json(store, layout.status_key("S2"))["n"] == 2
    # An older *submission* is still kept in full; only the status stays at the newest.
    late = submission("S2", "2025-11-19T14:30:00Z")
    keys = client.post(URL, json=late).json()["filesUploaded"]
    assert len(keys) == 1 and "/submissions/" in keys[0]
    assert read_json(store, layout.status_key("S2"))["n"] == 2


def test_missing_timestamp_uses_server_time(client: TestClient, store: ObjectStore) -> None:
    answer = client.post(URL, json=MINIMAL_BODY).json()
    assert answer["timestamp"].endswith("Z")
    stamp = answer["timestamp"][:19].replace("T", "_").replace(":", "-")
    assert answer["filesUploaded"][1].endswith(f"TEST123_Complete_{stamp}.json")


def test_sendbeacon_text_plain_is_accepted(client: TestClient) -> None:
    answer = client.post(
        URL, content=json.dumps(MINIMAL_BODY), headers={"Content-Type": "text/plain;charset=UTF-8"}
    )
    assert answer.status_code == 200


DEEP = "[" * 200 + "]" * 200

REFUSALS = [
    pytest.param({"uploadType": "status"}, 400, "participantId is required", id="no-participant-id"),
    pytest.param({"participantId": ""}, 400, "participantId", id="empty-id"),
    pytest.param({"participantId": "../etc"}, 400, "participantId", id="dot-dot"),
    pytest.param({"participantId": "a/b"}, 400, "participantId", id="slash"),
    pytest.param({"participantId": "a b"}, 400, "participantId", id="space"),
    pytest.param({"participantId": "x" * 65}, 400, "participantId", id="too-long"),
    pytest.param({"participantId": "é1"}, 400, "participantId", id="non-ascii"),
    pytest.param({"participantId": "P1\n"}, 400, "participantId", id="trailing-newline"),
    pytest.param({"participantId": 12345}, 400, "participantId", id="number-id"),
    pytest.param({"participantId": "P1", "uploadType": "weird"}, 422, "uploadType", id="unknown-upload-type"),
    pytest.param(
        {"participantId": "P1", "uploadType": "submission"}, 422, "submissionData", id="no-submission-data"
    ),
    pytest.param(
        {"participantId": "P1", "uploadType": "submission", "submissionData": "x"},
        422,
        "submissionData",
        id="submission-data-not-object",
    ),
    pytest.param({"participantId": "P1", "timestamp": 5}, 422, "timestamp", id="timestamp-not-string"),
    pytest.param({"participantId": "P1", "uploadId": ""}, 422, "uploadId", id="empty-upload-id"),
    pytest.param([1, 2], 400, "JSON object", id="array-body"),
    pytest.param("just a string", 400, "JSON object", id="string-body"),
]


@pytest.mark.parametrize(("body", "status", "mentions"), REFUSALS)
def test_bad_upload_is_refused_and_stores_nothing(
    client: TestClient,
    store: ObjectStore,
    layout: KeyLayout,
    caplog: pytest.LogCaptureFixture,
    body: object,
    status: int,
    mentions: str,
) -> None:
    answer = client.post(URL, json=body)
    assert answer.status_code == status
    assert answer.json()["status"] == "error"
    assert mentions in answer.json()["error"]
    assert stored_keys(store, layout) == []
    assert "⚠️ Refused" in caplog.text


RAW_REFUSALS = [
    pytest.param(b'{"participantId": "P1",', "application/json", 400, "not valid JSON", id="truncated-json"),
    pytest.param(b"", "application/json", 400, "empty", id="empty-body"),
    pytest.param(b"\xff\xfe{}", "application/json", 400, "not valid JSON", id="bad-utf8"),
    pytest.param(DEEP.encode(), "application/json", 400, "nested deeper", id="deep-nesting"),
    pytest.param(("[" * 100_000).encode(), "application/json", 400, "nested deeper", id="absurd-nesting"),
    pytest.param(
        b'{"participantId": "P1", "participantId": "P2"}',
        "application/json",
        400,
        "twice",
        id="duplicate-key",
    ),
    pytest.param(
        b"participantId=P1", "application/x-www-form-urlencoded", 415, "application/json", id="form"
    ),
    pytest.param(b"<xml/>", "application/xml", 415, "application/json", id="xml"),
    pytest.param(b"{}", "", 415, "application/json", id="no-content-type"),
]


@pytest.mark.parametrize(("raw", "content_type", "status", "mentions"), RAW_REFUSALS)
def test_malformed_body_is_refused_and_stores_nothing(
    client: TestClient,
    store: ObjectStore,
    layout: KeyLayout,
    raw: bytes,
    content_type: str,
    status: int,
    mentions: str,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = client.post(URL, content=raw, headers=headers)
    assert answer.status_code == status
    assert answer.json() == {"status": "error", "error": answer.json()["error"]}
    assert mentions in answer.json()["error"]
    assert stored_keys(store, layout) == []


def test_oversized_body_is_refused_by_its_declared_length(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    limit = client.app.state.services.settings.max_upload_bytes
    body = json.dumps(submission(padding="x" * limit)).encode()
    answer = client.post(URL, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert str(limit) in answer.json()["error"]
    assert stored_keys(store, layout) == []


def test_oversized_chunked_body_is_cut_off_while_streaming(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    limit = client.app.state.services.settings.max_upload_bytes

    def chunks():  # no Content-Length: the server must count as it reads
        for _ in range(limit // 65536 + 10):
            yield b" " * 65536

    answer = client.post(URL, content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert stored_keys(store, layout) == []
