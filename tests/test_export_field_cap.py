"""Trial field names cannot exhaust the export's memory: at most the column cap of names is tracked.

Trials with more distinct trialData names than the cap (hostile or generated data) export their
first ``MAX_TRIAL_FIELD_COLUMNS`` names as columns and the rest, exactly, as JSON; the export
keeps a type tracker for the column names only, in the CLI's export and the dashboard's zip.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from collector.export import DirectorySink, export_bucket
from collector.export import trials as trial_export
from collector.keys import KeyLayout
from collector.storage import ObjectStore
from tests.support.exports import read_table
from tests.test_admin_http import log_in

CAP = trial_export.MAX_TRIAL_FIELD_COLUMNS
TRIALS = 3
PER_TRIAL = 400  # 1,200 distinct names in all, 700 past the cap


def store_wide_trials(store: ObjectStore, layout: KeyLayout) -> list[dict[str, Any]]:
    """Trials as the collector stores them, every one with its own trialData names."""
    datas = []
    for index in range(TRIALS):
        data = {f"f{index}_{n:03d}": n for n in range(PER_TRIAL)}
        document = {
            "participantId": "WIDE1",
            "uploadType": "trial",
            "sessionId": "run-W",
            "trialIndex": index,
            "trialData": data,
            "serverReceivedAt": "2026-12-01T10:00:00.000Z",
        }
        store.put(layout.trial_key("WIDE1", "run-W", index), json.dumps(document).encode())
        datas.append(data)
    return datas


@pytest.fixture
def trackers(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every per-field type tracker the export creates."""
    made: list[object] = []

    class Counted(trial_export._FieldKind):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    monkeypatch.setattr(trial_export, "_FieldKind", Counted)
    return made


def check_trials_table(trials: Any, datas: list[dict[str, Any]]) -> None:
    names = [name for data in datas for name in data]  # first-met order
    fields = list(trials.columns[6:-1])
    assert fields == names[:CAP]
    for row, data in zip(trials.itertuples(index=False), datas, strict=True):
        rest = {name: value for name, value in data.items() if name not in set(names[:CAP])}
        more = row.more_trial_fields_json
        if rest:
            assert json.loads(more) == rest
        else:
            assert more in ("", None) or pd.isna(more)
        for name in set(data) & set(names[:CAP]):
            assert float(getattr(row, name)) == data[name]


def test_export_tracks_at_most_the_column_cap_of_field_names(
    store: ObjectStore, layout: KeyLayout, tmp_path: Path, trackers: list[object]
) -> None:
    datas = store_wide_trials(store, layout)
    report = export_bucket(store, layout, DirectorySink(tmp_path), fmt="jsonl")
    assert report.rows["trials"] == TRIALS
    assert 0 < len(trackers) <= CAP
    check_trials_table(read_table(tmp_path, "trials", "jsonl"), datas)


def test_dashboard_zip_tracks_at_most_the_column_cap_of_field_names(
    client: TestClient, store: ObjectStore, layout: KeyLayout, trackers: list[object]
) -> None:
    datas = store_wide_trials(store, layout)
    assert log_in(client).status_code == 303  # type: ignore[attr-defined]
    answer = client.get("/admin/export.zip?format=jsonl")
    assert answer.status_code == 200
    assert 0 < len(trackers) <= CAP
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        lines = archive.read("export/trials.jsonl").decode().splitlines()
    check_trials_table(pd.DataFrame([json.loads(line) for line in lines]), datas)


def test_fields_past_the_cap_are_written_exactly_as_one_sorted_json_object() -> None:
    """Encoded a slice at a time (to leave the interpreter lock between slices), same text."""
    from collector.compact_json import compact_json

    data = {f'k{n % 7}-{n}é"': value for n, value in enumerate([1, "a", None, [1, {"b": 2}], 2.5, True] * 9)}
    for chunk in (1, 7, 1000):
        assert trial_export._sorted_json(dict(data), chunk=chunk) == compact_json(data, sort_keys=True)
