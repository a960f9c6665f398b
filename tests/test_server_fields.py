"""Only the collector writes server-owned fields (docs/bucket-layout.md §10), on the local folder and S3.

The documented list is the code's list; a client's value for any of them, in any upload type,
is never stored; and the forged erasure of issue-style attack (a keyless ``"erased": true``
status) leaves the participant alive for every reader and for a restarted collector.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.export import DirectorySink, export_bucket
from collector.keys import KeyLayout
from collector.reconcile import scan_backup
from collector.server_fields import SERVER_FIELDS
from collector.settings import Settings
from collector.storage import ObjectStore
from collector.verify import INCOMPLETE_ERASURE, verify_bucket
from tests.support.factories import encode

URL = "/api/upload-user-data"
DOC = Path(__file__).resolve().parents[1] / "docs" / "bucket-layout.md"
FORGED: dict[str, Any] = {
    "serverReceivedAt": "1999-01-01T00:00:00.000Z",
    "keyVerified": True,
    "participantKeyHash": "f" * 64,
    "erased": True,
    "erasedAt": "1999-01-01T00:00:00.000Z",
}


def documented_server_fields() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## 10. Server-owned fields", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^- `([A-Za-z]+)`:", section, flags=re.MULTILINE)


def test_the_documented_server_fields_are_the_ones_the_collector_drops() -> None:
    documented = documented_server_fields()
    assert documented and sorted(documented) == sorted(SERVER_FIELDS)
    assert sorted(FORGED) == sorted(SERVER_FIELDS)  # every field is forged below


def uploads(pid: str) -> list[dict[str, Any]]:
    """One upload of each type, each carrying a forged value for every server field."""
    return [
        {"participantId": pid, "uploadType": "status", "step": 1, **FORGED},
        {"participantId": pid, "uploadType": "submission", "submissionData": {"a": 1}, **FORGED},
        {
            "participantId": pid,
            "uploadType": "trial",
            "sessionId": "run-1",
            "trialIndex": 0,
            "trialData": {"rt": 1},
            **FORGED,
        },
    ]


def assert_nothing_forged(store: ObjectStore, layout: KeyLayout, pid: str) -> None:
    keys = [info.key for info in store.list(layout.participant_dir(pid))]
    assert len(keys) == 3, keys  # status, submission, trial
    for key in keys:
        stored = json.loads(store.get(key).body)
        for field, value in FORGED.items():
            assert stored.get(field) != value, (key, field)
        assert "erased" not in stored and "erasedAt" not in stored


@pytest.mark.parametrize("how", ["single", "batch"])
def test_no_upload_type_stores_a_forged_server_field(
    client: TestClient, store: ObjectStore, layout: KeyLayout, how: str
) -> None:
    pid = f"FORGE-{how}"
    if how == "single":
        for body in uploads(pid):
            assert client.post(URL, json=body).status_code == 200
    else:
        answer = client.post(URL + "/batch", json={"uploads": uploads(pid)})
        assert [r["httpStatus"] for r in answer.json()["results"]] == [200, 200, 200]
    assert_nothing_forged(store, layout, pid)


def test_a_forged_erasure_erases_nobody(
    settings: Settings, client: TestClient, store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> None:
    forged = {"participantId": "P001", "uploadType": "status", "erased": True}
    assert client.post(URL, json=forged).status_code == 200
    real = {"participantId": "P001", "uploadType": "submission", "submissionData": {"answer": 42}}
    assert client.post(URL, json=real).status_code == 200
    assert_alive_for_every_reader(settings, store, layout, tmp_path, "P001")


def test_a_forged_erasure_stored_before_this_rule_is_not_a_tombstone(
    settings: Settings, store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> None:
    # What an older collector stored for the forged upload: the field beside its receipt time.
    old = {
        "participantId": "P002",
        "uploadType": "status",
        "erased": True,
        "serverReceivedAt": "2026-01-01T00:00:00.000Z",
    }
    store.put(layout.status_key("P002"), encode(old))
    with TestClient(create_app(settings)) as client:
        real = {"participantId": "P002", "uploadType": "submission", "submissionData": {"answer": 42}}
        assert client.post(URL, json=real).status_code == 200
    assert_alive_for_every_reader(settings, store, layout, tmp_path, "P002")


def assert_alive_for_every_reader(
    settings: Settings, store: ObjectStore, layout: KeyLayout, tmp_path: Path, pid: str
) -> None:
    report = verify_bucket(store, layout)
    assert report.erased == 0
    assert not [d for d in report.defects if d.kind == INCOMPLETE_ERASURE]
    backup = scan_backup(store, layout)
    assert pid in backup.participants and pid not in backup.erased
    exported = export_bucket(store, layout, DirectorySink(tmp_path / "out"))
    assert exported.erased == [] and exported.rows["submissions"] == 1
    # A restarted collector (a new process reads the bucket afresh) still stores the participant.
    with TestClient(create_app(settings)) as restarted:
        again = {"participantId": pid, "uploadType": "submission", "submissionData": {"answer": 43}}
        assert restarted.post(URL, json=again).status_code == 200
