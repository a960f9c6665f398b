"""``pipeline.decide`` on its own: a pure function, so each rule is one call and one look at the plan.

The HTTP tests (test_upload_api, test_trust_model, test_status_cache, ...) show the same rules
end to end; these say which rule gives which plan, without a store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collector.errors import Refusal
from collector.keys import KeyLayout
from collector.models import parse_upload
from collector.participant_keys import key_hash
from collector.pipeline.decide import READ_FIRST, Plan, Rules, SubmissionWrite, TrialWrite, decide
from collector.pipeline.state import OLDEST, ParticipantState
from collector.trials import parse_trial

KEY = "owner-key-0123456789abc"
WRONG = "guess-key-0123456789abc"
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
SKEW = timedelta(seconds=300)
RULES = Rules(participant_keys=True, layout=KeyLayout("p"), clock_skew=SKEW)


def upload(kind: str, *, key: str | None = KEY, at: datetime = NOW) -> object:
    body: dict[str, object] = {"participantId": "D1", "uploadType": kind, "timestamp": at.isoformat()}
    if kind == "submission":
        body["submissionData"] = {"a": 1}
    if kind == "trial":
        body.update(sessionId="run-1", trialIndex=0, trialData={"rt": 1})
    if key is not None:
        body["participantKey"] = key
    if kind == "trial":
        return parse_trial(body)
    return parse_upload(body, received_at=NOW, clock_skew=SKEW)


def state(
    *,
    read: bool = True,
    exists: bool = True,
    key: str | None = KEY,
    at: datetime = NOW - timedelta(hours=1),
    erased: bool = False,
    has_objects: bool | None = None,
) -> ParticipantState:
    return ParticipantState(
        read=read,
        exists=exists,
        etag="e1" if exists else None,
        key_hash=key_hash("D1", key) if key else None,
        moment=at if exists else OLDEST,
        erased=erased,
        erased_at=at if erased else None,
        confirmed_at=0.0,
        has_objects=has_objects,
    )


def test_a_remembered_participant_is_written_by_a_swap_on_its_etag_then_the_submission() -> None:
    plan = decide(state(read=False), upload("submission"), NOW, RULES)
    assert isinstance(plan, Plan) and plan.status is not None and plan.status.etag == "e1"
    assert isinstance(plan.item, SubmissionWrite) and plan.verified is True and not plan.admit_new


def test_a_participant_never_met_is_created_as_a_new_one() -> None:
    plan = decide(state(read=False, exists=False, key=None), upload("status"), NOW, RULES)
    assert isinstance(plan, Plan) and plan.status is not None and plan.status.etag is None
    assert plan.admit_new and plan.status.key_hash == key_hash("D1", KEY)  # the key claims


@pytest.mark.parametrize("kind", ["status", "submission"])
def test_what_no_status_write_would_confirm_is_never_decided_from_memory(kind: str) -> None:
    older = upload(kind, at=NOW - timedelta(days=1))
    assert decide(state(read=False), older, NOW, RULES) is READ_FIRST  # superseded?
    assert decide(state(read=False), upload(kind, key=WRONG), NOW, RULES) is READ_FIRST  # refused key?
    assert decide(state(read=False), upload("trial", key=WRONG), NOW, RULES) is READ_FIRST


def test_newest_wins_and_is_decided_before_the_key() -> None:
    older = upload("status", key=WRONG, at=NOW - timedelta(days=1))
    assert decide(state(), older, NOW, RULES) == Plan(superseded=True)
    plan = decide(state(), upload("submission", at=NOW - timedelta(days=1)), NOW, RULES)
    assert isinstance(plan, Plan) and plan.status is None and plan.superseded and plan.item is not None


def test_a_wrong_key_refuses_a_status_and_keeps_a_submission_apart() -> None:
    refusal = decide(state(), upload("status", key=WRONG), NOW, RULES)
    assert isinstance(refusal, Refusal) and (refusal.status, refusal.reason) == (403, "participant-key")
    plan = decide(state(), upload("submission", key=None), NOW, RULES)
    assert isinstance(plan, Plan) and plan.status is None and plan.verified is False
    assert isinstance(plan.item, SubmissionWrite) and plan.item.document["keyVerified"] is False


def test_an_erasure_is_told_only_to_the_key_it_kept() -> None:
    erased = state(erased=True)
    refusal = decide(erased, upload("submission"), NOW, RULES)
    assert isinstance(refusal, Refusal) and (refusal.status, refusal.reason) == (410, "erased")
    for kind in ("submission", "trial"):
        plan = decide(erased, upload(kind, key=None), NOW, RULES)
        assert isinstance(plan, Plan) and plan.as_claimed and plan.status is None and plan.item is None
    refusal = decide(erased, upload("status", key=None), NOW, RULES)
    assert isinstance(refusal, Refusal) and refusal.status == 403  # as for any claimed participant


def test_a_trial_never_writes_status_and_is_new_only_with_nothing_stored() -> None:
    plan = decide(state(exists=False, key=None, has_objects=False), upload("trial"), NOW, RULES)
    assert isinstance(plan, Plan) and plan.status is None and isinstance(plan.item, TrialWrite)
    assert plan.admit_new
    plan = decide(state(exists=False, key=None, has_objects=True), upload("trial"), NOW, RULES)
    assert isinstance(plan, Plan) and not plan.admit_new
    plan = decide(state(), upload("trial", key=WRONG), NOW, RULES)
    assert isinstance(plan, Plan) and plan.verified is False and isinstance(plan.item, TrialWrite)
    assert "/unverified/" in plan.item.key
