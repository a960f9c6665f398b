"""A closed study in real Chromium: the browser module keeps the uploads the collector refuses
with ``study-closed`` and sends them once the research team reopens the study (docs/studies.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collector.keys import KeyLayout
from collector.storage import open_store
from collector.studies.manage import change_study_settings, register_study
from collector.studies.registry import make_study, study_prefix
from tests.browser.conftest import queue, results, wait_queue_empty
from tests.support.collector_process import CollectorProcess
from tests.support.settings import local_settings

pytestmark = [pytest.mark.browser, pytest.mark.processes]
PID = "CLOSED001"


def test_a_closed_study_keeps_the_uploads_and_sends_them_when_it_reopens(
    context: Any, open_study: Any, example_site: str, tmp_path: Path
) -> None:
    settings = local_settings(tmp_path / "data", retry_after_seconds=1, study_registry_check_seconds=0.2)
    store = open_store(settings)
    study = make_study(settings.data_prefix, "pilot", origins=[example_site], status="closed")
    register_study(store, settings.data_prefix, study, who="test")
    collector = CollectorProcess(settings, log_path=tmp_path / "collector.log")
    try:
        page = open_study(collector.url, pid=PID)
        page.evaluate(
            """() => {
              window.studyEvents = [];
              window.studyDemo.uploader.configureUploader({
                studyId: 'pilot',
                onEvent: (event) => window.studyEvents.push(event),
              });
            }"""
        )
        page.click("#complete-session")
        page.click("#submit-qualtrics")
        [answer] = results(page, 1)
        assert (answer["status"], answer["httpStatus"], answer["reason"]) == ("queued", 403, "study-closed")
        page.wait_for_function(
            "window.studyEvents.some((e) => e.type === 'study-unavailable' && e.reason === 'study-closed')"
        )
        kept = queue(page)
        assert kept and all(item.get("studyId") == "pilot" for item in kept), kept
        layout = KeyLayout(study_prefix(settings.data_prefix, "pilot"))
        assert list(store.list(layout.participant_dir(PID))) == []
        assert list(store.list(KeyLayout(settings.data_prefix).participant_dir(PID))) == []

        change_study_settings(store, settings.data_prefix, "pilot", {"status": "open"}, who="test")
        wait_queue_empty(page)
        status = json.loads(store.get(layout.status_key(PID)).body)
        assert status["studyId"] == "pilot" and status["totalSessionsCompleted"] == 1
        assert list(store.list(KeyLayout(settings.data_prefix).participant_dir(PID))) == []
    finally:
        collector.stop()
        store.close()
