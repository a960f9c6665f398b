"""What a request without the participant's key can learn: nothing about an erasure, nothing that
tells claimed from unclaimed without storing, and restore does the same work whatever the ID.
Local folder and S3 (moto)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collector.erasure import erase_participant
from collector.keys import KeyLayout
from collector.pipeline import restore
from collector.storage import ObjectStore

URL = "/api/upload-user-data"
KEY = "owner-key-0123456789abc"
WRONG = "guess-key-0123456789abc"


def status(pid: str, key: str | None, timestamp: str) -> dict[str, Any]:
    body: dict[str, Any] = {"participantId": pid, "uploadType": "status", "timestamp": timestamp}
    return body if key is None else {**body, "participantKey": key}


def probes(pid: str, key: str | None) -> list[dict[str, Any]]:
    """What a guesser sends: an old and a new status, a submission, a trial."""
    extra = {} if key is None else {"participantKey": key}
    return [
        status(pid, key, "1970-01-01T00:00:00.000Z"),
        status(pid, key, "2999-01-01T00:00:00.000Z"),
        {
            "participantId": pid,
            "uploadType": "submission",
            "timestamp": "2026-06-01T00:00:00.000Z",
            "submissionData": {"x": 1},
            **extra,
        },
        {
            "participantId": pid,
            "uploadType": "trial",
            "sessionId": "s1",
            "trialIndex": 0,
            "timestamp": "2026-06-01T00:00:00.000Z",
            "trialData": {"x": 1},
            **extra,
        },
    ]


def answers(client: TestClient, pid: str, key: str | None) -> list[tuple[int, Any]]:
    """Each probe's status and body, with the participant's own names taken out."""
    seen = []
    for body in probes(pid, key):
        answer = client.post(URL, json=body)
        # The participant's ID, and the content hash naming an unverified trial (which holds it).
        text = re.sub(r"_[0-9a-f]{8}\.json", "_HASH.json", answer.text.replace(pid, "PID"))
        seen.append((answer.status_code, text))
    return seen


def claim(client: TestClient, pid: str) -> None:
    assert client.post(URL, json=status(pid, KEY, "2026-01-01T00:00:00.000Z")).status_code == 200


@pytest.mark.parametrize("key", [None, WRONG], ids=["keyless", "wrong-key"])
def test_an_erased_participant_looks_claimed_to_a_request_without_its_key(
    client: TestClient, store: ObjectStore, layout: KeyLayout, key: str | None
) -> None:
    claim(client, "ALIVE1")
    claim(client, "GONE1")
    erase_participant(store, layout, "GONE1", who="t", reason="withdrew", settle_seconds=0)
    alive = answers(client, "ALIVE1", key)
    tombstone_only = [info.key for info in store.list(layout.participant_dir("GONE1"))]
    assert answers(client, "GONE1", key) == alive
    assert [info.key for info in store.list(layout.participant_dir("GONE1"))] == tombstone_only
    assert [code for code, _ in alive] == [200, 403, 200, 200]
    # The participant's own browser (its key) is told, so it drops its queue.
    own = [client.post(URL, json=body) for body in probes("GONE1", KEY)[1:]]
    assert [(a.status_code, a.json()["reason"]) for a in own] == [(410, "erased")] * 3


def test_an_old_keyless_status_says_the_same_to_claimed_and_unclaimed(client: TestClient) -> None:
    claim(client, "CLAIMED1")
    assert client.post(URL, json=status("OPEN1", None, "2026-01-01T00:00:00.000Z")).status_code == 200
    old = [
        client.post(URL, json=status(pid, None, "1970-01-01T00:00:00.000Z")) for pid in ("CLAIMED1", "OPEN1")
    ]
    assert [a.status_code for a in old] == [200, 200]
    assert [a.text.replace(pid, "PID") for a, pid in zip(old, ("CLAIMED1", "OPEN1"), strict=True)] == [
        old[1].text.replace("OPEN1", "PID")
    ] * 2


def test_restore_with_a_wrong_key_does_the_work_of_an_unknown_id(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim(client, "KNOWN1")
    parsed: list[str] = []
    real_of = restore.StatusState.of

    def counting_of(stored: Any) -> Any:
        parsed.append("parse")
        return real_of(stored)

    monkeypatch.setattr(restore.StatusState, "of", staticmethod(counting_of))
    wrong = client.post("/api/user-status", json={"participantId": "KNOWN1", "participantKey": WRONG})
    unknown = client.post("/api/user-status", json={"participantId": "NOBODY1", "participantKey": WRONG})
    assert wrong.status_code == unknown.status_code == 404 and wrong.content == unknown.content
    assert parsed == []  # neither parsed a document: the same scan and hash on both paths
    right = client.post("/api/user-status", json={"participantId": "KNOWN1", "participantKey": KEY})
    assert right.status_code == 200 and parsed == ["parse"]
