"""Several studies on one collector, over HTTP to the real app on both backends (local and moto).

A registered study keeps its data under its own prefix; the default study (no ``studyId``) is the
collector as it was. Refusals: unknown study 404, closed or full 403 for new participants only,
archived 410, a page outside the study's origins 403.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.cli import main
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from collector.studies.admission import admissions_key
from collector.studies.manage import change_study_settings, register_study
from collector.studies.registry import (
    InvalidStudy,
    make_study,
    read_registry,
    registry_key,
    studies_root,
    study_prefix,
)
from tests.support.collector_process import settings_environment
from tests.support.counting_store import CountingStore

URL = "/api/upload-user-data"
BATCH = "/api/upload-user-data/batch"
RESTORE = "/api/user-status"
PILOT_ORIGIN = "https://pilot.example.org"
MAIN_ORIGIN = "https://main.example.org"
KEY_A = "a" * 32
KEY_B = "b" * 32


def status(pid: str, study: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "participantId": pid,
        "uploadType": "status",
        "timestamp": "2026-11-25T10:00:00.000Z",
        "hasSeenWelcome": True,
        **extra,
    }
    if study is not None:
        body["studyId"] = study
    return body


def submission(pid: str, study: str | None = None, **extra: Any) -> dict[str, Any]:
    return {**status(pid, study, **extra), "uploadType": "submission", "submissionData": {"answer": 3}}


def trial(pid: str, study: str | None = None, index: int = 0, session: str = "run-1") -> dict[str, Any]:
    body: dict[str, Any] = {
        "participantId": pid,
        "uploadType": "trial",
        "sessionId": session,
        "trialIndex": index,
        "trialData": {"rt": 400 + index, "response": "f"},
    }
    if study is not None:
        body["studyId"] = study
    return body


@pytest.fixture
def study_settings(settings: Settings) -> Settings:
    # Every registry change is seen at once (the default re-reads every 2 s), and a named origin
    # for the default study, so that CORS answers are not the local folder's "*".
    return settings.model_copy(update={"study_registry_check_seconds": 0, "allowed_origins": MAIN_ORIGIN})


@pytest.fixture
def client(study_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(study_settings)) as test_client:
        yield test_client


def register(store: ObjectStore, settings: Settings, study_id: str = "pilot", **options: Any) -> None:
    options.setdefault("origins", [PILOT_ORIGIN])
    register_study(
        store, settings.data_prefix, make_study(settings.data_prefix, study_id, **options), who="test"
    )


def change(store: ObjectStore, settings: Settings, study_id: str = "pilot", **changes: Any) -> None:
    change_study_settings(store, settings.data_prefix, study_id, changes, who="test")


def keys_under(store: ObjectStore, prefix: str) -> list[str]:
    return [info.key for info in store.list(prefix)]


def test_uploads_without_study_id_are_the_default_study_byte_for_byte(
    client: TestClient, store: ObjectStore, study_settings: Settings
) -> None:
    register(store, study_settings)  # a registered study changes nothing for the seed's calls
    body = submission("SEED1")
    answer = client.post(URL, json=body)
    assert answer.status_code == 200, answer.text
    layout = KeyLayout("volcano-audio-anonymized-data")
    assert answer.json()["filesUploaded"][0] == layout.status_key("SEED1")
    stored = json.loads(store.get(layout.status_key("SEED1")).body)
    assert "studyId" not in stored and stored["hasSeenWelcome"] is True
    assert keys_under(store, study_prefix(study_settings.data_prefix, "pilot") + "/participants/") == []


def test_a_second_study_is_isolated_and_the_same_id_is_two_participants(
    client: TestClient, store: ObjectStore, study_settings: Settings
) -> None:
    register(store, study_settings)
    assert client.post(URL, json={**status("P1"), "participantKey": KEY_A}).status_code == 200
    answer = client.post(URL, json={**submission("P1", "pilot"), "participantKey": KEY_B})
    assert answer.status_code == 200, answer.text
    pilot = KeyLayout(study_prefix(study_settings.data_prefix, "pilot"))
    assert all(key.startswith(pilot.participant_dir("P1")) for key in answer.json()["filesUploaded"])
    # studyId is the client's field: stored as sent.
    assert json.loads(store.get(pilot.status_key("P1")).body)["studyId"] == "pilot"
    # Each study's participant P1 holds its own key: the other study's key is not theirs.
    assert client.post(URL, json={**status("P1", "pilot"), "participantKey": KEY_A}).status_code == 403
    assert client.post(URL, json={**status("P1"), "participantKey": KEY_B}).status_code == 403
    restored = client.post(RESTORE, json={"participantId": "P1", "participantKey": KEY_B, "studyId": "pilot"})
    assert restored.status_code == 200 and restored.json()["userStatus"]["studyId"] == "pilot"
    assert client.post(RESTORE, json={"participantId": "P1", "participantKey": KEY_B}).status_code == 404
    default = KeyLayout("volcano-audio-anonymized-data")
    assert keys_under(store, default.participants_root) == [default.status_key("P1")]


def test_unknown_and_malformed_study_ids(
    client: TestClient, store: ObjectStore, study_settings: Settings
) -> None:
    answer = client.post(URL, json=status("P1", "nosuch"))
    assert answer.status_code == 404
    assert answer.json() == {
        "status": "error",
        "error": "no study nosuch is registered on this collector",
        "reason": "unknown-study",
    }
    for bad in ("../default", "", 7, "x" * 65, None):
        body = {**status("P1"), "studyId": bad}
        code = client.post(URL, json=body).status_code
        assert code == (200 if bad is None else 400), bad
    batch = client.post(BATCH, json={"uploads": [status("P2"), trial("P2", "nosuch")]})
    results = batch.json()["results"]
    assert [r["httpStatus"] for r in results] == [200, 404]
    assert results[1]["reason"] == "unknown-study"
    restore = client.post(RESTORE, json={"participantId": "P2", "studyId": "nosuch"})
    assert restore.status_code == 404 and restore.json()["reason"] == "unknown-study"
    assert keys_under(store, studies_root(study_settings.data_prefix) + "/") == []


def test_a_closed_study_refuses_new_participants_and_keeps_those_already_in(
    client: TestClient, store: ObjectStore, study_settings: Settings
) -> None:
    register(store, study_settings)
    assert client.post(URL, json=status("IN1", "pilot")).status_code == 200
    assert client.post(URL, json=trial("TRIALS1", "pilot")).status_code == 200  # trials only, no status
    change(store, study_settings, status="closed")
    for body in (status("NEW1", "pilot"), submission("NEW1", "pilot"), trial("NEW1", "pilot")):
        answer = client.post(URL, json=body)
        assert answer.status_code == 403 and answer.json()["reason"] == "study-closed", body
    for body in (
        submission("IN1", "pilot"),
        trial("IN1", "pilot"),
        trial("TRIALS1", "pilot", index=1),
        status("TRIALS1", "pilot"),
    ):
        assert client.post(URL, json=body).status_code == 200, body
    batch = client.post(BATCH, json={"uploads": [status("IN1", "pilot"), status("NEW2", "pilot")]}).json()
    assert [r["httpStatus"] for r in batch["results"]] == [200, 403]
    assert batch["results"][1]["reason"] == "study-closed"
    pilot = KeyLayout(study_prefix(study_settings.data_prefix, "pilot"))
    assert keys_under(store, pilot.participant_dir("NEW1")) == []
    assert keys_under(store, pilot.participant_dir("NEW2")) == []
    change(store, study_settings, status="open")  # reopened: the same upload is stored
    assert client.post(URL, json=status("NEW1", "pilot")).status_code == 200


def test_a_full_study_refuses_the_next_new_participant_only(
    client: TestClient, store: ObjectStore, study_settings: Settings
) -> None:
    register(store, study_settings, max_participants=2)
    assert client.post(URL, json=status("C1", "pilot")).status_code == 200
    assert client.post(URL, json=status("C1", "pilot")).status_code == 200  # counted once
    assert client.post(URL, json=trial("C2", "pilot")).status_code == 200
    for body in (status("C3", "pilot"), trial("C3", "pilot"), submission("C3", "pilot")):
        answer = client.post(URL, json=body)
        assert answer.status_code == 403 and answer.json()["reason"] == "study-full", body
    assert client.post(URL, json=submission("C2", "pilot")).status_code == 200
    admitted = json.loads(store.get(admissions_key(study_settings.data_prefix, "pilot")).body)
    assert admitted == {"participants": ["C1", "C2"]}
    change(store, study_settings, max_participants=3)
    assert client.post(URL, json=status("C3", "pilot")).status_code == 200


def test_a_cap_set_later_counts_the_participants_already_in(
    client: TestClient, store: ObjectStore, study_settings: Settings
) -> None:
    register(store, study_settings)
    for pid in ("E1", "E2"):
        assert client.post(URL, json=trial(pid, "pilot")).status_code == 200
    change(store, study_settings, max_participants=2)
    answer = client.post(URL, json=status("E3", "pilot"))
    assert answer.status_code == 403 and answer.json()["reason"] == "study-full"
    assert client.post(URL, json=status("E1", "pilot")).status_code == 200


def test_new_participants_racing_for_the_last_places_never_overfill(
    client: TestClient, store: ObjectStore, study_settings: Settings
) -> None:
    register(store, study_settings, max_participants=3)
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(lambda n: client.post(URL, json=status(f"R{n}", "pilot")).status_code, range(8))
        )
    assert sorted(codes) == [200, 200, 200, 403, 403, 403, 403, 403]
    pilot = KeyLayout(study_prefix(study_settings.data_prefix, "pilot"))
    assert len({k.split("/")[3] for k in keys_under(store, pilot.participants_root)}) == 3


def test_an_archived_study_refuses_everything(
    client: TestClient, store: ObjectStore, study_settings: Settings
) -> None:
    register(store, study_settings)
    assert client.post(URL, json={**status("A1", "pilot"), "participantKey": KEY_A}).status_code == 200
    change(store, study_settings, status="archived")
    for body in (status("A1", "pilot"), trial("A1", "pilot"), status("A2", "pilot")):
        answer = client.post(URL, json=body)
        assert answer.status_code == 410 and answer.json()["reason"] == "study-archived"
    restore = client.post(RESTORE, json={"participantId": "A1", "participantKey": KEY_A, "studyId": "pilot"})
    assert restore.status_code == 410
    batch = client.post(BATCH, json={"uploads": [trial("A1", "pilot", index=3)]}).json()
    assert batch["results"][0]["httpStatus"] == 410 and batch["results"][0]["reason"] == "study-archived"


def test_origins_are_checked_per_study_and_cors_allows_their_union(
    client: TestClient, store: ObjectStore, study_settings: Settings
) -> None:
    register(store, study_settings)
    elsewhere = client.post(URL, json=status("O1", "pilot"), headers={"Origin": "https://evil.example"})
    assert elsewhere.status_code == 403 and elsewhere.json()["reason"] == "origin"
    main_page = client.post(URL, json=status("O1", "pilot"), headers={"Origin": MAIN_ORIGIN})
    assert main_page.status_code == 403 and main_page.json()["reason"] == "origin"
    ok = client.post(URL, json=status("O1", "pilot"), headers={"Origin": PILOT_ORIGIN})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == PILOT_ORIGIN
    # The pilot's page without studyId would land in the default study: refused, not misfiled.
    stray = client.post(URL, json=status("O2"), headers={"Origin": PILOT_ORIGIN})
    assert stray.status_code == 403 and stray.json()["reason"] == "origin"
    assert client.post(URL, json=status("O2"), headers={"Origin": MAIN_ORIGIN}).status_code == 200
    # The default study's behaviour for origins nobody registered is unchanged (CORS decides).
    assert client.post(URL, json=status("O3"), headers={"Origin": "https://evil.example"}).status_code == 200

    def preflight(origin: str) -> str | None:
        answer = client.options(URL, headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        return answer.headers.get("access-control-allow-origin")

    assert preflight(PILOT_ORIGIN) == PILOT_ORIGIN
    assert preflight(MAIN_ORIGIN) == MAIN_ORIGIN
    assert preflight("https://evil.example") is None
    # An archived study's page still reads its answers: the 410 tells the module to drop its queue.
    change(store, study_settings, status="archived")
    assert preflight(PILOT_ORIGIN) == PILOT_ORIGIN
    archived = client.post(URL, json=status("O1", "pilot"), headers={"Origin": PILOT_ORIGIN})
    assert archived.status_code == 410 and archived.headers["access-control-allow-origin"] == PILOT_ORIGIN


def test_registry_changes_are_compare_and_swap_and_audited(store: ObjectStore, settings: Settings) -> None:
    prefix = settings.data_prefix

    def add(n: int) -> None:
        register(store, settings, f"s{n}")

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(add, range(6)))
    assert sorted(read_registry(store, prefix).studies) == [f"s{n}" for n in range(6)]
    with pytest.raises(InvalidStudy):
        register(store, settings, "s1")
    change(store, settings, "s1", status="closed")
    audit = keys_under(store, study_prefix(prefix, "s1") + "/audit/studies/")
    assert len(audit) == 2
    records = {r["action"]: r for r in (json.loads(store.get(key).body) for key in audit)}
    assert records["add"]["before"] is None and records["add"]["after"]["status"] == "open"
    record = records["set"]
    assert record["before"]["status"] == "open"
    assert record["after"]["status"] == "closed" and record["by"] == "test"


@pytest.mark.parametrize(
    "options",
    [
        {"origins": ["https://x.example/path"]},
        {"origins": ["javascript:alert(1)"]},
        {"title": "bad\u0007title"},
        {"status": "paused"},
        {"max_participants": 0},
        {"milestones": ["has space"]},
    ],
)
def test_study_definitions_are_checked(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidStudy):
        make_study("prefix", "pilot", **options)
    with pytest.raises(InvalidStudy):
        make_study("prefix", "../escape")


def test_a_registry_pointing_a_study_at_the_default_prefix_stores_nothing(
    client: TestClient, store: ObjectStore, study_settings: Settings
) -> None:
    hostile = {
        "version": 1,
        "studies": [{"id": "pilot", "prefix": study_settings.data_prefix, "status": "open", "origins": []}],
    }
    store.put(registry_key(study_settings.data_prefix), json.dumps(hostile).encode())
    answer = client.post(URL, json=status("H1", "pilot"))
    assert answer.status_code == 503
    assert keys_under(store, KeyLayout(study_settings.data_prefix).participants_root) == []


def test_cli_study_commands_and_tools_on_one_study(
    store: ObjectStore, settings: Settings, tmp_path: Path
) -> None:
    env = settings_environment(settings)
    run = CliRunner().invoke
    added = run(main, ["study", "add", "pilot", "--title", "Pilot", "--origin", PILOT_ORIGIN], env=env)
    assert added.exit_code == 0, added.output
    assert run(main, ["study", "add", "pilot"], env=env).exit_code != 0
    assert "pilot\topen, no cap" in run(main, ["study", "list"], env=env).output
    closed = run(main, ["study", "set", "pilot", "--status", "closed", "--max-participants", "5"], env=env)
    assert closed.exit_code == 0 and "closed, max 5 participants" in closed.output
    shown = json.loads(run(main, ["study", "show", "pilot"], env=env).output)
    assert shown["status"] == "closed" and shown["admittedParticipants"] == 0
    assert run(main, ["study", "set", "nosuch", "--status", "open"], env=env).exit_code != 0

    with TestClient(create_app(settings.model_copy(update={"study_registry_check_seconds": 0}))) as client:
        assert client.post(URL, json=status("D1")).status_code == 200
        run(main, ["study", "set", "pilot", "--status", "open"], env=env)
        assert client.post(URL, json=submission("S1", "pilot")).status_code == 200
        assert client.post(URL, json=submission("S2", "pilot")).status_code == 200
    verified = run(main, ["verify", "--study", "pilot"], env=env)
    assert verified.exit_code == 0 and "2 participants" in verified.output, verified.output
    default = run(main, ["verify"], env=env)
    assert default.exit_code == 0 and "1 participants" in default.output and "no problems" in default.output
    erased = run(main, ["erase", "S2", "--study", "pilot", "--reason", "withdrew", "--yes"], env=env)
    assert erased.exit_code == 0, erased.output
    pilot = KeyLayout(study_prefix(settings.data_prefix, "pilot"))
    assert json.loads(store.get(pilot.status_key("S2")).body)["erased"] is True
    assert keys_under(store, pilot.submissions_dir("S2")) == []
    with TestClient(create_app(settings)) as client:  # erased inside the study only
        assert client.post(URL, json=submission("S2", "pilot")).status_code == 410
        assert client.post(URL, json=submission("S2")).status_code == 200
    assert run(main, ["verify", "--study", "nosuch"], env=env).exit_code != 0
    qualtrics = tmp_path / "responses.csv"
    qualtrics.write_text("ResponseId,Finished,pid\nResponse ID,Finished,pid\nR_1,1,S1\nR_2,1,D1\n")
    matched = run(
        main, ["reconcile", "--qualtrics", str(qualtrics), "--id-column", "pid", "--study", "pilot"], env=env
    )
    assert matched.exit_code == 0, matched.output
    categories = {line.split(",")[0]: line.split(",")[1] for line in matched.stdout.splitlines()[1:]}
    assert categories["S1"] == "both" and categories["D1"] == "qualtrics_only"  # D1 is the default study's
    assert (
        run(main, ["release-key", "S1", "--study", "pilot", "--reason", "x", "--yes"], env=env).exit_code == 0
    )


def test_what_a_study_costs_in_storage_requests(store: ObjectStore, settings: Settings) -> None:
    """An open study costs what the default study does; closed and capped ones say what they add."""
    register(store, settings, "open1")
    register(store, settings, "closed1")
    register(store, settings, "capped1", max_participants=100)
    counting = CountingStore(store)
    quiet = settings.model_copy(update={"study_registry_check_seconds": 3600})
    with TestClient(create_app(quiet, store=counting)) as client:

        def cost(*bodies: dict[str, Any]) -> list[str]:
            counting.reset()
            for body in bodies:
                assert client.post(URL, json=body).status_code == 200, body
            return [op for op, _ in counting.requests]

        cost(status("WARM", "open1"))  # the registry's one read for this process
        default = cost(status("N1"), submission("N1"), trial("N1"))
        assert cost(status("N1", "open1"), submission("N1", "open1"), trial("N1", "open1")) == default
        # A closed study: no listing for a participant the pipeline already knows (see below).
        assert client.post(URL, json=trial("IN", "closed1")).status_code == 200
        change(store, settings, "closed1", status="closed")
        client.app.state.services.studies.registry.forget()
        cost(status("WARM", "open1"))  # reads the changed registry
        first = cost(trial("IN", "closed1", index=1))
        again = cost(trial("IN", "closed1", index=2))
        # The pipeline answers "new participant?" once: it stored IN's trial, so it knows IN is no
        # new participant, and the closed study's gate needs no listing at all (it took one before).
        assert first == again and "list" not in first
        # A capped study: a new participant's admission is one read and one conditional write.
        capped = cost(status("N2", "capped1"))
        assert capped == ["get", "put", "put"], capped  # admissions read + swap, then the status created
        cost(status("N2"))  # the default study's N2, known to this process too
        assert cost(status("N2", "capped1")) == cost(status("N2"))  # admitted: nothing more


def test_an_address_over_its_new_participant_cap_takes_no_place_in_a_capped_study(
    store: ObjectStore, settings: Settings
) -> None:
    register(store, settings, max_participants=5)
    limited = settings.model_copy(update={"study_registry_check_seconds": 0, "new_participants_per_hour": 1})
    with TestClient(create_app(limited)) as client:
        assert client.post(URL, json=status("F1", "pilot")).status_code == 200
        assert client.post(URL, json=status("F2", "pilot")).status_code == 429
    admitted = json.loads(store.get(admissions_key(settings.data_prefix, "pilot")).body)
    assert admitted == {"participants": ["F1"]}


def test_the_default_study_never_reads_the_registry(store: ObjectStore, settings: Settings) -> None:
    counting = CountingStore(store)
    with TestClient(
        create_app(settings.model_copy(update={"allowed_origins": MAIN_ORIGIN}), store=counting)
    ) as client:
        for headers in ({}, {"Origin": MAIN_ORIGIN}):
            assert client.post(URL, json=submission("Q1"), headers=headers).status_code == 200
            assert client.post(URL, json=trial("Q1"), headers=headers).status_code == 200
            assert client.post(RESTORE, json={"participantId": "Q1"}, headers=headers).status_code == 404
    touched = {key for _, key in counting.requests}
    assert not any(key.startswith(studies_root(settings.data_prefix)) for key in touched), touched
