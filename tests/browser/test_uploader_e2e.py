"""The browser module end to end: headless Chromium, a study page on another origin, the real collector."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Stored, queue, results, wait_queue_empty
from tests.support.collector_process import CollectorProcess
from tests.support.helper_servers import FaultProxy
from tests.support.settings import local_settings, s3_settings

pytestmark = [pytest.mark.browser, pytest.mark.processes]

PID = "P001ABC"
API = re.compile(r".*/api/.*")


def submission_ids(stored: Stored) -> list[str]:
    return sorted(doc["uploadId"] for doc in stored.submissions(PID))


def test_offline_submissions_survive_a_reload_and_are_stored_once(
    context: Any, open_study: Any, local_collector: tuple[CollectorProcess, Stored]
) -> None:
    collector, stored = local_collector
    page = open_study(collector.url)
    page.click("#complete-session")
    context.set_offline(True)
    page.click("#submit-qualtrics")
    page.click("#complete-session")
    page.click("#submit-timeout")
    first, second = results(page, 2)
    assert (first["status"], second["status"]) == ("queued", "queued")
    assert first["persisted"] and second["persisted"]

    # The page reloads while the collector stays out of reach (the page itself must load).
    context.route(API, lambda route: route.abort("internetdisconnected"))
    context.set_offline(False)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    kept = [item["uploadId"] for item in queue(page) if item["uploadType"] == "submission"]
    assert sorted(kept) == sorted([first["uploadId"], second["uploadId"]])
    # Nothing is stored twice, whatever reached the collector so far. (Once in several full runs a
    # request got past the route during the reload: the queue still held both, as it must.)
    early = [doc["uploadId"] for doc in stored.submissions(PID)]
    assert len(early) == len(set(early)) and set(early) <= set(kept)

    # Back online: the `online` event sends the queue, batched.
    context.set_offline(True)
    context.unroute(API)
    context.set_offline(False)
    wait_queue_empty(page)
    assert submission_ids(stored) == sorted([first["uploadId"], second["uploadId"]])
    completions = sorted(doc["submissionData"]["completion"] for doc in stored.submissions(PID))
    assert completions == ["qualtrics", "timeout"]
    status = stored.status(PID)
    assert status is not None
    assert status["totalSessionsCompleted"] == 2
    assert status["sessionHistory"][1]["end"] > status["sessionHistory"][0]["end"]
    assert status["hasSeenTutorial"] is True
    assert status["totalSessionTimeHours"] == pytest.approx(40 / 60)


@pytest.fixture
def flaky_storage_collector(
    moto_endpoint: str, example_site: str, tmp_path: Path
) -> Iterator[tuple[CollectorProcess, Stored, FaultProxy]]:
    """A collector whose S3 endpoint is a proxy to moto that can answer 503 to everything."""
    proxy = FaultProxy(moto_endpoint)
    # As in production, the study's origin must be allowed by name (no "*" outside local mode).
    settings = s3_settings(
        proxy.url, storage_deadline_seconds=0.3, retry_after_seconds=1, allowed_origins=example_site
    )
    process = CollectorProcess(settings, log_path=tmp_path / "collector.log")
    stored = Stored(settings.model_copy(update={"s3_endpoint_url": moto_endpoint}))
    yield process, stored, proxy
    stored.store.close()
    process.stop()
    proxy.stop()


def test_storage_down_then_back_loses_nothing_and_duplicates_nothing(
    open_study: Any, flaky_storage_collector: tuple[CollectorProcess, Stored, FaultProxy]
) -> None:
    collector, stored, proxy = flaky_storage_collector
    page = open_study(collector.url)
    page.click("#complete-session")
    proxy.fail_with = 503
    page.click("#submit-qualtrics")
    page.click("#complete-session")
    page.click("#submit-timeout")
    first, second = results(page, 2)
    assert first["status"] == "queued"
    assert first["httpStatus"] == 503  # the collector's own answer, read cross-origin
    assert second["status"] == "queued"
    # Let the retry timer meet the failing collector again before storage comes back.
    page.wait_for_function("window.studyDemo.uploader.getQueueState().attempt >= 2", timeout=20000)
    assert stored.submissions(PID) == []

    proxy.fail_with = None
    wait_queue_empty(page)
    assert submission_ids(stored) == sorted([first["uploadId"], second["uploadId"]])
    assert stored.status(PID)["totalSessionsCompleted"] == 2


@pytest.fixture
def lossy_collector(tmp_path: Path) -> Iterator[tuple[FaultProxy, Stored]]:
    """A collector behind a proxy that can drop the answers to uploads after forwarding them."""
    settings = local_settings(tmp_path / "data", retry_after_seconds=1)
    process = CollectorProcess(settings, log_path=tmp_path / "collector.log")
    proxy = FaultProxy(process.url)
    stored = Stored(settings)
    yield proxy, stored
    stored.store.close()
    proxy.stop()
    process.stop()


def test_a_retry_after_a_lost_response_stores_one_object(
    open_study: Any, lossy_collector: tuple[FaultProxy, Stored]
) -> None:
    proxy, stored = lossy_collector
    page = open_study(proxy.url, retryBaseMs=60000, retryMaxMs=60000)
    page.click("#complete-session")
    proxy.lose_responses = True
    page.click("#submit-qualtrics")
    (lost,) = results(page, 1)
    assert lost["status"] == "queued"
    # The collector did store it; only its answer was lost.
    assert submission_ids(stored) == [lost["uploadId"]]
    reached = proxy.forwarded_posts()

    proxy.lose_responses = False
    page.click("#flush-queue")
    _, flushed = results(page, 2)
    assert flushed == {"stored": 1, "rejected": 0, "remaining": 0}
    assert proxy.forwarded_posts() > reached  # the retry reached the collector too
    assert submission_ids(stored) == [lost["uploadId"]]


@pytest.mark.parametrize("lock", [pytest.param(True, id="web-locks"), pytest.param(False, id="no-lock")])
def test_two_tabs_coming_back_online_store_each_submission_once(
    context: Any, open_study: Any, local_collector: tuple[CollectorProcess, Stored], lock: bool
) -> None:
    collector, stored = local_collector
    options = {} if lock else {"crossTabLock": "false"}
    tab_a = open_study(collector.url, **options)
    tab_b = open_study(collector.url, **options)
    in_flight: list[str] = []
    overlaps: list[str] = []
    sent: list[str] = []

    def batch_ids(request: Any) -> list[str]:
        if request.method != "POST" or not request.url.endswith("/batch"):
            return []
        return [upload["uploadId"] for upload in request.post_data_json["uploads"]]

    def started(request: Any) -> None:
        overlaps.extend(i for i in batch_ids(request) if i in in_flight)
        in_flight.extend(batch_ids(request))

    def ended(request: Any, reached: bool) -> None:
        for upload_id in batch_ids(request):
            in_flight.remove(upload_id)
            if reached:
                sent.append(upload_id)

    context.on("request", started)
    context.on("requestfinished", lambda request: ended(request, True))
    context.on("requestfailed", lambda request: ended(request, False))
    context.set_offline(True)
    tab_a.click("#submit-qualtrics")
    tab_b.click("#submit-timeout")
    ids = sorted([results(tab_a, 1)[0]["uploadId"], results(tab_b, 1)[0]["uploadId"]])
    assert len(queue(tab_a)) == len(queue(tab_b)) == 2  # one queue, shared by the tabs
    context.set_offline(False)  # both tabs hear `online` and flush at once
    wait_queue_empty(tab_a)
    wait_queue_empty(tab_b)
    assert submission_ids(stored) == ids
    assert set(sent) == set(ids)
    if lock:
        # Under the Web Lock no upload is ever in two requests at once.
        assert overlaps == []


def test_the_same_upload_sent_twice_at_once_is_stored_once(
    open_study: Any, local_collector: tuple[CollectorProcess, Stored]
) -> None:
    """The collector's idempotency, the safety net under the cross-tab lock."""
    collector, stored = local_collector
    page = open_study(collector.url)
    answers = page.evaluate(
        """async (url) => {
            const body = JSON.stringify({participantId: 'P001ABC', uploadType: 'submission',
              timestamp: new Date().toISOString(), uploadId: crypto.randomUUID(), submissionData: {n: 1}});
            const post = (path, text) => fetch(url + path, {method: 'POST', body: text,
              headers: {'Content-Type': 'application/json'}}).then((r) => r.status);
            return Promise.all([post('/api/upload-user-data', body),
              post('/api/upload-user-data/batch', `{"uploads":[${body}]}`),
              post('/api/upload-user-data', body)]);
        }""",
        collector.url,
    )
    assert answers == [200, 200, 200]
    assert len(stored.submissions(PID)) == 1


