"""Erasing a participant, on the local folder and on S3 (moto): nothing of theirs is left, the audit
record holds no participant data, an interrupted erasure can be finished, the dashboard action is
guarded. Uploads go through the real app; the erasure through its module, the CLI and the dashboard."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.cli import main
from collector.erasure import ErasureRefused, erase_participant
from collector.export import DirectorySink, export_bucket
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectInfo, ObjectStore, StoredObject
from collector.verify import INCOMPLETE_ERASURE, verify_bucket
from tests.support.collector_process import settings_environment, venv_bin
from tests.support.factories import encode
from tests.support.settings import TEST_ADMIN_PASSWORD, local_settings, racing_no_erasure

URL = "/api/upload-user-data"
# Values no key, time or hash the erasure writes could contain by chance.
SECRET_TEXT = "free-text answer: my dog is called Biscuit"
SECRET_NUMBER = 98765.4321


def upload_participant(
    client: TestClient, store: ObjectStore, layout: KeyLayout, pid: str
) -> dict[str, bytes]:
    """A status, two submissions (through the app) and a trial object; every stored body by key."""
    for n, second in enumerate(("14:30:45.123", "15:02:07.456")):
        answer = client.post(
            URL,
            json={
                "participantId": pid,
                "timestamp": f"2025-11-19T{second}Z",
                "uploadType": "submission",
                "uploadId": f"upload-{pid}-{n}",
                "submissionData": {"essay": f"{SECRET_TEXT} #{n}", "score": SECRET_NUMBER + n},
                "hasSeenWelcome": True,
                "selectedVolcano": "Okmok-secret-choice",
            },
        )
        assert answer.status_code == 200, answer.text
    trial = {"participantId": pid, "sessionId": "sess1", "trialIndex": 0, "trialData": {"rt": 1234.5678}}
    store.put(f"{layout.participant_dir(pid)}trials/sess1/000000.json", encode(trial))
    return {info.key: store.get(info.key).body for info in store.list(layout.participant_dir(pid))}


# Identifiers the record must name and protocol words ("submission" is also a folder name).
NOT_PARTICIPANT_DATA = {"participantId", "sessionId", "uploadType"}


def leaf_values(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for name, child in value.items():
            if name not in NOT_PARTICIPANT_DATA:
                yield from leaf_values(child)
    elif isinstance(value, list):
        for child in value:
            yield from leaf_values(child)
    else:
        yield value


def assert_holds_no_value_of(text: str, documents: dict[str, bytes]) -> None:
    """No string value nor distinctive number of the documents appears in ``text``."""
    checked = 0
    for body in documents.values():
        for value in leaf_values(json.loads(body)):
            if isinstance(value, str) and len(value) >= 4:
                assert value not in text, f"erased value {value!r} found"
                checked += 1
            elif isinstance(value, float) and len(repr(value)) >= 6:
                assert repr(value) not in text, f"erased number {value!r} found"
                checked += 1
    assert checked >= 5  # the check looked at real values


def audit_records(store: ObjectStore, layout: KeyLayout) -> list[tuple[str, dict]]:
    return [
        (info.key, json.loads(store.get(info.key).body))
        for info in store.list(f"{layout.prefix}/audit/erasures/")
    ]


def test_erasure_leaves_a_tombstone_and_an_audit_record_with_no_participant_data(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    before = upload_participant(client, store, layout, "P001ERASE")
    kept = upload_participant(client, store, layout, "P001ERASE2")  # a neighbour whose ID extends it
    assert len(before) == 4  # status, two submissions, one trial

    result = erase_participant(
        store, layout, "P001ERASE", who="alice", reason="withdrew by email, ticket 42", settle_seconds=0
    )

    status_key = layout.status_key("P001ERASE")
    assert [info.key for info in store.list(layout.participant_dir("P001ERASE"))] == [status_key]
    tombstone = json.loads(store.get(status_key).body)
    assert set(tombstone) == {"participantId", "erased", "erasedAt"}
    assert tombstone["participantId"] == "P001ERASE" and tombstone["erased"] is True
    assert_holds_no_value_of(store.get(status_key).body.decode(), before)
    # The neighbour is untouched.
    assert {
        info.key: store.get(info.key).body for info in store.list(layout.participant_dir("P001ERASE2"))
    } == kept

    [(key, record)] = audit_records(store, layout)
    assert key == result.audit_keys[0]
    assert key.rsplit("/", 1)[-1].startswith(tombstone["erasedAt"][:10])
    assert "_P001ERASE_" in key
    assert record["participantId"] == "P001ERASE"
    assert record["who"] == "alice" and record["reason"] == "withdrew by email, ticket 42"
    assert record["objectCount"] == 4 and record["unhashed"] == 0
    assert {o["key"]: o["sha256"] for o in record["objects"]} == {
        k: hashlib.sha256(body).hexdigest() for k, body in before.items()
    }
    assert_holds_no_value_of(json.dumps(record), before)
    assert store.get_or_none(layout.erasure_intent_key("P001ERASE")) is None

    # Running it again has nothing to do and writes no second record.
    again = erase_participant(store, layout, "P001ERASE", who="bob", reason="double-check", settle_seconds=0)
    assert again.already_erased and again.audit_keys == [key]
    assert len(audit_records(store, layout)) == 1


def test_export_and_verify_are_clean_after_an_erasure(
    client: TestClient, store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> None:
    upload_participant(client, store, layout, "GONE1")
    upload_participant(client, store, layout, "STAYS1")
    erase_participant(store, layout, "GONE1", who="alice", reason="withdrew", settle_seconds=0)

    report = verify_bucket(store, layout)
    # The trial object is a key this branch's layout does not know yet: the only defect expected.
    assert [d for d in report.defects if "STAYS1" not in d.key] == []
    assert (report.erased, report.audit_records, report.participants) == (1, 1, 2)

    exported = export_bucket(store, layout, DirectorySink(tmp_path / "out"))
    assert exported.erased == ["GONE1"]
    assert exported.rows["participants"] == 1 and exported.rows["submissions"] == 2
    for path in (tmp_path / "out").iterdir():
        assert "GONE1" not in path.read_text(encoding="utf-8"), path.name


def test_verify_reports_an_incomplete_erasure(store: ObjectStore, layout: KeyLayout) -> None:
    # Nothing stored: tombstone only.
    erase_participant(store, layout, "HALF1", who="alice", reason="withdrew", settle_seconds=0)
    assert verify_bucket(store, layout).ok
    leftover = layout.submissions_dir("HALF1") + "HALF1_Complete_2025-11-19_14-30-45.json"
    store.put(leftover, encode({"participantId": "HALF1"}))
    store.put(layout.erasure_intent_key("OTHER1"), b"{}")
    report = verify_bucket(store, layout)
    assert sorted(d.key for d in report.defects if d.kind == INCOMPLETE_ERASURE) == sorted(
        [leftover, layout.erasure_intent_key("OTHER1")]
    )


def test_the_intent_key_is_the_documented_one_and_only_for_a_valid_id(layout: KeyLayout) -> None:
    assert layout.erasure_intent_key("P1") == f"{layout.prefix}/audit/erasures-in-progress/P1.json"
    assert layout.erasure_intent_key("P1").startswith(layout.erasure_intents_dir)
    for bad in ("../P1", "", "P1/x"):
        with pytest.raises(ValueError):
            layout.erasure_intent_key(bad)


def test_refuses_a_bad_id_or_an_empty_reason(store: ObjectStore, layout: KeyLayout) -> None:
    for pid, reason in (("../etc", "x"), ("", "x"), ("P1", "   ")):
        with pytest.raises(ErasureRefused):
            erase_participant(store, layout, pid, who="alice", reason=reason, settle_seconds=0)
    assert list(store.list(f"{layout.prefix}/")) == []


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in the erasure can catch it."""


