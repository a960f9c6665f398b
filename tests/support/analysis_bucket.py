"""A small synthetic study for the analysis-format tests: every kind of value and of completeness.

Shaped as the collector stores it (docs/bucket-layout.md): status files, submissions, trials with
``serverReceivedAt``, one participant erased. Every ID and value is made up.

* ``SYNTH-01_x``: finished session ``run_A`` (4 of 4 expected trials, a submission naming it);
  its ID holds ``-``, ``_`` and ``x``, which Psych-DS file names must encode.
* ``SYNTH02``: session ``b2`` with trials 0, 1 and 3 of 5 expected, no submission (2 and 4 missing);
  a participant key hash in its status; trial fields named like no SPSS/Stata variable may be.
* ``SYNTH03``: a status only (started, no trial).
* ``SYNTH04``: uploaded, then erased (withdrew).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from collector.erasure import erase_participant
from collector.keys import KeyLayout, format_timestamp
from collector.storage import ObjectStore
from tests.support.factories import (
    BASE_TIME,
    encode,
    make_status,
    make_submission,
    put_status,
    put_submission,
)

LONG_TEXT = "A long free-text answer, " * 120  # 3,000 bytes: past Stata's 2,045-byte str limit
KEY_HASH = "sha256:SYNTHETIC0000"  # never exported
SESSIONS = {
    ("SYNTH-01_x", "run_A"): {"indices": [0, 1, 2, 3], "expected": 4},
    ("SYNTH02", "b2"): {"indices": [0, 1, 3], "expected": 5},
}


def trial_document(pid: str, session: str, index: int, expected: int | None) -> dict[str, Any]:
    moment = BASE_TIME + timedelta(seconds=10 * index)
    document: dict[str, Any] = {
        "participantId": pid,
        "uploadType": "trial",
        "sessionId": session,
        "trialIndex": index,
        "trialData": {
            "rt": 400 + index,
            "correct": index % 2 == 0,
            "stimulus": f"<p>{index}</p>",
            "time_elapsed": 1000.5 * (index + 1),
            "answer": LONG_TEXT if index == 1 else "short",
        },
        "uploadId": f"{pid}-{session}-{index}",
        "timestamp": format_timestamp(moment),
        "serverReceivedAt": format_timestamp(moment + timedelta(milliseconds=250)),
    }
    if pid == "SYNTH02":  # field names no SPSS or Stata variable may have, one a formula in a spreadsheet
        odd = {"=sum": index, "if": "x", "reaction time (ms) measured from the onset": 1.5}
        document["trialData"].update(odd)
    if expected is not None:
        document["expectedTrials"] = expected
    return document


def seed_analysis_bucket(store: ObjectStore, layout: KeyLayout) -> None:
    put_status(store, layout, make_status("SYNTH-01_x", sessions=1, responses={"mood": 4, "sleep": "7h"}))
    put_submission(
        store,
        layout,
        make_submission("SYNTH-01_x", data={"sessionId": "run_A", "score": 3}, sessionId="run_A"),
    )
    put_status(store, layout, make_status("SYNTH02", tutorial_completed=False, participantKeyHash=KEY_HASH))
    put_status(store, layout, make_status("SYNTH03", setup=True, welcome=False, tutorial=False))
    put_status(store, layout, make_status("SYNTH04", sessions=1))
    put_submission(store, layout, make_submission("SYNTH04"))
    for (pid, session), plan in SESSIONS.items():
        for index in plan["indices"]:
            key = layout.trial_key(pid, session, index)
            store.put(key, encode(trial_document(pid, session, index, plan["expected"])))
    erase_participant(store, layout, "SYNTH04", who="test", reason="withdrew (synthetic)", settle_seconds=0)