def test_hiding_the_page_sends_a_last_status(
    context: Any, open_study: Any, local_collector: tuple[CollectorProcess, Stored]
) -> None:
    collector, stored = local_collector
    page = open_study(collector.url)
    page.click("#complete-session")
    page.click("#complete-session")
    assert stored.status(PID) is None
    page.close()  # pagehide: a keepalive status upload
    stored.wait_for(lambda: (stored.status(PID) or {}).get("totalSessionsCompleted") == 2)


def test_periodic_status_uploads(open_study: Any, local_collector: tuple[CollectorProcess, Stored]) -> None:
    collector, stored = local_collector
    page = open_study(collector.url, statusIntervalMs=300)
    page.click("#complete-session")
    stored.wait_for(lambda: (stored.status(PID) or {}).get("totalSessionsCompleted") == 1)
    page.click("#complete-session")
    stored.wait_for(lambda: (stored.status(PID) or {}).get("totalSessionsCompleted") == 2)
    assert stored.submissions(PID) == []


def test_restore_fills_in_missing_keys_only(
    open_study: Any, local_collector: tuple[CollectorProcess, Stored]
) -> None:
    collector, stored = local_collector
    page = open_study(collector.url)
    page.click("#complete-session")
    page.click("#upload-status")
    assert results(page, 1)[0]["status"] == "success"
    assert stored.status(PID)["totalSessionsCompleted"] == 1
    page.evaluate(
        """() => { localStorage.removeItem('study_total_sessions_completed');
                   localStorage.removeItem('study_session_history');
                   localStorage.setItem('selectedVolcano', 'Etna'); }"""
    )
    page.click("#restore-status")
    restored = results(page, 2)[1]
    assert restored["status"] == "success"
    assert set(restored["restored"]) == {"study_total_sessions_completed", "study_session_history"}
    assert page.evaluate("localStorage.getItem('study_total_sessions_completed')") == "1"
    assert page.evaluate("localStorage.getItem('selectedVolcano')") == "Etna"
    assert page.evaluate("JSON.parse(localStorage.getItem('study_session_history')).length") == 1