class DyingStore(ObjectStore):
    """Passes calls through, and dies before the (n+1)-th write or delete."""

    def __init__(self, inner: ObjectStore, writes_allowed: int) -> None:
        self.inner, self.left = inner, writes_allowed

    def _write(self) -> None:
        if self.left == 0:
            raise Killed
        self.left -= 1

    def put(self, key: str, body: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        self._write()
        return self.inner.put(key, body, if_absent=if_absent, if_match=if_match)

    def delete(self, key: str) -> None:
        self._write()
        self.inner.delete(key)

    def get(self, key: str) -> StoredObject:
        return self.inner.get(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def check(self) -> None:
        self.inner.check()


def test_an_erasure_killed_at_any_step_is_finished_by_running_it_again(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    writes = 0
    while True:
        pid = f"KILL{writes}"
        before = upload_participant(client, store, layout, pid)
        try:
            erase_participant(
                DyingStore(store, writes), layout, pid, who="alice", reason="withdrew", settle_seconds=0
            )
        except Killed:
            killed = True
        else:
            killed = False
        result = erase_participant(store, layout, pid, who="bob", reason="finishing", settle_seconds=0)
        assert [info.key for info in store.list(layout.participant_dir(pid))] == [layout.status_key(pid)]
        assert json.loads(store.get(layout.status_key(pid)).body)["erased"] is True
        records = [r for _, r in audit_records(store, layout) if r["participantId"] == pid]
        assert len(records) == 1, f"killed after {writes} writes"
        hashes = {o["key"]: o["sha256"] for o in records[0]["objects"]}
        assert hashes == {k: hashlib.sha256(b).hexdigest() for k, b in before.items()}, writes
        # Once the intent is written (the first write), the first run's request is what is recorded.
        assert records[0]["reason"] == ("withdrew" if writes else "finishing")
        assert store.get_or_none(layout.erasure_intent_key(pid)) is None
        if not killed:
            assert result.already_erased
            break
        writes += 1
    assert writes >= 7  # intent, tombstone, 3 deletes, record, intent removal: every point was hit


def test_an_upload_after_the_erasure_is_refused_with_410(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    upload_participant(client, store, layout, "BACK1")
    erase_participant(store, layout, "BACK1", who="alice", reason="withdrew", settle_seconds=0)
    answer = client.post(
        URL,
        json={
            "participantId": "BACK1",
            "timestamp": "2025-11-20T10:00:00Z",
            "uploadType": "submission",
            "submissionData": {"essay": SECRET_TEXT},
        },
    )
    assert answer.status_code == 410
    assert answer.json()["reason"] == "erased"
    assert [info.key for info in store.list(layout.participant_dir("BACK1"))] == [layout.status_key("BACK1")]


def test_cli_asks_before_erasing_and_erases_with_yes(
    client: TestClient, settings: Settings, store: ObjectStore, layout: KeyLayout
) -> None:
    before = upload_participant(client, store, layout, "CLI1")
    runner = CliRunner(env=settings_environment(settings))
    refused = runner.invoke(main, ["erase", "CLI1", "--reason", "withdrew"], input="n\n")
    assert refused.exit_code == 1 and "Erase 4 object(s) of participant CLI1?" in refused.output
    assert {info.key for info in store.list(layout.participant_dir("CLI1"))} == set(before)

    done = runner.invoke(main, ["erase", "CLI1", "--reason", "withdrew"], input="y\n")
    assert done.exit_code == 0, done.output
    assert "Erased participant CLI1: 4 object(s) deleted; audit record " in done.output
    [(_, record)] = audit_records(store, layout)
    assert record["who"]  # the OS user running the command

    missing_reason = runner.invoke(main, ["erase", "CLI1"])
    assert missing_reason.exit_code == 2 and "--reason" in missing_reason.output
    bad = runner.invoke(main, ["erase", "../x", "--reason", "r", "--yes"])
    assert bad.exit_code == 2 and "not a participant ID" in bad.output


@pytest.mark.processes
def test_sigkill_mid_erasure_then_the_same_command_finishes(tmp_path: Path) -> None:
    """A real ``collector erase`` process killed with SIGKILL while it deletes, then run again."""
    settings = local_settings(tmp_path / "data")
    layout = KeyLayout(settings.data_prefix)
    from collector.storage import LocalStore

    store = LocalStore(settings.local_storage_dir)
    pid = "SIGKILL1"
    before = {}
    for n in range(600):  # enough objects that deleting them (an fsync each) takes a while
        key = f"{layout.submissions_dir(pid)}{pid}_Complete_2025-11-19_10-{n // 60:02d}-{n % 60:02d}.json"
        before[key] = encode({"participantId": pid, "n": n, "essay": SECRET_TEXT})
        store.put(key, before[key])
    before[layout.status_key(pid)] = encode({"participantId": pid, "essay": SECRET_TEXT})
    store.put(layout.status_key(pid), before[layout.status_key(pid)])

    env = {**os.environ, **settings_environment(settings)}
    command = [str(venv_bin("python")), "-m", "collector", "erase", pid, "--reason", "withdrew", "--yes"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    intent = settings.local_storage_dir / layout.erasure_intent_key(pid)
    tombstone = settings.local_storage_dir / layout.status_key(pid)
    # Kill once the tombstone is written (deleting has started or is about to).
    while process.poll() is None and not (intent.exists() and b'"erased"' in tombstone.read_bytes()):
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the erasure finished before it could be killed"
    assert intent.exists()
    assert len(list(store.list(layout.participant_dir(pid)))) > 1  # submissions were still there

    finish = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stderr
    assert "finishing an interrupted erasure" in finish.stdout
    assert [info.key for info in store.list(layout.participant_dir(pid))] == [layout.status_key(pid)]
    [(_, record)] = audit_records(store, layout)
    assert record["objectCount"] == 601 and record["unhashed"] == 0
    assert {o["key"]: o["sha256"] for o in record["objects"]} == {
        k: hashlib.sha256(b).hexdigest() for k, b in before.items()
    }
    assert not intent.exists()


def login(client: TestClient) -> None:
    answer = client.post("/admin/login", data={"password": TEST_ADMIN_PASSWORD}, follow_redirects=False)
    assert answer.status_code == 303


@pytest.fixture
def dashboard(settings: Settings) -> Iterator[TestClient]:
    """The app without the erasure's settle wait: no upload races the dashboard's erasures here."""
    with TestClient(create_app(racing_no_erasure(settings))) as client:
        yield client


def test_dashboard_erasure_needs_a_session_same_origin_and_the_typed_id(
    dashboard: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    before = upload_participant(dashboard, store, layout, "DASH1")
    form = {"reason": "withdrew", "confirm": "DASH1"}
    target = "/admin/participants/DASH1/erase"

    assert dashboard.post(target, data=form).status_code == 401  # no session
    login(dashboard)
    page = dashboard.get(target)
    assert page.status_code == 200 and 'id="erase-form"' in page.text
    assert '<strong id="erase-object-count">4</strong>' in page.text

    token = page.text.split('name="token" value="', 1)[1].split('"', 1)[0]
    form["token"] = token
    cross = dashboard.post(target, data=form, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    mistyped = dashboard.post(target, data={"reason": "withdrew", "confirm": "DASH", "token": token})
    assert mistyped.status_code == 400 and "Type the participant ID" in mistyped.text
    no_reason = dashboard.post(target, data={"reason": " ", "confirm": "DASH1", "token": token})
    assert no_reason.status_code == 400
    assert {info.key for info in store.list(layout.participant_dir("DASH1"))} == set(before)

    done = dashboard.post(target, data=form)
    assert done.status_code == 200 and 'id="erase-done"' in done.text
    assert [info.key for info in store.list(layout.participant_dir("DASH1"))] == [layout.status_key("DASH1")]
    [(_, record)] = audit_records(store, layout)
    assert record["who"] == "dashboard" and record["objectCount"] == 4

    overview = dashboard.get("/admin")
    assert '<dd id="erased-count">1</dd>' in overview.text
    assert '<dd id="participant-count">0</dd>' in overview.text
    assert "erased</span>" in dashboard.get("/admin/participants").text
