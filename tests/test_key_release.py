"""Releasing a participant key (a participant changed device): CLI, dashboard, audit record, export."""

from __future__ import annotations

import csv
import getpass
import io
import json
import re
import zipfile

from click.testing import CliRunner
from fastapi.testclient import TestClient

from collector.audit import encode_record
from collector.cli import main
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.collector_process import settings_environment
from tests.support.settings import TEST_ADMIN_PASSWORD

URL = "/api/upload-user-data"
KEY = "first-device-key-000000"
NEW_KEY = "second-device-key-11111"


def claim(client: TestClient, pid: str = "REL1", key: str = KEY) -> None:
    body = {"participantId": pid, "uploadType": "status", "participantKey": key, "hasSeenTutorial": True}
    assert client.post(URL, json=body).status_code == 200


def new_device_status(client: TestClient, pid: str = "REL1") -> int:
    body = {"participantId": pid, "uploadType": "status", "participantKey": NEW_KEY, "n": 2}
    return client.post(URL, json=body).status_code


def audit_records(store: ObjectStore, layout: KeyLayout) -> dict[str, bytes]:
    return {i.key: store.get(i.key).body for i in store.list(layout.audit_dir("key-releases"))}


def check_audit(store: ObjectStore, layout: KeyLayout, pid: str, by: str) -> dict:
    [(key, body)] = audit_records(store, layout).items()
    assert re.fullmatch(
        rf"{layout.prefix}/audit/key-releases/\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_{pid}_[0-9a-f]{{8}}\.json", key
    )
    record = json.loads(body)
    assert body == encode_record(record)  # written by collector.audit, as every audit record
    assert record["participantId"] == pid and record["by"] == by and record["reason"]
    assert KEY.encode() not in body and b"participantKeyHash" not in body and b"hasSeenTutorial" not in body
    return record


def test_cli_release_lets_the_next_keyed_upload_claim_again(
    client: TestClient, store: ObjectStore, layout: KeyLayout, settings: Settings
) -> None:
    claim(client)
    held = json.loads(store.get(layout.status_key("REL1")).body)["participantKeyHash"]
    assert new_device_status(client) == 403
    result = CliRunner().invoke(
        main, ["release-key", "REL1", "--reason", "new laptop", "--yes"], env=settings_environment(settings)
    )
    assert result.exit_code == 0, result.output
    assert "Released" in result.output
    status = json.loads(store.get(layout.status_key("REL1")).body)
    assert "participantKeyHash" not in status
    assert status["hasSeenTutorial"] is True  # only the hash goes
    check_audit(store, layout, "REL1", getpass.getuser())  # who ran the command
    assert held.encode() not in next(iter(audit_records(store, layout).values()))
    assert new_device_status(client) == 200  # claims again
    assert (
        client.post(
            URL, json={"participantId": "REL1", "uploadType": "status", "participantKey": KEY}
        ).status_code
        == 403
    )


def test_cli_release_asks_first_and_refuses_unknown(
    store: ObjectStore, layout: KeyLayout, settings: Settings
) -> None:
    env = settings_environment(settings)
    unknown = CliRunner().invoke(main, ["release-key", "NOBODY1", "--reason", "x", "--yes"], env=env)
    assert unknown.exit_code != 0
    assert "NOBODY1" in unknown.output
    declined = CliRunner().invoke(main, ["release-key", "NOBODY1", "--reason", "x"], env=env, input="n\n")
    assert declined.exit_code != 0
    bad = CliRunner().invoke(main, ["release-key", "../x", "--reason", "x", "--yes"], env=env)
    assert bad.exit_code != 0
    assert audit_records(store, layout) == {}


def log_in(client: TestClient) -> None:
    answer = client.post("/admin/login", data={"password": TEST_ADMIN_PASSWORD}, follow_redirects=False)
    assert answer.status_code == 303


def form_token(client: TestClient, pid: str) -> str:
    page = client.get(f"/admin/participants/{pid}").text
    return re.search(r'name="token" value="([^"]+)"', page).group(1)


def test_dashboard_release_needs_session_and_form_token(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    claim(client)
    before = store.get(layout.status_key("REL1")).body
    action = "/admin/participants/REL1/release-key"
    assert client.post(action, data={"reason": "x"}, follow_redirects=False).status_code == 401
    log_in(client)
    token = form_token(client, "REL1")
    for data in ({"reason": "x"}, {"reason": "x", "token": "forged"}, {"reason": "x", "token": token + "0"}):
        assert client.post(action, data=data, follow_redirects=False).status_code == 403
    cross_site = client.post(
        action, data={"reason": "x", "token": token}, headers={"Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403
    assert store.get(layout.status_key("REL1")).body == before
    assert audit_records(store, layout) == {}

    done = client.post(action, data={"reason": "changed phone", "token": token}, follow_redirects=False)
    assert done.status_code == 303
    assert "participantKeyHash" not in json.loads(store.get(layout.status_key("REL1")).body)
    check_audit(store, layout, "REL1", "dashboard")
    assert "Key released" in client.get(done.headers["location"]).text
    assert new_device_status(client) == 200


def test_dashboard_and_export_show_unverified_submissions(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    claim(client)
    sub = {"participantId": "REL1", "uploadType": "submission", "submissionData": {"a": 1}}
    good = client.post(URL, json={**sub, "participantKey": KEY, "timestamp": "2025-01-01T00:00:00Z"}).json()
    bad = client.post(URL, json={**sub, "timestamp": "2025-01-02T00:00:00Z"}).json()
    assert bad["keyVerified"] is False
    log_in(client)
    page = client.get("/admin/participants/REL1").text
    assert page.count(">unverified</span>") == 1
    assert "participantKeyHash" not in page
    bad_row = re.search(r"<tr>\s*<td><code>([^<]+)</code> <span class=\"badge unverified\"", page)
    assert bad_row and bad["filesUploaded"][0].endswith(bad_row.group(1))

    archive = zipfile.ZipFile(io.BytesIO(client.get("/admin/export.zip").content))
    rows = list(csv.DictReader(io.StringIO(archive.read("export/submissions.csv").decode())))
    verified = {row["key"]: row["key_verified"] for row in rows}
    assert verified == {good["filesUploaded"][-1]: "true", bad["filesUploaded"][0]: "false"}
    participants = archive.read("export/participants.csv").decode()
    assert "participantKeyHash" not in participants
    assert "key_verified" in archive.read("export/README.md").decode()


def test_audit_records_are_not_layout_defects(client: TestClient, settings: Settings) -> None:
    claim(client)
    env = settings_environment(settings)
    assert CliRunner().invoke(main, ["release-key", "REL1", "--reason", "x", "--yes"], env=env).exit_code == 0
    result = CliRunner().invoke(main, ["verify"], env=env)
    assert result.exit_code == 0, result.output
