"""Trials an attacker sends: a forged trial never displaces a real one, and trials of new
participants come under the per-address new-participant cap. Local folder and S3 (moto)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from collector.app import create_app
from collector.export import DirectorySink, export_bucket
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from collector.verify import verify_bucket
from tests.support.exports import read_table

URL = "/api/upload-user-data"
KEY = "real-key-0123456789abcd"
FORGED_KEY = "forged-key-0123456789ab"


def trial(pid: str, index: int, key: str | None, rt: int, session: str = "SESSION_ID_1") -> dict[str, object]:
    body: dict[str, object] = {
        "participantId": pid,
        "uploadType": "trial",
        "sessionId": session,
        "trialIndex": index,
        "trialData": {"rt": rt},
    }
    if key is not None:
        body["participantKey"] = key
    return body


def test_a_forged_trial_sent_first_is_kept_apart_and_the_real_one_stored(
    client: TestClient, store: ObjectStore, layout: KeyLayout, tmp_path: Path
) -> None:
    pid = "PROLIFIC1"
    claim = {"participantId": pid, "uploadType": "status", "participantKey": KEY}
    assert client.post(URL, json=claim).status_code == 200
    # The attacker knows the participant and session IDs (a study-supplied SESSION_ID).
    forged = [client.post(URL, json=trial(pid, 0, key, rt=rt)) for key, rt in ((None, 1), (FORGED_KEY, 2))]
    assert [answer.status_code for answer in forged] == [200, 200]
    assert all(answer.json()["keyVerified"] is False for answer in forged)
    again = client.post(URL, json=trial(pid, 0, None, rt=1))  # a retry of the first forgery
    assert again.json()["filesUploaded"] == forged[0].json()["filesUploaded"]

    real = client.post(URL, json=trial(pid, 0, KEY, rt=432))
    assert real.status_code == 200 and "duplicate" not in real.json(), real.json()
    verified_key = layout.trial_key(pid, "SESSION_ID_1", 0)
    assert real.json()["filesUploaded"] == [verified_key]
    assert json.loads(store.get(verified_key).body)["trialData"] == {"rt": 432}
    apart = sorted(answer.json()["filesUploaded"][0] for answer in forged)
    assert len(set(apart)) == 2 and verified_key not in apart
    for key in apart:
        parsed = layout.parse(key)
        assert (
            parsed is not None
            and parsed.apart
            and (parsed.session_id, parsed.trial_index) == ("SESSION_ID_1", 0)
        )
    # The real trial's retry is recognised; a second, different keyed trial at the index is the duplicate.
    assert "duplicate" not in client.post(URL, json=trial(pid, 0, KEY, rt=432)).json()
    assert client.post(URL, json=trial(pid, 0, KEY, rt=999)).json()["duplicate"] is True

    assert verify_bucket(store, layout).ok  # apart keys fit the layout
    export_bucket(store, layout, DirectorySink(tmp_path))
    trials = read_table(tmp_path, "trials", "csv")
    assert sorted(zip(trials["key_verified"], trials["rt"], strict=True)) == [
        ("false", "1"),
        ("false", "2"),
        ("true", "432"),
    ]
    sessions = read_table(tmp_path, "trial_sessions", "csv")
    assert list(sessions["trial_count"]) == ["1"] and list(sessions["missing_trials"]) == ["0"]


def test_trials_alone_come_under_the_new_participant_cap(settings: Settings, store: ObjectStore) -> None:
    capped = settings.model_copy(update={"new_participants_per_hour": 5})
    with TestClient(create_app(capped)) as client:
        answers = [client.post(URL, json=trial(f"NEW{n}", 0, None, rt=n)) for n in range(8)]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
        assert all(int(a.headers["Retry-After"]) >= 1 for a in answers[5:])
        # Participants already met are not new: their next trials are stored.
        assert client.post(URL, json=trial("NEW0", 1, None, rt=1)).status_code == 200
    # A fresh process (its memory empty) still knows them from the bucket.
    with TestClient(create_app(capped)) as client:
        assert client.post(URL, json=trial("NEW1", 1, None, rt=1)).status_code == 200
    stored = {
        info.key.split("/participants/")[1].split("/")[0]
        for info in store.list(f"{capped.data_prefix}/participants/")
    }
    assert stored == {f"NEW{n}" for n in range(5)}
