"""The upload endpoint over HTTP, on both backends (DESIGN §3)."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from collector.keys import KeyLayout
from collector.storage import ObjectStore

SEED_BODY = {"participantId": "TEST123", "uploadType": "submission", "submissionData": {"test": True}}


def stored_keys(store: ObjectStore, layout: KeyLayout) -> list[str]:
    return [info.key for info in store.list(layout.participants_root)]


def read_json(store: ObjectStore, key: str) -> dict:
    return json.loads(store.get(key).body)


def test_seed_curl_body_stores_status_and_submission(
    client: TestClient, store: ObjectStore, layout: KeyLayout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = client.post("/api/upload-user-data", json=SEED_BODY)
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
