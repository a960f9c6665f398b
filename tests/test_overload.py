"""Fair under overload: an upload that has waited past ``UPLOAD_QUEUE_SECONDS`` is answered 503 +
``Retry-After`` (which the browser module honours) instead of waiting until its client gives up;
every 200 is stored, every 503 stored nothing (web.concurrency)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.keys import KeyLayout
from collector.storage import MemoryStore
from collector.web import request_body
from tests.support.settings import local_settings

URL = "/api/upload-user-data"


class SlowStore(MemoryStore):
    """A store whose every write takes ``seconds``: a distant, slow bucket."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        time.sleep(self.seconds)
        return super().put(key, body, if_absent=if_absent, if_match=if_match)


def flood(client: TestClient, bodies: list[Any]) -> list[httpx.Response]:
    """All ``bodies`` at once, each from its own thread (the app serves them concurrently)."""
    answers: list[httpx.Response | None] = [None] * len(bodies)

    def send(index: int) -> None:
        answers[index] = client.post(URL, json=bodies[index])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(answer is not None for answer in answers), "an upload was never answered"
    return [answer for answer in answers if answer is not None]


def stored_participants(store: MemoryStore, prefix: str) -> set[str]:
    return {info.key.split("/")[2] for info in store.list(KeyLayout(prefix).participants_root)}


def assert_answered_fairly(
    answers: list[httpx.Response], participants: list[str], store: MemoryStore, prefix: str, retry_after: int
) -> None:
    stored = stored_participants(store, prefix)
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) == {200, 503}, statuses  # over capacity, so some were refused
    for participant, answer in zip(participants, answers, strict=True):
        if answer.status_code == 200:
            assert participant in stored  # nothing 200 is lost
            for key in answer.json()["filesUploaded"]:
                store.get(key)
        else:
            assert answer.headers["Retry-After"] == str(retry_after)
            assert answer.json()["status"] == "error"
            assert participant not in stored  # a 503 stored nothing


def test_a_flood_past_the_upload_slots_is_answered_200_or_503_retry_after(tmp_path: Path) -> None:
    """2 slots, uploads of ~0.4 s each (two slow writes), a 0.5 s bound, 16 at once: without the
    bound the last would wait about 3 s; with it they are refused once they have waited 0.5 s."""
    store = SlowStore(0.2)
    settings = local_settings(
        tmp_path, max_concurrent_uploads=2, upload_queue_seconds=0.5, rate_limit_per_minute=0
    )
    participants = [f"F{i:02d}" for i in range(16)]
    bodies = [
        {"participantId": p, "uploadType": "submission", "submissionData": {"i": p}} for p in participants
    ]
    with TestClient(create_app(settings, store=store)) as client:
        answers = flood(client, bodies)
    assert_answered_fairly(answers, participants, store, settings.data_prefix, settings.retry_after_seconds)


def test_large_bodies_waiting_for_the_parse_get_503_once_their_wait_is_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large bodies parse one at a time (request_body); that wait counts against the same bound.
    Each parse here takes 0.4 s: six at once would wait up to 2 s, past the 0.5 s bound."""
    real_parse = request_body.parse_json

    def slow_parse(raw: bytes, **kwargs: Any) -> Any:
        time.sleep(0.4)
        return real_parse(raw, **kwargs)

    monkeypatch.setattr(request_body, "parse_json", slow_parse)
    store = MemoryStore()
    settings = local_settings(
        tmp_path, max_concurrent_uploads=16, upload_queue_seconds=0.5, rate_limit_per_minute=0
    )
    participants = [f"L{i:02d}" for i in range(6)]
    items = [{"n": n} for n in range(request_body.INLINE_PARSE_VALUES + 1)]  # parsed off the loop
    bodies = [
        {"participantId": p, "uploadType": "submission", "submissionData": {"items": items}}
        for p in participants
    ]
    with TestClient(create_app(settings, store=store)) as client:
        answers = flood(client, bodies)
    assert_answered_fairly(answers, participants, store, settings.data_prefix, settings.retry_after_seconds)
