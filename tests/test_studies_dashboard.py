"""The dashboard and the export per study, on both backends: a study that only sends trials is a
first-class study (participants with their trial counts, the funnel from its milestones, a trial
session's trials as a table), and a study's page closes or archives it with a CSRF-checked form.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from collector.admin.bounded import PAGE_ROWS
from collector.app import create_app
from collector.cli import main
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from collector.studies.manage import register_study
from collector.studies.registry import make_study, read_registry, study_prefix
from tests.support.collector_process import settings_environment
from tests.support.exports import read_table
from tests.support.settings import TEST_ADMIN_PASSWORD, racing_no_erasure

URL = "/api/upload-user-data"


def trial(pid: str, index: int, session: str = "run-1", **data: Any) -> dict[str, Any]:
    return {
        "participantId": pid,
        "studyId": "jspsych",
        "uploadType": "trial",
        "sessionId": session,
        "trialIndex": index,
        "trialData": {"rt": 300 + index, "response": "j", "trial_type": "html-keyboard-response", **data},
    }


@pytest.fixture
def client(settings: Settings, store: ObjectStore) -> Iterator[TestClient]:
    study = make_study(
        settings.data_prefix, "jspsych", title="Stroop", milestones=["consented", "finishedTask"]
    )
    register_study(store, settings.data_prefix, study, who="test")
    # Nothing in this module races an upload against an erasure: no settle wait.
    quick = racing_no_erasure(settings).model_copy(update={"study_registry_check_seconds": 0})
    with TestClient(create_app(quick)) as test:
        answer = test.post("/admin/login", data={"password": TEST_ADMIN_PASSWORD}, follow_redirects=False)
        assert answer.status_code == 303
        yield test


def seed(client: TestClient) -> None:
    """Two participants with trials only, one with a status too, and one in the default study."""
    for pid, count in (("T1", 3), ("T2", 2)):
        for index in range(count):
            assert client.post(URL, json=trial(pid, index)).status_code == 200
    assert client.post(URL, json=trial("T2", 0, session="run-2")).status_code == 200
    status = {"participantId": "T3", "studyId": "jspsych", "consented": True, "finishedTask": False}
    assert client.post(URL, json=status).status_code == 200
    assert client.post(URL, json={"participantId": "D1", "hasSeenWelcome": True}).status_code == 200


def test_trial_only_participants_in_the_study_dashboard(client: TestClient) -> None:
    seed(client)
    page = client.get("/admin/participants?study=jspsych")
    assert page.status_code == 200
    table = page.text[page.text.index('id="participants"') :]
    for pid in ("T1", "T2", "T3"):
        assert f'href="/admin/participants/{pid}?study=jspsych"' in table
    assert "D1" not in table
    assert '<td class="num">3 (1)</td>' in table and '<td class="num">3 (2)</td>' in table
    overview = client.get("/admin?study=jspsych").text
    assert re.search(r'id="participant-count">3<', overview)
    funnel = overview[overview.index('id="funnel"') :]
    assert "consented" in funnel and "finishedTask" in funnel and "tutorial seen" not in funnel
    default = client.get("/admin").text
    assert re.search(r'id="participant-count">1<', default) and "tutorial seen" in default
    completeness = client.get("/admin/completeness?study=jspsych").text
    assert "Study jspsych." in completeness and 'href="/admin/participants/T1?study=jspsych"' in completeness
    # Every link of a study's page stays in the study.
    assert 'href="/admin/export.zip?format=csv&amp;study=jspsych"' in page.text
    assert client.get("/admin/participants?study=nosuch").status_code == 404
    assert client.get("/admin/participants?study=..%2Fx").status_code == 404


def test_trial_only_participants_in_the_study_export(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    seed(client)
    archive = zipfile.ZipFile(io.BytesIO(client.get("/admin/export.zip?format=csv&study=jspsych").content))
    rows = list(csv.DictReader(io.StringIO(archive.read("export/participants.csv").decode())))
    counts = {
        row["participant_id"]: (row["stored_trials"], row["stored_trial_sessions"], row["status_key"])
        for row in rows
    }
    layout = KeyLayout(study_prefix(settings.data_prefix, "jspsych"))
    assert counts == {"T1": ("3", "1", ""), "T2": ("3", "2", ""), "T3": ("0", "0", layout.status_key("T3"))}
    result = CliRunner().invoke(
        main,
        ["export", "--study", "jspsych", "--out", str(tmp_path / "out")],
        env=settings_environment(settings),
    )
    assert result.exit_code == 0, result.output
    assert sorted(read_table(tmp_path / "out", "participants", "csv")["participant_id"]) == ["T1", "T2", "T3"]
    assert len(read_table(tmp_path / "out", "trials", "csv")) == 6
    default = CliRunner().invoke(
        main, ["export", "--out", str(tmp_path / "d")], env=settings_environment(settings)
    )
    assert default.exit_code == 0
    assert list(read_table(tmp_path / "d", "participants", "csv")["participant_id"]) == ["D1"]


def test_a_trial_session_page_shows_its_trials_as_a_paged_table(
    client: TestClient, store: ObjectStore, settings: Settings
) -> None:
    layout = KeyLayout(study_prefix(settings.data_prefix, "jspsych"))
    for index in range(PAGE_ROWS + 1):  # written directly: one page and one trial more
        document = {**trial("P1", index), "serverReceivedAt": f"2026-11-25T10:00:{index % 60:02d}.000Z"}
        if index == 1:
            document["keyVerified"] = False
            document["trialData"]["stimulus"] = "<script>alert(1)</script>"
        store.put(layout.trial_key("P1", "run-1", index), json.dumps(document).encode())
    participant = client.get("/admin/participants/P1?study=jspsych").text
    assert 'href="/admin/participants/P1/trials/run-1?study=jspsych"' in participant
    first = client.get("/admin/participants/P1/trials/run-1?study=jspsych")
    assert first.status_code == 200
    table = first.text[first.text.index('id="trials"') :]
    header = table[: table.index("</thead>")]
    assert re.findall(r"<th>([^<]*)</th>", header)[:6] == [
        "Index",
        "Received (UTC)",
        "Verified",
        "trial_type",
        "stimulus",
        "response",
    ]
    assert table.count("<tr>") == PAGE_ROWS + 1  # the header's row and a page of trials
    assert "<script>alert" not in first.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in table
    assert '<td class="warn">no</td>' in table
    assert 'href="?page=2&amp;study=jspsych"' in first.text
    second = client.get("/admin/participants/P1/trials/run-1?study=jspsych&page=2").text
    assert f'<td class="num">{PAGE_ROWS}</td>' in second and "Page 2 of 2" in second
    assert client.get("/admin/participants/P1/trials/run-1").status_code == 404  # not in the default study
    assert client.get("/admin/participants/P1/trials/nosuch?study=jspsych").status_code == 404
    assert client.get("/admin/participants/P1/trials/a.b?study=jspsych").status_code == 404


def test_the_study_page_closes_and_archives_with_a_form_token(
    client: TestClient, store: ObjectStore, settings: Settings
) -> None:
    page = client.get("/admin/studies/jspsych")
    assert page.status_code == 200 and 'id="study-status">open<' in page.text
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
    refused = client.post("/admin/studies/jspsych/status", data={"status": "closed", "token": "x"})
    assert refused.status_code == 403
    cross_site = client.post(
        "/admin/studies/jspsych/status",
        data={"status": "closed", "token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert read_registry(store, settings.data_prefix).get("jspsych").status == "open"
    closed = client.post(
        "/admin/studies/jspsych/status",
        data={"status": "closed", "token": token, "reason": "pilot done"},
        follow_redirects=False,
    )
    assert closed.status_code == 303
    assert read_registry(store, settings.data_prefix).get("jspsych").status == "closed"
    refused_upload = client.post(URL, json=trial("NEW", 0))
    assert refused_upload.status_code == 403 and refused_upload.json()["reason"] == "study-closed"
    audit = [
        info.key for info in store.list(study_prefix(settings.data_prefix, "jspsych") + "/audit/studies/")
    ]
    records = [json.loads(store.get(key).body) for key in audit]
    assert any(r["by"] == "dashboard" and r["reason"] == "pilot done" for r in records)
    bad = client.post("/admin/studies/jspsych/status", data={"status": "paused", "token": token})
    assert bad.status_code == 400
    assert client.get("/admin/studies/nosuch").status_code == 404
    client.cookies.clear()  # logged out
    assert client.post("/admin/studies/jspsych/status", data={"status": "open"}).status_code == 401


def test_the_all_studies_page_counts_each_study(client: TestClient) -> None:
    seed(client)
    page = client.get("/admin/studies")
    assert page.status_code == 200
    assert 'href="/admin?study=jspsych">jspsych</a>' in page.text
    assert re.search(r'id="all-participants">4<', page.text)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_of_all_studies_has_a_study_id_column(
    client: TestClient, settings: Settings, store: ObjectStore, tmp_path: Path, fmt: str
) -> None:
    seed(client)
    register_study(store, settings.data_prefix, make_study(settings.data_prefix, "-empty"), who="test")
    env = settings_environment(settings)
    result = CliRunner().invoke(
        main, ["export", "--all-studies", "--format", fmt, "--out", str(tmp_path)], env=env
    )
    assert result.exit_code == 0, result.output
    assert "Exported 4 participants" in result.output
    participants = read_table(tmp_path, "participants", fmt)
    assert list(participants.columns[:2]) == ["study_id", "participant_id"]
    # The default study's rows: empty in CSV, null in JSON Lines and Parquet.
    study_ids = [s if isinstance(s, str) and s else None for s in participants["study_id"]]
    assert ("" in list(participants["study_id"])) == (fmt == "csv")
    by_study = set(zip(study_ids, participants["participant_id"], strict=True))
    assert by_study == {(None, "D1"), ("jspsych", "T1"), ("jspsych", "T2"), ("jspsych", "T3")}
    trials = read_table(tmp_path, "trials", fmt)
    assert (
        list(trials.columns[:1]) == ["study_id"]
        and set(trials["study_id"]) == {"jspsych"}
        and len(trials) == 6
    )
    assert "# Study: jspsych" in (tmp_path / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no scratch left
    both = CliRunner().invoke(
        main, ["export", "--all-studies", "--study", "jspsych", "--out", str(tmp_path)], env=env
    )
    assert both.exit_code != 0


def test_dashboard_erasure_and_key_release_stay_inside_the_study(
    client: TestClient, store: ObjectStore, settings: Settings
) -> None:
    key = "k" * 32
    for study in (None, "jspsych"):
        body = {"participantId": "SAME", "participantKey": key, "consented": True}
        if study:
            body["studyId"] = study
        assert client.post(URL, json=body).status_code == 200
    form = client.get("/admin/participants/SAME/erase?study=jspsych").text
    assert 'action="/admin/participants/SAME/erase?study=jspsych"' in form
    token = re.search(r'name="token" value="([^"]+)"', form).group(1)
    erased = client.post(
        "/admin/participants/SAME/erase?study=jspsych",
        data={"confirm": "SAME", "reason": "withdrew", "token": token},
    )
    assert erased.status_code == 200, erased.text
    default = KeyLayout(settings.data_prefix)
    study = KeyLayout(study_prefix(settings.data_prefix, "jspsych"))
    assert json.loads(store.get(study.status_key("SAME")).body)["erased"] is True
    assert json.loads(store.get(default.status_key("SAME")).body)["consented"] is True
    erased_there = {"participantId": "SAME", "studyId": "jspsych", "participantKey": key}
    assert client.post(URL, json=erased_there).status_code == 410
    assert client.post(URL, json={"participantId": "SAME", "participantKey": key}).status_code == 200
    page = client.get("/admin/participants/SAME").text
    assert 'action="/admin/participants/SAME/release-key"' in page
    assert "participantKeyHash" in store.get(default.status_key("SAME")).body.decode()


def test_studies_are_registered_and_changed_from_the_dashboard(
    client: TestClient, store: ObjectStore, settings: Settings
) -> None:
    page = client.get("/admin/studies").text
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)
    fields = {
        "token": token,
        "study_id": "pilot2",
        "title": "Second pilot",
        "origins": "https://a.example.org\nhttps://b.example.org:8443",
        "max_participants": "40",
        "milestones": "consented, finished",
    }
    added = client.post("/admin/studies", data=fields, follow_redirects=False)
    assert added.status_code == 303 and added.headers["location"] == "/admin/studies/pilot2"
    study = read_registry(store, settings.data_prefix).get("pilot2")
    assert study.origins == ("https://a.example.org", "https://b.example.org:8443")
    assert (study.max_participants, study.milestones, study.status) == (40, ("consented", "finished"), "open")
    again = client.post("/admin/studies", data=fields)
    assert again.status_code == 400 and "already registered" in again.text
    for bad in ({"study_id": "../x"}, {"origins": "javascript:alert(1)"}, {"max_participants": "-3"}):
        answer = client.post("/admin/studies", data={**fields, "study_id": "pilot3", **bad})
        assert answer.status_code == 400, bad
    assert (
        client.post("/admin/studies", data={**fields, "study_id": "pilot4", "token": "no"}).status_code == 403
    )
    assert set(read_registry(store, settings.data_prefix).studies) == {"jspsych", "pilot2"}

    shown = client.get("/admin/studies/pilot2").text
    assert "https://a.example.org\nhttps://b.example.org:8443</textarea>" in shown
    changed = client.post(
        "/admin/studies/pilot2/settings",
        data={"token": token, "title": "Renamed", "origins": "https://c.example.org", "milestones": "x"},
        follow_redirects=False,
    )
    assert changed.status_code == 303
    study = read_registry(store, settings.data_prefix).get("pilot2")
    assert (study.title, study.origins, study.max_participants, study.milestones) == (
        "Renamed",
        ("https://c.example.org",),
        None,
        ("x",),
    )
    refused = client.post("/admin/studies/pilot2/settings", data={"token": token, "max_participants": "lots"})
    assert (
        refused.status_code == 400
        and read_registry(store, settings.data_prefix).get("pilot2").title == "Renamed"
    )


def test_the_completeness_report_per_study_and_for_all(client: TestClient, settings: Settings) -> None:
    seed(client)
    env = settings_environment(settings)
    one = CliRunner().invoke(main, ["report", "--json", "--study", "jspsych"], env=env)
    assert one.exit_code == 0, one.output
    [study] = json.loads(one.stdout)["studies"]
    assert (study["study"], study["counts"]["started"], study["counts"]["trialSessions"]) == ("jspsych", 3, 3)
    every = CliRunner().invoke(main, ["report", "--json", "--all-studies"], env=env)
    assert every.exit_code == 0, every.output
    started = {entry["study"]: entry["counts"]["started"] for entry in json.loads(every.stdout)["studies"]}
    assert started == {"default": 1, "jspsych": 3}
    assert CliRunner().invoke(main, ["report", "--study", "nosuch"], env=env).exit_code != 0
