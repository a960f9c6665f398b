"""The participant key's hash is never shown or exported (reading.records.PRIVATE_FIELDS).

status.json keeps ``participantKeyHash`` to check uploads; anyone who saw it could test guesses of
the key offline. Each surface of the research tools is checked for the hash's value and name:
the dashboard's participant page, its view and download of a file, the participant's zip, every
export table in every format (the CLI's and the dashboard's zip). A submission file carrying such a
field (written before the collector stripped it from uploads) is handed out without it too.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from collector.export import DirectorySink, export_bucket
from collector.keys import KeyLayout
from collector.participant_keys import key_hash
from collector.storage import ObjectStore
from tests.support.factories import make_submission, put_submission
from tests.test_admin_http import log_in

URL = "/api/upload-user-data"
PID = "PRIV1"
KEY = "p" * 22
FORGED = "f" * 64  # a "hash" a client once sent inside a submission


@pytest.fixture
def claimed(client: TestClient, store: ObjectStore, layout: KeyLayout) -> str:
    """PRIV1 holds a key (its hash in status.json), a submission, a trial and a planted old file."""
    status = {"participantId": PID, "uploadType": "status", "participantKey": KEY, "note": "kept"}
    assert client.post(URL, json=status).status_code == 200
    submission = {
        "participantId": PID,
        "uploadType": "submission",
        "participantKey": KEY,
        "submissionData": {},
    }
    assert client.post(URL, json=submission).status_code == 200
    trial = {
        "participantId": PID,
        "uploadType": "trial",
        "sessionId": "run-1",
        "trialIndex": 0,
        "trialData": {"rt": 1},
        "participantKey": KEY,
    }
    assert client.post(URL, json=trial).status_code == 200
    put_submission(store, layout, make_submission(PID, participantKeyHash=FORGED))
    stored = json.loads(store.get(layout.status_key(PID)).body)
    assert stored["participantKeyHash"] == key_hash(PID, KEY)  # kept where it belongs
    return stored["participantKeyHash"]


def assert_private_free(text: str | bytes, hash_value: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    assert hash_value.encode() not in data and FORGED.encode() not in data
    assert b"participantKeyHash" not in data and KEY.encode() not in data


def test_dashboard_pages_views_and_downloads_leave_the_hash_out(
    client: TestClient, store: ObjectStore, layout: KeyLayout, claimed: str
) -> None:
    log_in(client)
    page = client.get(f"/admin/participants/{PID}")
    assert page.status_code == 200 and "Release key" in page.text
    assert_private_free(page.text, claimed)
    view = client.get(f"/admin/participants/{PID}/view/user-status/status.json")
    assert view.status_code == 200 and "serverReceivedAt" in view.text
    assert_private_free(view.text, claimed)
    download = client.get(f"/admin/participants/{PID}/files/user-status/status.json")
    assert download.status_code == 200
    assert_private_free(download.content, claimed)
    stored = json.loads(store.get(layout.status_key(PID)).body)
    del stored["participantKeyHash"]
    assert json.loads(download.content) == stored  # everything else, as stored
    for info in store.list(layout.submissions_dir(PID)):
        name = "submissions/" + info.key.rsplit("/", 1)[1]
        viewed = client.get(f"/admin/participants/{PID}/view/{name}")
        assert viewed.status_code == 200
        assert_private_free(viewed.text, claimed)
        assert_private_free(client.get(f"/admin/participants/{PID}/files/{name}").content, claimed)


def test_the_participants_zip_leaves_the_hash_out(
    client: TestClient, store: ObjectStore, layout: KeyLayout, claimed: str
) -> None:
    log_in(client)
    answer = client.get(f"/admin/participants/{PID}/download.zip")
    assert answer.status_code == 200
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        names = archive.namelist()
        assert layout.status_key(PID) in names and len(names) == 4
        for name in names:
            body = archive.read(name)
            assert_private_free(body, claimed)
            if b"participantKey" not in store.get(name).body:
                assert body == store.get(name).body  # untouched files are byte for byte as stored


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_no_export_table_holds_the_hash(
    store: ObjectStore, layout: KeyLayout, claimed: str, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "out"
    report = export_bucket(store, layout, DirectorySink(out), fmt=fmt)  # type: ignore[arg-type]
    assert report.rows["participants"] == 1 and report.rows["submissions"] == 2 and report.rows["trials"] == 1
    for path in out.iterdir():
        assert_private_free(path.read_bytes(), claimed)


def test_the_dashboard_export_zip_holds_no_hash(client: TestClient, claimed: str) -> None:
    log_in(client)
    answer = client.get("/admin/export.zip?format=jsonl")
    assert answer.status_code == 200
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert "export/submissions.jsonl" in archive.namelist()
        for name in archive.namelist():
            assert_private_free(archive.read(name), claimed)
