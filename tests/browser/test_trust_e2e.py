"""The participant key and erasure end to end: the study page in headless Chromium, a real `collector serve`.

Each test runs on the local folder and on S3 (moto). The collector sits behind a FaultProxy, which
counts every request that reaches it (the collector's own log has no access log) and can make the
collector unreachable (503 without forwarding) so that uploads queue in the page.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from collector.settings import Settings
from tests.browser.conftest import FAST, Stored, queue, results, wait_queue_empty
from tests.support.collector_process import REPO, CollectorProcess, collector_environment
from tests.support.helper_servers import FaultProxy
from tests.support.settings import local_settings, s3_settings

pytestmark = [pytest.mark.browser, pytest.mark.processes]

PID = "P001ABC"
KEY_ITEM = f"dataUploader.v1.key.{PID}"
PROGRESS_KEYS = ["study_total_sessions_completed", "study_session_history", "study_tutorial_completed"]
UPLOAD_PATH = "/api/upload-user-data"
RESTORE_PATH = "/api/user-status"


@dataclass
class Live:
    """A collector process behind a counting proxy, its settings, its log and what it stored."""

    settings: Settings
    process: CollectorProcess
    proxy: FaultProxy
    stored: Stored
    log_path: Path

    @property
    def url(self) -> str:
        return self.proxy.url  # the page talks to the collector through the proxy only

    def posts(self, path: str) -> int:
        """POSTs that reached the collector at exactly ``path`` (the batch path is a different one)."""
        return sum(1 for method, p, _ in list(self.proxy.forwarded) if method == "POST" and p == path)

    def upload_posts(self) -> int:
        """Upload requests that reached the collector, single or batch."""
        return self.posts(UPLOAD_PATH) + self.posts(UPLOAD_PATH + "/batch")

    def status_bytes(self, participant_id: str = PID) -> bytes | None:
        found = self.stored.store.get_or_none(self.stored.layout.status_key(participant_id))
        return found.body if found else None

    def cli(self, *args: str) -> str:
        """``python -m collector ARGS`` in a subprocess with this collector's environment."""
        env = collector_environment(self.settings, self.process.port)
        done = subprocess.run(
            [sys.executable, "-m", "collector", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture(params=["local", "s3"])
def live(request: pytest.FixtureRequest, example_site: str, tmp_path: Path) -> Iterator[Live]:
    if request.param == "s3":
        # As in production, the study's origin is allowed by name (no "*" outside local mode).
        settings = s3_settings(
            request.getfixturevalue("moto_endpoint"), retry_after_seconds=1, allowed_origins=example_site
        )
    else:
        settings = local_settings(tmp_path / "data", retry_after_seconds=1)
    log_path = tmp_path / "collector.log"
    process = CollectorProcess(settings, log_path=log_path)
    proxy = FaultProxy(process.url)
    stored = Stored(settings)
    yield Live(settings, process, proxy, stored, log_path)
    stored.store.close()
    proxy.stop()
    process.stop()


def open_page(context: Any, example_site: str, collector_url: str, **options: object) -> Any:
    """examples/study.html in a new tab of ``context`` (its own localStorage), once it is ready."""
    page = context.new_page()
    page.goto(f"{example_site}/study.html?{urlencode({'collector': collector_url, **FAST, **options})}")
    page.wait_for_selector("body[data-ready=true]")
    return page


def click_for_result(page: Any, selector: str) -> dict[str, Any]:
    """Clicks one of the page's buttons and returns the answer the study got for it."""
    before = page.evaluate("window.studyDemo.results.length")
    page.click(selector)
    return results(page, before + 1)[before]


def key_of(page: Any) -> str:
    key = page.evaluate(f"localStorage.getItem('{KEY_ITEM}')")
    assert isinstance(key, str) and len(key) >= 22
    return key


def key_hash(participant_id: str, key: str) -> str:
    return hashlib.sha256(f"participant-key-v1\0{participant_id}\0{key}".encode()).hexdigest()


def progress(page: Any) -> dict[str, str | None]:
    return {name: page.evaluate(f"localStorage.getItem('{name}')") for name in PROGRESS_KEYS}


def forget_progress(page: Any) -> None:
    """The study's progress keys are gone (a cleared profile); the module's own keys stay."""
    page.evaluate(f"() => {{ for (const k of {json.dumps(PROGRESS_KEYS)}) localStorage.removeItem(k); }}")


def assert_no_retry_pending(live: Live, page: Any, posts_before: int) -> None:
    """Nothing left to send and no retry scheduled; after the retry schedule's longest wait, no new POST."""
    assert queue(page) == []
    state = page.evaluate("window.studyDemo.uploader.getQueueState()")
    assert state["attempt"] == 0 and state["nextAttemptAt"] == 0
    # A wait for something that must not happen (longer than FAST's retryMaxMs), not a timing assertion.
    page.wait_for_timeout(2 * FAST["retryMaxMs"] + 500)
    assert live.upload_posts() == posts_before


def assert_key_never_stored(live: Live, *keys: str) -> None:
    """No stored object (documents, audit records, tombstones) and no log line holds a key in clear."""
    store = live.stored.store
    objects = list(store.list(""))
    assert objects
    for info in objects:
        body = store.get(info.key).body.decode("utf-8", "replace")
        for key in keys:
            assert key not in body, f"participant key in clear in {info.key}"
            assert key not in info.key
    log = live.log_path.read_text("utf-8", "replace")
    assert log  # the collector did log (so the search below means something)
    for key in keys:
        assert key not in log


def test_claim_refuse_release_reclaim(browser: Any, example_site: str, live: Live) -> None:
    stored = live.stored
    first_ctx = browser.new_context()
    second_ctx = browser.new_context()
    try:
        # --- 1. The study page claims the participant with its first keyed upload.
        first = open_page(first_ctx, example_site, live.url)
        first.click("#complete-session")
        claimed = click_for_result(first, "#submit-qualtrics")
        assert claimed["status"] == "success" and "keyVerified" not in claimed
        first_key = key_of(first)
        status = stored.status(PID)
        assert status["participantKeyHash"] == key_hash(PID, first_key)
        assert "participantKey" not in status
        assert [doc["keyVerified"] for doc in stored.submissions(PID)] == [True]

        first.click("#complete-session")
        assert click_for_result(first, "#upload-status")["status"] == "success"
        assert stored.status(PID)["totalSessionsCompleted"] == 2

        first.reload()  # its pagehide queues and sends a last status; the new page finishes it
        first.wait_for_selector("body[data-ready=true]")
        wait_queue_empty(first)
        assert key_of(first) == first_key  # the key survives the reload
        forget_progress(first)  # ... and the study's progress is gone (a cleared profile, say)
        restored = click_for_result(first, "#restore-status")
        assert restored["status"] == "success"
        assert set(PROGRESS_KEYS) <= set(restored["restored"])
        assert progress(first)["study_total_sessions_completed"] == "2"
        assert "participantKey" not in json.dumps(restored)
        assert_key_never_stored(live, first_key)

        # --- 2. Another browser (another device, or an attacker) for the same ID.
        second = open_page(second_ctx, example_site, live.url)
        claimed_status = live.status_bytes()
        posts = live.upload_posts()
        restores = live.posts(RESTORE_PATH)

        not_found = click_for_result(second, "#restore-status")
        assert not_found["status"] == "not-found" and not_found["restored"] == {}
        assert progress(second) == dict.fromkeys(PROGRESS_KEYS)
        assert live.posts(RESTORE_PATH) == restores + 1
        second_key = key_of(second)
        assert second_key != first_key

        second.click("#complete-session")
        second.click("#complete-session")
        second.click("#complete-session")
        refused = click_for_result(second, "#upload-status")
        assert refused["status"] == "error"
        assert (refused["httpStatus"], refused["reason"]) == (403, "participant-key")
        assert live.status_bytes() == claimed_status

        unverified = click_for_result(second, "#submit-timeout")
        assert unverified["status"] == "success" and unverified["keyVerified"] is False
        assert live.status_bytes() == claimed_status  # its status part changed nothing either
        (unverified_key,) = unverified["filesUploaded"]  # the submission only, not status.json
        assert unverified_key.startswith(stored.layout.submissions_dir(PID))
        unverified_doc = json.loads(stored.store.get(unverified_key).body)
        assert unverified_doc["keyVerified"] is False
        assert unverified_doc["submissionData"]["completion"] == "timeout"
        assert "participantKey" not in unverified_doc
        assert sorted(doc["keyVerified"] for doc in stored.submissions(PID)) == [False, True]

        assert live.upload_posts() == posts + 2  # one request each: dropped, not retried
        assert_no_retry_pending(live, second, posts + 2)
        assert live.status_bytes() == claimed_status

        # --- 3. The research team releases the key: the second browser's next keyed upload claims.
        out = live.cli("release-key", PID, "--reason", "new laptop", "--yes")
        assert f"Released the key of {PID}" in out
        assert "participantKeyHash" not in stored.status(PID)
        audits = [i.key for i in stored.store.list(f"{stored.layout.audit_root}key-releases/")]
        assert len(audits) == 1 and audits[0].endswith(".json") and f"_{PID}_" in audits[0]

        reclaimed = click_for_result(second, "#upload-status")
        assert reclaimed["status"] == "success"
        status = stored.status(PID)
        assert live.status_bytes() != claimed_status
        assert status["participantKeyHash"] == key_hash(PID, second_key)
        assert status["totalSessionsCompleted"] == 3  # the second browser's own progress now

        forget_progress(second)
        restored = click_for_result(second, "#restore-status")
        assert restored["status"] == "success"
        assert progress(second)["study_total_sessions_completed"] == "3"

        # The first browser is now the one refused, for status and for restore.
        reclaimed_status = live.status_bytes()
        first.click("#complete-session")
        refused = click_for_result(first, "#upload-status")
        assert (refused["status"], refused["httpStatus"], refused["reason"]) == (
            "error",
            403,
            "participant-key",
        )
        forget_progress(first)
        assert click_for_result(first, "#restore-status")["status"] == "not-found"
        assert progress(first) == dict.fromkeys(PROGRESS_KEYS)
        assert live.status_bytes() == reclaimed_status
        assert queue(first) == []

        assert_key_never_stored(live, first_key, second_key)
    finally:
        # Closing the pages sends a last status upload (pagehide); the assertions are all made.
        first_ctx.close()
        second_ctx.close()


ERASED = "PERASE01"
KEPT = "PKEEP002"


def call(page: Any, expression: str) -> Any:
    """Awaits ``expression`` (using the page's uploader module as ``u``) in the page."""
    return page.evaluate(f"async () => {{ const u = window.studyDemo.uploader; return await {expression}; }}")


@dataclass
class ErasureScene:
    """A page whose queue holds uploads for ERASED and KEPT, ERASED erased meanwhile, the collector back."""

    page: Any
    sent: list[dict[str, Any]]  # every POST to the API the page made, with its body
    erased_ids: set[str]  # uploadIds queued for ERASED while the collector was unreachable
    kept_ids: set[str]
    tombstone: bytes

    def sent_uploads(self) -> list[dict[str, Any]]:
        """Every upload the page sent, whether alone or in a batch."""
        found: list[dict[str, Any]] = []
        for request in self.sent:
            body = request["body"] or {}
            found.extend(body.get("uploads", [body]))
        return found

    def sent_ids(self) -> list[str]:
        return [upload.get("uploadId") for upload in self.sent_uploads()]


@contextmanager
def erasure_scene(browser: Any, example_site: str, live: Live) -> Iterator[ErasureScene]:
    context = browser.new_context()
    sent: list[dict[str, Any]] = []

    def note(request: Any) -> None:
        if request.method == "POST" and "/api/" in request.url:
            sent.append({"url": request.url, "body": request.post_data_json})

    context.on("request", note)
    # Full jitter at its ceiling: the module's own retry timer never fires during the test (the
    # test flushes when it means to), whatever Math.random would have drawn.
    context.add_init_script("Math.random = () => 1;")
    try:
        # One upload per request (so an erased participant's later items can only be dropped, not
        # answered within the same batch), and no automatic retry before the test flushes.
        page = open_page(
            context, example_site, live.url, pid=ERASED, maxBatchItems=1, retryBaseMs=60000, retryMaxMs=60000
        )
        page.click("#complete-session")
        assert click_for_result(page, "#submit-qualtrics")["status"] == "success"  # claims ERASED
        kept_first = call(page, f"u.uploadSubmissionData('{KEPT}', {{n: 1}})")
        assert kept_first["status"] == "success"

        # The collector becomes unreachable: uploads for both participants queue, interleaved.
        live.proxy.fail_with = 503
        queued = [
            call(page, f"u.uploadSubmissionData('{ERASED}', {{n: 2}})"),
            call(page, f"u.uploadSubmissionData('{KEPT}', {{n: 2}})"),
            call(page, f"u.uploadUserStatus('{ERASED}')"),
            call(page, f"u.uploadTrialData('{ERASED}', 'S1', 0, {{rt: 512}})"),
            call(page, f"u.uploadUserStatus('{KEPT}')"),
        ]
        assert [answer["status"] for answer in queued] == ["queued"] * 5
        assert [(i["participantId"], i["uploadType"]) for i in queue(page)] == [
            (ERASED, "submission"),
            (KEPT, "submission"),
            (ERASED, "status"),
            (ERASED, "trial"),
            (KEPT, "status"),
        ]

        # The research team erases ERASED while the page cannot reach the collector.
        out = live.cli("erase", ERASED, "--reason", "withdrew by email", "--yes")
        assert f"Erased participant {ERASED}" in out
        tombstone = live.status_bytes(ERASED)
        assert tombstone is not None

        live.proxy.fail_with = None
        sent.clear()
        yield ErasureScene(
            page,
            sent,
            {a["uploadId"] for a in queued if a["participantId"] == ERASED},
            {a["uploadId"] for a in queued if a["participantId"] == KEPT},
            tombstone,
        )
    finally:
        context.close()


def test_erasure_drops_the_erased_participants_queue_only(
    browser: Any, example_site: str, live: Live
) -> None:
    stored = live.stored
    layout = stored.layout
    with erasure_scene(browser, example_site, live) as scene:
        page = scene.page
        # The next flush meets the 410 and drops everything of ERASED; KEPT's items are stored.
        flushed = click_for_result(page, "#flush-queue")
        assert flushed == {"stored": 2, "rejected": 3, "remaining": 0}
        assert queue(page) == []
        mark = page.evaluate(f"localStorage.getItem('dataUploader.v1.erased.{ERASED}')")
        assert mark is not None and "erasedAt" in json.loads(mark)
        sent_ids = scene.sent_ids()
        assert sent_ids[0] in scene.erased_ids  # the first of the queue: it met the 410
        assert scene.kept_ids <= set(sent_ids)
        assert len(sent_ids) == len(set(sent_ids))  # nothing sent twice: no retry of a 410

        # Later calls for ERASED are refused in the page, without a request.
        scene.sent.clear()
        posts = live.upload_posts() + live.posts(RESTORE_PATH)
        for expression in (
            f"u.uploadSubmissionData('{ERASED}', {{n: 3}})",
            f"u.uploadUserStatus('{ERASED}')",
            f"u.uploadTrialData('{ERASED}', 'S1', 1, {{rt: 400}})",
            f"u.restoreUserStatus('{ERASED}')",
        ):
            answer = call(page, expression)
            assert (answer["status"], answer["reason"]) == ("error", "erased"), expression
        assert scene.sent == []
        assert queue(page) == []
        assert live.upload_posts() + live.posts(RESTORE_PATH) == posts

        # Nothing new under ERASED: only the tombstone, unchanged; KEPT has everything it sent.
        assert [i.key for i in stored.store.list(layout.participant_dir(ERASED))] == [
            layout.status_key(ERASED)
        ]
        assert live.status_bytes(ERASED) == scene.tombstone
        # The tombstone keeps the key's hash, so only this browser is told of the erasure.
        assert set(json.loads(scene.tombstone)) == {
            "participantId",
            "erased",
            "erasedAt",
            "participantKeyHash",
        }
        assert sorted(doc["submissionData"]["n"] for doc in stored.submissions(KEPT)) == [1, 2]
        assert stored.status(KEPT)["participantId"] == KEPT
        assert len(list(stored.store.list(f"{layout.audit_root}erasures/"))) == 1

        # The page's own participant is ERASED: hiding the page (its last status upload is for the
        # latest participant it uploaded for, KEPT) and a later visit send nothing for ERASED.
        scene.sent.clear()
        page.close()
        page = open_page(page.context, example_site, live.url, pid=ERASED)
        wait_queue_empty(page)  # KEPT's last status, sent on page-hide or by this page
        page.wait_for_timeout(1000)  # a wait for something that must not happen, not a timing assertion
        assert {u.get("participantId") for u in scene.sent_uploads()} <= {KEPT}
        assert [i.key for i in stored.store.list(layout.participant_dir(ERASED))] == [
            layout.status_key(ERASED)
        ]


def test_an_erased_participants_dropped_items_are_not_sent_in_the_same_flush(
    browser: Any, example_site: str, live: Live
) -> None:
    with erasure_scene(browser, example_site, live) as scene:
        click_for_result(scene.page, "#flush-queue")
        sent_ids = scene.sent_ids()
        assert sent_ids[0] in scene.erased_ids
        assert set(sent_ids[1:]) == scene.kept_ids
