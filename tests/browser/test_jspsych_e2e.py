"""A real jsPsych 8 experiment (examples/jspsych/) in headless Chromium, saving each trial to the collector.

jsPsych and its plugins come from npm (``node_modules`` at the repository root, installed by the test
command); the repository root is served on its own origin, so the page talks to the collector
cross-origin and imports ``/js/jspsych-collector.js`` from the collector, as a study would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.cli import main
from collector.settings import Settings
from tests.browser.conftest import FAST, Stored
from tests.support.collector_process import REPO, CollectorProcess, settings_environment
from tests.support.helper_servers import FaultProxy, static_site
from tests.support.settings import local_settings, s3_settings

browser_test = [pytest.mark.browser, pytest.mark.processes]
JSPSYCH = REPO / "node_modules" / "jspsych" / "dist" / "index.browser.min.js"
KEYBOARD_TRIALS = 29  # then the survey: 30 trials in all
ALL_TRIALS = KEYBOARD_TRIALS + 1


# --- the module route (no browser needed)


def test_the_collector_serves_the_jspsych_module_beside_the_uploader(tmp_path: Path) -> None:
    settings = local_settings(tmp_path / "data", allowed_origins="https://study.example")
    with TestClient(create_app(settings)) as client:
        answer = client.get("/js/jspsych-collector.js", headers={"Origin": "https://elsewhere.example"})
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/javascript")
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.content == (REPO / "js" / "jspsych-collector.js").read_bytes()
        # It imports the uploader relatively, so both come from the same collector.
        assert b"from './data-uploader.js'" in answer.content
        assert client.get("/js/data-uploader.js").status_code == 200
        again = client.get("/js/jspsych-collector.js", headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304
        assert client.get("/js/other.js").status_code == 404


# --- fixtures


@pytest.fixture(scope="session")
def repo_site() -> Iterator[str]:
    """The repository root on its own loopback origin: examples/jspsych/ and node_modules/."""
    if not JSPSYCH.is_file():
        pytest.fail("jsPsych is not installed: run `npm ci` at the repository root (the test command does)")
    site = static_site(REPO)
    yield site.url
    site.stop()


class TrialStore(Stored):
    """What the collector stored for one participant: trials by (session, index), and submissions."""

    def trial_keys(self, participant_id: str) -> list[str]:
        prefix = self.layout.participant_dir(participant_id) + "trials/"
        return sorted(info.key for info in self.store.list(prefix))

    def trials(self, participant_id: str) -> dict[tuple[str, int], dict[str, Any]]:
        found: dict[tuple[str, int], dict[str, Any]] = {}
        for key in self.trial_keys(participant_id):
            session, name = key.split("/")[-2:]
            index = int(name.removesuffix(".json"))
            assert (session, index) not in found
            found[(session, index)] = json.loads(self.store.get(key).body)
        return found


def collector_settings(backend: str, root: Path, moto_endpoint: str | None, site: str) -> Settings:
    if backend == "s3":
        assert moto_endpoint
        return s3_settings(moto_endpoint, retry_after_seconds=1, allowed_origins=site)
    return local_settings(root, retry_after_seconds=1, allowed_origins=site)


@pytest.fixture
def collector(tmp_path: Path, repo_site: str) -> Iterator[tuple[CollectorProcess, TrialStore, Settings]]:
    settings = collector_settings("local", tmp_path / "data", None, repo_site)
    process = CollectorProcess(settings, log_path=tmp_path / "collector.log")
    stored = TrialStore(settings)
    yield process, stored, settings
    stored.store.close()
    process.stop()


def open_experiment(context: Any, site: str, collector_url: str, participant: str, page: Any = None) -> Any:
    options = {"collector": collector_url, "participant": participant, "trials": KEYBOARD_TRIALS, **FAST}
    query = urlencode(options)
    page = page or context.new_page()
    page.goto(f"{site}/examples/jspsych/index.html?{query}")
    page.wait_for_selector("body[data-ready=true]")
    return page


def session_of(page: Any) -> dict[str, Any]:
    return page.evaluate("window.experiment.session")


def answer_trials(page: Any, first: int, last: int) -> None:
    """Press a key in keyboard trials ``first``..``last`` (inclusive), each once it is on screen."""
    for number in range(first, last + 1):
        page.wait_for_selector(f'#stim[data-trial="{number}"]')
        page.keyboard.press("f" if number % 2 else "j")
    # The trial after the last one is on screen: jsPsych has called on_data_update for ``last``.
    if last + 1 < KEYBOARD_TRIALS:
        page.wait_for_selector(f'#stim[data-trial="{last + 1}"]')
    else:
        page.wait_for_selector("#jspsych-survey-text-next")


def finish_survey(page: Any) -> None:
    page.fill("#input-0", "fine")
    page.click("#jspsych-survey-text-next")
    page.wait_for_selector("body[data-done=true]")


def assert_complete_session(stored: TrialStore, participant: str, session_id: str) -> dict:
    trials = stored.trials(participant)
    assert sorted(trials) == [(session_id, index) for index in range(ALL_TRIALS)]
    for (_, index), doc in trials.items():
        assert doc["participantId"] == participant
        assert doc["sessionId"] == session_id
        assert doc["trialIndex"] == index
        # The trial shown at this index: nothing re-shown, nothing skipped.
        assert doc["trialData"]["stimulus_number"] == index
        assert doc["trialData"]["study"] == "jspsych-example"
    (submission,) = stored.submissions(participant)
    assert submission["submissionData"]["sessionId"] == session_id
    return trials


# --- the experiment end to end


@pytest.mark.parametrize("backend", ["local", "s3"])
@pytest.mark.browser
@pytest.mark.processes
def test_thirty_trials_complete_thirty_objects_and_one_submission(
    context: Any, repo_site: str, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    moto = request.getfixturevalue("moto_endpoint") if backend == "s3" else None
    settings = collector_settings(backend, tmp_path / "data", moto, repo_site)
    stored = TrialStore(settings)
    with CollectorProcess(settings, log_path=tmp_path / "collector.log") as process:
        page = open_experiment(context, repo_site, process.url, "PJSPSYCH30")
        session = session_of(page)
        assert session["completedTrials"] == 0 and not session["resumed"]
        answer_trials(page, 0, KEYBOARD_TRIALS - 1)
        finish_survey(page)
        trials = assert_complete_session(stored, "PJSPSYCH30", session["id"])
        assert trials[(session["id"], KEYBOARD_TRIALS)]["trialData"]["response"] == {"feedback": "fine"}
        (submission,) = stored.submissions("PJSPSYCH30")
        data = submission["submissionData"]
        assert data["trialCount"] == ALL_TRIALS
        assert [trial["trial_index"] for trial in data["trials"]] == list(range(ALL_TRIALS))
    stored.store.close()


@pytest.mark.parametrize("how", ["tab-closed", "reload"])
@pytest.mark.browser
@pytest.mark.processes
def test_leaving_after_trial_12_resumes_the_same_session_and_stores_each_trial_once(
    context: Any, repo_site: str, collector: tuple[CollectorProcess, TrialStore, Settings], how: str
) -> None:
    process, stored, _ = collector
    page = open_experiment(context, repo_site, process.url, "PRESUME12")
    first = session_of(page)
    answer_trials(page, 0, 11)  # trials 0-11 done; trial 12 is on screen
    if how == "tab-closed":
        page.close()  # fires pagehide, as closing a tab does
        page = open_experiment(context, repo_site, process.url, "PRESUME12")
    else:
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
    again = session_of(page)
    assert again["id"] == first["id"]
    assert again["completedTrials"] == 12
    assert again["resumed"] is True
    # The queue (kept across the reload) sends what the closed page had not: 0-11, once each.
    stored.wait_for(lambda: len(stored.trial_keys("PRESUME12")) == 12)
    assert sorted(stored.trials("PRESUME12")) == [(first["id"], index) for index in range(12)]

    answer_trials(page, 12, KEYBOARD_TRIALS - 1)  # the experiment goes on at trial 12
    finish_survey(page)
    trials = assert_complete_session(stored, "PRESUME12", first["id"])
    assert [trials[(first["id"], i)]["trialData"]["session_run"] for i in (0, 11, 12, 29)] == [0, 0, 1, 1]
    (submission,) = stored.submissions("PRESUME12")
    assert submission["submissionData"]["resumedFromTrial"] == 12


@pytest.fixture
def outage(tmp_path: Path, repo_site: str) -> Iterator[tuple[FaultProxy, TrialStore]]:
    """The collector behind a proxy that can make it unreachable (every request answered 503, no CORS)."""
    settings = collector_settings("local", tmp_path / "data", None, repo_site)
    process = CollectorProcess(settings, log_path=tmp_path / "collector.log")
    proxy = FaultProxy(process.url)
    stored = TrialStore(settings)
    yield proxy, stored
    stored.store.close()
    proxy.stop()
    process.stop()


@pytest.mark.browser
@pytest.mark.processes
def test_collector_down_for_trials_5_to_15_everything_arrives_once_and_the_participant_never_waits(
    context: Any, repo_site: str, outage: tuple[FaultProxy, TrialStore]
) -> None:
    proxy, stored = outage
    page = open_experiment(context, repo_site, proxy.url, "PDOWN515")
    session = session_of(page)
    answer_trials(page, 0, 4)
    stored.wait_for(lambda: len(stored.trial_keys("PDOWN515")) == 5)

    proxy.fail_with = 503
    # Every trial of the outage ends on a key press and the next one shows: the experiment never
    # waits for the network (a waiting hook would hold jsPsych between trials).
    answer_trials(page, 5, 15)
    assert len(stored.trial_keys("PDOWN515")) == 5  # nothing got through meanwhile

    proxy.fail_with = None
    answer_trials(page, 16, KEYBOARD_TRIALS - 1)
    finish_survey(page)
    assert_complete_session(stored, "PDOWN515", session["id"])


@pytest.mark.browser
@pytest.mark.processes
def test_flush_stores_everything_before_the_redirect_navigates(
    context: Any, repo_site: str, collector: tuple[CollectorProcess, TrialStore, Settings]
) -> None:
    process, stored, _ = collector
    seen_at_redirect: list[tuple[int, int]] = []

    def at_redirect(route: Any) -> None:
        # The browser asks for the redirect target: what is stored at this moment?
        seen_at_redirect.append((len(stored.trial_keys("PFLUSH01")), len(stored.submissions("PFLUSH01"))))
        route.continue_()

    context.route("**/examples/jspsych/done.html*", at_redirect)
    page = open_experiment(context, repo_site, process.url, "PFLUSH01")
    answer_trials(page, 0, KEYBOARD_TRIALS - 1)
    finish_survey(page)
    assert seen_at_redirect == [(ALL_TRIALS, 1)]


@pytest.mark.browser
@pytest.mark.processes
def test_the_trials_export_has_one_row_per_stored_trial(
    context: Any, repo_site: str, collector: tuple[CollectorProcess, TrialStore, Settings], tmp_path: Path
) -> None:
    process, stored, settings = collector
    page = open_experiment(context, repo_site, process.url, "PEXPORT1")
    session = session_of(page)
    answer_trials(page, 0, 9)
    page.close()  # a partial run: 10 trials, no submission
    stored.wait_for(lambda: len(stored.trial_keys("PEXPORT1")) == 10, timeout=30)
    page = open_experiment(context, repo_site, process.url, "PEXPORT1")
    answer_trials(page, 10, KEYBOARD_TRIALS - 1)
    finish_survey(page)

    out = tmp_path / "export"
    result = CliRunner().invoke(
        main, ["export", "--out", str(out), "--format", "jsonl"], env=settings_environment(settings)
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text("utf-8").splitlines() if line]

    def field(row: dict[str, Any], camel: str) -> Any:
        # The table's own column, camelCase as in the request, else snake_case like the other tables
        # (jsPsych's run-local ``trial_index`` is a trial field: the camelCase column comes first).
        snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
        return row[camel] if camel in row else row[snake]

    mine = [row for row in rows if field(row, "participantId") == "PEXPORT1"]
    keys = sorted((field(row, "sessionId"), int(field(row, "trialIndex"))) for row in mine)
    assert keys == sorted(stored.trials("PEXPORT1")) == [(session["id"], i) for i in range(ALL_TRIALS)]
