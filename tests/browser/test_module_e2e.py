"""The module imported straight from the collector by a page of another origin, as a new user would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Stored
from tests.support.collector_process import CollectorProcess
from tests.support.settings import local_settings

pytestmark = [pytest.mark.browser, pytest.mark.processes]

IMPORT = "(url) => import(url + '/js/data-uploader.js').then((m) => { window.m = m; })"


def blank_page(context: Any, example_site: str) -> Any:
    """A page of another origin than the collector's, with nothing of the module on it."""
    page = context.new_page()
    page.goto(example_site + "/")
    return page


def test_the_seed_console_test_works_from_the_study_page(
    context: Any, example_site: str, local_collector: tuple[CollectorProcess, Stored]
) -> None:
    """No configuration: the uploads go to the collector the module was imported from."""
    collector, stored = local_collector
    page = blank_page(context, example_site)
    answer = page.evaluate(
        """(url) => import(url + '/js/data-uploader.js')
             .then((m) => m.uploadSubmissionData('TEST123', {test: 'data'}))""",
        collector.url,
    )
    assert answer["status"] == "success", answer
    (document,) = stored.submissions("TEST123")
    assert document["submissionData"] == {"test": "data"}
    assert page.evaluate("Object.keys(localStorage).filter((k) => k.includes('.item.'))") == []


def test_one_upload_is_a_batch_of_one_through_the_pump(
    context: Any, example_site: str, local_collector: tuple[CollectorProcess, Stored]
) -> None:
    collector, stored = local_collector
    page = blank_page(context, example_site)
    posts: list[tuple[str, Any]] = []
    page.on("request", lambda r: r.method == "POST" and posts.append((r.url, r.post_data_json)))
    page.evaluate(IMPORT, collector.url)
    answer = page.evaluate("m.uploadSubmissionData('P001ABC', {n: 1})")
    assert answer["status"] == "success"
    ((url, body),) = posts
    assert url == collector.url + "/api/upload-user-data/batch"
    assert [upload["uploadId"] for upload in body["uploads"]] == [answer_id(stored)]


def answer_id(stored: Stored) -> str:
    (document,) = stored.submissions("P001ABC")
    return str(document["uploadId"])


@pytest.fixture
def small_collector(tmp_path: Path) -> Iterator[tuple[CollectorProcess, Stored]]:
    """A collector whose body limit is 100 000 bytes."""
    settings = local_settings(tmp_path / "data", max_upload_bytes=100_000)
    process = CollectorProcess(settings, log_path=tmp_path / "collector.log")
    stored = Stored(settings)
    yield process, stored
    stored.store.close()
    process.stop()


def test_an_upload_too_large_is_kept_and_given_to_the_participant_as_a_file(
    context: Any, example_site: str, small_collector: tuple[CollectorProcess, Stored]
) -> None:
    collector, stored = small_collector
    page = blank_page(context, example_site)
    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    page.evaluate(IMPORT, collector.url)
    answer = page.evaluate("m.uploadSubmissionData('P001ABC', {text: 'x'.repeat(150000)})")
    assert (answer["status"], answer["reason"], answer["persisted"]) == ("error", "too-large", True)
    assert posts == []  # not sent to be refused
    (kept,) = page.evaluate("m.getQueueState().items")
    assert kept["tooLarge"] is True
    # Smaller uploads still go out; the large one stays.
    assert page.evaluate("m.uploadSubmissionData('P001ABC', {n: 1})")["status"] == "success"
    assert len(stored.submissions("P001ABC")) == 1
    assert len(page.evaluate("m.getQueueState().items")) == 1

    with page.expect_download() as download:
        backup = page.evaluate("m.downloadBackup('P001ABC')")
    saved = json.loads(Path(download.value.path()).read_text())
    assert backup["count"] == 1
    assert download.value.suggested_filename == backup["filename"]
    (upload,) = saved["uploads"]
    assert upload["submissionData"]["text"] == "x" * 150000
    assert upload["uploadId"] == kept["uploadId"]
    assert "participantKey" not in upload


def test_restore_and_backup_code_is_fetched_only_when_first_called(
    context: Any, example_site: str, local_collector: tuple[CollectorProcess, Stored]
) -> None:
    """A page that only uploads never fetches js/uploader-extras.js; the first restore fetches it."""
    collector, _ = local_collector
    page = blank_page(context, example_site)
    modules: list[str] = []
    page.on("request", lambda r: r.url.endswith(".js") and modules.append(r.url.rsplit("/", 1)[1]))
    page.evaluate(IMPORT, collector.url)
    assert page.evaluate("m.uploadSubmissionData('P001ABC', {n: 1})")["status"] == "success"
    assert "uploader-extras.js" not in modules
    assert set(modules) == {"data-uploader.js", "collector-common.js", "seed-study.js"}
    restored = page.evaluate("m.restoreUserStatus('P001ABC')")
    assert (restored["status"], restored["participantId"]) == ("success", "P001ABC")  # the upload made it
    assert modules.count("uploader-extras.js") == 1
    assert page.evaluate("m.downloadBackup('P001ABC').then((b) => b.count)") == 0
    assert modules.count("uploader-extras.js") == 1  # loaded once, then kept


def test_when_the_extras_cannot_be_loaded_the_calls_still_resolve(
    context: Any, example_site: str, local_collector: tuple[CollectorProcess, Stored]
) -> None:
    collector, _ = local_collector
    page = blank_page(context, example_site)
    page.route("**/js/uploader-extras.js", lambda route: route.abort())
    page.evaluate(IMPORT, collector.url)
    restored = page.evaluate("m.restoreUserStatus('P001ABC')")
    assert (restored["status"], restored["participantId"], restored["restored"]) == ("error", "P001ABC", {})
    assert restored["error"]
    backup = page.evaluate("m.downloadBackup('P001ABC')")
    assert (backup["status"], backup["count"]) == ("error", 0)
