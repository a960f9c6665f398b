"""How the upload pipeline calls the store (``pipeline.calls``): both ways, over HTTP to the real app.

A store with only the default async methods runs each upload in one worker thread, so a local
folder's writes of one upload share their last sync; a store with native async methods is called
on the event loop. Either way the answers and the stored objects are the same.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from collector.app import create_app
from collector.keys import KeyLayout
from collector.models import parse_upload
from collector.pipeline.answer import Answer
from collector.pipeline.run import UploadPipeline
from collector.status_cache import StatusCache
from collector.storage import MemoryStore, StoredObject
from collector.storage.local import LocalStore
from tests.support.settings import local_settings

URL = "/api/upload-user-data"


def submission(pid: str) -> dict[str, Any]:
    return {
        "participantId": pid,
        "uploadType": "submission",
        "timestamp": "2026-06-01T12:00:00.000Z",
        "submissionData": {"answer": 42},
    }


def test_a_local_folder_submission_shares_its_last_sync(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    settings = local_settings(tmp_path / "data", rate_limit_per_minute=0)
    with TestClient(create_app(settings, store=store)) as client:
        def syncs() -> int:  # a thread's barrier or, on the event loop, the committer
            return store._barrier.syncs + store._committer.syncs

        before = syncs()
        answer = client.post(URL, json=submission("S1"))
        assert answer.status_code == 200 and len(answer.json()["filesUploaded"]) == 2
        # Status and submission: each one's data, then one sync for the last name: 3, not 4.
        assert syncs() - before == 3
        assert store._barrier.syncs == 0  # the app's store is called on the event loop
    for key in answer.json()["filesUploaded"]:
        assert store.get(key).body


class EventLoopStore(MemoryStore):
    """A store with its own async methods, which records the threads they were called on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    async def put_async(
        self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        self.threads.add(threading.current_thread().name)
        return self.put(key, body, if_absent=if_absent, if_match=if_match)

    async def get_async(self, key: str) -> StoredObject:
        self.threads.add(threading.current_thread().name)
        return self.get(key)


def test_a_store_with_native_async_methods_is_called_on_the_event_loop() -> None:
    store = EventLoopStore()
    pipeline = UploadPipeline(
        store,
        KeyLayout("p"),
        retry_after=5,
        deadline_seconds=5.0,
        participant_keys=True,
        clock_skew=timedelta(seconds=300),
        status_cache=StatusCache(10),
    )
    assert pipeline.calls.native
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)

    async def uploads() -> tuple[list[Any], str]:
        answers = []
        for body in (submission("N1"), submission("N1"), {"participantId": "N1", "uploadType": "status"}):
            upload = parse_upload(body, received_at=now, clock_skew=pipeline.clock_skew)
            answers.append(await pipeline.store_upload(upload, received_at=now))
        return answers, threading.current_thread().name

    (first, again, status), loop_thread = asyncio.run(uploads())
    assert isinstance(first, Answer) and isinstance(again, Answer) and isinstance(status, Answer)
    assert first.files == again.files and len(first.files) == 2  # the retry is recognised
    assert store.threads == {loop_thread}  # every request made on the event loop
    assert len([key for key in store._objects if "/submissions/" in key]) == 1
