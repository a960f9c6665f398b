"""``collector verify`` on both backends: passes on clean data, finds each planted defect."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from collector.cli import main
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from collector.verify import NO_STATUS, NOT_JSON, STRAY_KEY, WRONG_PARTICIPANT, verify_bucket
from tests.support.collector_process import settings_environment
from tests.support.factories import make_status, make_submission, put_status, put_submission


def seed_clean(store: ObjectStore, layout: KeyLayout) -> None:
    for pid in ("SYNTH1", "SYNTH2"):
        put_status(store, layout, make_status(pid, sessions=1))
        put_submission(store, layout, make_submission(pid))


def test_clean_bucket_passes(store: ObjectStore, layout: KeyLayout, settings: Settings) -> None:
    seed_clean(store, layout)
    report = verify_bucket(store, layout)
    assert report.ok, report.defects
    assert (report.objects, report.participants, report.statuses, report.submissions) == (4, 2, 2, 2)
    result = CliRunner().invoke(main, ["verify"], env=settings_environment(settings))
    assert result.exit_code == 0, result.output
    assert "4 objects, 2 participants, 2 status files, 2 submissions, 0 trials; no problems found" in (
        result.output
    )


def test_each_planted_defect_is_found(store: ObjectStore, layout: KeyLayout, settings: Settings) -> None:
    seed_clean(store, layout)
    stray = f"{layout.participants_root}SYNTH1/notes.txt"
    store.put(stray, b"not part of the layout")
    odd_name = f"{layout.participants_root}SYNTH1/submissions/SYNTH1_Complete_yesterday.json"
    store.put(odd_name, b"{}")
    broken = layout.status_key("SYNTH2")
    store.put(broken, b"\xff\xfe not json")
    wrong_owner = put_submission(store, layout, make_submission("SYNTH9"), folder="SYNTH1")
    orphan = put_submission(store, layout, make_submission("SYNTH3"))

    report = verify_bucket(store, layout)
    found = {(d.kind, d.key) for d in report.defects}
    assert found == {
        (STRAY_KEY, stray),
        (STRAY_KEY, odd_name),
        (NOT_JSON, broken),
        (WRONG_PARTICIPANT, wrong_owner),
        (NO_STATUS, orphan),
    }
    assert not report.ok

    result = CliRunner().invoke(main, ["verify"], env=settings_environment(settings))
    assert result.exit_code == 1
    for _, key in found:
        assert key in result.output
    assert "5 problem(s)" in result.output


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b""], ids=["array", "string", "empty"])
def test_json_that_is_not_an_object_is_a_defect(store: ObjectStore, layout: KeyLayout, body: bytes) -> None:
    put_status(store, layout, make_status("SYNTH1"))
    key = put_submission(store, layout, make_submission("SYNTH1"))
    store.put(key, body)
    assert [(d.kind, d.key) for d in verify_bucket(store, layout).defects] == [(NOT_JSON, key)]
