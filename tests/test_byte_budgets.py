"""Byte budgets (docs/trust-model.md): one address, or a flood against one participant ID, cannot
fill the storage; /healthz warns before the free-space refusals start. Local folder and S3 (moto)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from collector.app import create_app
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.settings import local_settings

URL = "/api/upload-user-data"
KEY = "budget-key-0123456789ab"


def submission(pid: str, size: int, key: str | None = None, n: int = 0) -> dict[str, object]:
    body: dict[str, object] = {
        "participantId": pid,
        "uploadType": "submission",
        "submissionData": {"n": n, "b": "x" * size},
    }
    if key is not None:
        body["participantKey"] = key
    return body


def stored(store: ObjectStore, layout: KeyLayout, pid: str) -> int:
    return len(list(store.list(layout.submissions_dir(pid))))


def test_an_address_over_its_hourly_byte_budget_gets_429_and_nothing_is_stored(
    settings: Settings, store: ObjectStore, layout: KeyLayout
) -> None:
    budget = settings.model_copy(update={"upload_bytes_per_address_per_hour": 100_000})
    with TestClient(create_app(budget)) as client:
        answers = [client.post(URL, json=submission(f"B{n}", 40_000)) for n in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert int(answers[2].headers["Retry-After"]) >= 1 and "this hour" in answers[2].json()["error"]
        batch = client.post(URL + "/batch", json={"uploads": [submission("B9", 40_000)]})
        assert batch.status_code == 429  # the batch's body is charged as a whole
    assert [stored(store, layout, f"B{n}") for n in range(3)] == [1, 1, 0]


def test_unverified_bytes_per_participant_are_capped_while_the_keyed_browser_goes_on(
    settings: Settings, store: ObjectStore, layout: KeyLayout
) -> None:
    capped = settings.model_copy(update={"unverified_bytes_per_participant_per_hour": 100_000})
    with TestClient(create_app(capped)) as client:
        claim = {"participantId": "V1", "uploadType": "status", "participantKey": KEY}
        assert client.post(URL, json=claim).status_code == 200
        flood = [client.post(URL, json=submission("V1", 40_000, n=n)).status_code for n in range(4)]
        assert flood == [200, 200, 429, 429]
        trial = {
            "participantId": "V1",
            "uploadType": "trial",
            "sessionId": "s1",
            "trialIndex": 0,
            "trialData": {"b": "x" * 40_000},
        }
        refused = client.post(URL, json=trial)  # an unverified trial draws on the same budget
        assert refused.status_code == 429 and refused.headers["Retry-After"]
        assert client.post(URL, json=submission("V1", 40_000, key=KEY)).status_code == 200
        assert client.post(URL, json={**trial, "participantKey": KEY}).status_code == 200
    assert stored(store, layout, "V1") == 3  # two unverified, one with the key
    assert len(list(store.list(layout.trials_dir("V1")))) == 1


def test_healthz_warns_under_the_higher_threshold_before_refusing(tmp_path: Path) -> None:
    warned = local_settings(tmp_path / "data", free_space_warning_bytes=2**62)
    with TestClient(create_app(warned)) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["lowOnSpace"] is True
        assert client.post(URL, json=submission("W1", 10)).status_code == 200  # still stored
    with TestClient(create_app(local_settings(tmp_path / "data2", free_space_warning_bytes=1))) as client:
        assert "lowOnSpace" not in client.get("/healthz").json()
