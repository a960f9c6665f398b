"""Trials come under the participant key and erasure like every other upload (docs/trust-model.md)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from collector.app import create_app
from collector.erasure import erase_participant
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore

URL = "/api/upload-user-data"
KEY = "k" * 22
OTHER_KEY = "w" * 22


def trial(index: int, **fields: object) -> dict[str, object]:
    return {
        "participantId": "TT1",
        "uploadType": "trial",
        "sessionId": "run-A",
        "trialIndex": index,
        "trialData": {"rt": 412, "response": "f"},
        **fields,
    }


def claim(client: TestClient) -> None:
    body = {"participantId": "TT1", "uploadType": "status", "participantKey": KEY}
    assert client.post(URL, json=body).status_code == 200


def test_a_trial_with_the_right_key_is_stored_verified(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    claim(client)
    answer = client.post(URL, json=trial(0, participantKey=KEY))
    assert answer.status_code == 200 and "keyVerified" not in answer.json()
    stored = store.get(layout.trial_key("TT1", "run-A", 0)).body
    assert KEY.encode() not in stored and json.loads(stored).get("keyVerified") is not False


def test_a_trial_with_a_wrong_or_missing_key_is_stored_marked_unverified(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    claim(client)
    before = store.get(layout.status_key("TT1")).body
    for index, extra in enumerate([{"participantKey": OTHER_KEY}, {}]):
        answer = client.post(URL, json=trial(index, **extra))
        assert answer.status_code == 200
        assert answer.json()["keyVerified"] is False
        [stored] = answer.json()["filesUploaded"]  # kept apart, never at the trial's own key
        assert (
            layout.parse(stored).apart and store.get_or_none(layout.trial_key("TT1", "run-A", index)) is None
        )
        assert json.loads(store.get(stored).body)["keyVerified"] is False
    assert store.get(layout.status_key("TT1")).body == before  # a trial never changes the status


def test_a_trial_never_claims_a_participant(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    assert client.post(URL, json=trial(0, participantKey=OTHER_KEY)).status_code == 200
    assert store.get_or_none(layout.status_key("TT1")) is None
    claim(client)  # the participant's own browser still claims them afterwards
    assert client.post(URL, json=trial(1, participantKey=KEY)).status_code == 200


def test_a_malformed_key_on_a_trial_is_refused(
    client: TestClient, store: ObjectStore, layout: KeyLayout
) -> None:
    answer = client.post(URL, json=trial(0, participantKey="short"))
    assert answer.status_code == 422 and "participantKey" in answer.json()["error"]
    assert store.get_or_none(layout.trial_key("TT1", "run-A", 0)) is None


def test_a_trial_for_an_erased_participant_is_410_and_stores_nothing(
    settings: Settings, store: ObjectStore, layout: KeyLayout
) -> None:
    # Erased by another process (the CLI). This process's status cache may accept a trial for up
    # to the storage deadline after it last saw the status (tests/test_status_cache.py covers
    # that window); without the cache, the very next trial is refused.
    uncached = settings.model_copy(update={"status_cache_size": 0})
    with TestClient(create_app(uncached)) as client:
        claim(client)
        assert client.post(URL, json=trial(0, participantKey=KEY)).status_code == 200
        erase_participant(store, layout, "TT1", who="test", reason="withdrew", settle_seconds=0)
        answer = client.post(URL, json=trial(1, participantKey=KEY))
        assert answer.status_code == 410 and answer.json()["reason"] == "erased"
        batch = client.post(URL + "/batch", json={"uploads": [trial(2, participantKey=KEY)]})
        assert batch.json()["results"][0]["httpStatus"] == 410
    left = [info.key for info in store.list(layout.participant_dir("TT1"))]
    assert left == [layout.status_key("TT1")]  # only the tombstone
