"""The one create-if-absent helper, on the local folder and on S3 (moto).

A refused create is read back before anything is concluded: S3's 409 for a racing conditional
write leaves the key free when that write fails. Submissions (``submission_names``) and trials
(``trials.service``) both rely on it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from collector.keys import KeyLayout
from collector.models import parse_upload
from collector.storage import AlreadyExists, ObjectStore
from collector.storage.create_once import KeyContended, create_once
from collector.submission_names import store_submission
from tests.support.counting_store import CountingStore


class RacedStore(CountingStore):
    """Refuses creates of the keys in ``raced`` as S3 does one racing another write: unwritten."""

    def __init__(self, inner: ObjectStore, raced: dict[str, int]) -> None:
        super().__init__(inner)
        self.raced = raced  # key -> how many creates to refuse

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        if if_absent and self.raced.get(key, 0) > 0:
            self.raced[key] -= 1
            self._count("put", key)
            raise AlreadyExists(key)
        return super().put(key, body, if_absent=if_absent, if_match=if_match)


def test_a_free_key_is_created_with_one_request(store: ObjectStore) -> None:
    counting = CountingStore(store)
    assert asyncio.run(create_once(counting, "p/free.json", b"mine", attempts=2)) is None
    assert counting.requests == [("put", "p/free.json")]
    assert store.get("p/free.json").body == b"mine"


def test_a_taken_key_answers_what_holds_it_and_is_never_overwritten(store: ObjectStore) -> None:
    store.put("p/taken.json", b"first")
    counting = CountingStore(store)
    existing = asyncio.run(create_once(counting, "p/taken.json", b"second", attempts=5))
    assert existing is not None and existing.body == b"first"
    assert counting.requests == [("put", "p/taken.json"), ("get", "p/taken.json")]
    assert store.get("p/taken.json").body == b"first"


def test_a_racing_refusal_that_left_the_key_free_is_read_back_and_retried(store: ObjectStore) -> None:
    raced = RacedStore(store, {"p/raced.json": 1})
    assert asyncio.run(create_once(raced, "p/raced.json", b"mine", attempts=2)) is None
    assert [op for op, _ in raced.requests] == ["put", "get", "put"]
    assert store.get("p/raced.json").body == b"mine"


def test_a_key_contended_throughout_is_an_error_after_the_attempts(store: ObjectStore) -> None:
    raced = RacedStore(store, {"p/busy.json": 10})
    with pytest.raises(KeyContended):
        asyncio.run(create_once(raced, "p/busy.json", b"mine", attempts=3))
    assert raced.count("put") == 3 and raced.count("get") == 3
    assert store.get_or_none("p/busy.json") is None


def test_a_submission_name_kept_busy_by_racing_writes_gives_way_to_the_next(
    store: ObjectStore, layout: KeyLayout
) -> None:
    received = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    body = {"participantId": "CO1", "uploadType": "submission", "uploadId": "u-1", "submissionData": {}}
    upload = parse_upload(body, received_at=received, clock_skew=timedelta(seconds=300))
    plain = layout.submission_key("CO1", upload.moment)
    raced = RacedStore(store, {plain: 10})
    key = asyncio.run(store_submission(raced, layout, upload, {**body, "serverReceivedAt": "x"}))
    assert key != plain and layout.parse(key) is not None
    assert store.get_or_none(plain) is None
    assert json.loads(store.get(key).body)["uploadId"] == "u-1"
