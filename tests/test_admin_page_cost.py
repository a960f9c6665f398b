"""A participant page's storage reads do not grow with their stored submissions because a trial exists.

Which trial sessions are complete depends on every submission; the dashboard's index reads each
submission once per process (they are never rewritten), and the page asks it, so a page reads
only the submissions stored since, not all of them on every view.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from collector.app import create_app
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.counting_store import CountingStore
from tests.support.factories import (
    BASE_TIME,
    encode,
    make_status,
    make_submission,
    put_status,
    put_submission,
)
from tests.test_admin_http import log_in

PID = "SYNTHMANY"
STORED = 120


def submission_reads(counting: CountingStore) -> list[str]:
    return [key for op, key in counting.requests if op == "get" and "/submissions/" in key]


def test_a_trial_does_not_make_the_page_read_every_submission(
    settings: Settings, store: ObjectStore, layout: KeyLayout
) -> None:
    put_status(store, layout, make_status(PID, sessions=1))
    trial = {"participantId": PID, "sessionId": "run-1", "trialIndex": 0, "trialData": {"rt": 1}}
    store.put(layout.trial_key(PID, "run-1", 0), encode(trial))
    for number in range(STORED):
        when = BASE_TIME + timedelta(seconds=number)
        put_submission(store, layout, make_submission(PID, when=when, sessionId="run-1"))
    counting = CountingStore(store)
    with TestClient(create_app(settings, store=counting)) as client:
        log_in(client)
        assert client.get("/admin/participants").status_code == 200  # the dashboard's index
        counting.reset()
        page = client.get(f"/admin/participants/{PID}")
        assert page.status_code == 200 and '<tr class="complete">' in page.text
        assert submission_reads(counting) == []
        assert counting.count("get") <= 2  # status.json (and the session state at most)

        latest = put_submission(
            store, layout, make_submission(PID, when=BASE_TIME + timedelta(days=1), sessionId="run-2")
        )
        counting.reset()
        assert client.get(f"/admin/participants/{PID}?submissions_page=3").status_code == 200
        assert submission_reads(counting) == [latest]  # only what was stored since
