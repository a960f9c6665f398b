"""What a stored trial is: its document, its name when unverified, and how a retry is recognised.

A trial is stored exactly once per (participant, session, trial index), with one write, by the
upload pipeline (``collector.pipeline``): its key is derived from the trial itself
(``trials/{sessionId}/{trialIndex:06d}.json``), so the store's create-if-absent is the whole of
exactly-once. The first write of a (session, index) creates the object, and every later send of
it (a retry, a second tab, another collector process) finds the key taken and is answered with
that same key; a *different* trial there is kept, and the later one answered ``duplicate``.

Only a trial whose key was accepted (or for a participant who holds no key) goes to the trial's
key. One sent without the key of a claimed participant is kept apart, under a key of its own
derived from its content (``KeyLayout.unverified_trial_key``, ``content_suffix``): a forged
trial sent first can never take a real trial's place.

Requests per trial: one PUT when new; a PUT and a GET when the key is already taken.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from ..compact_json import compact_json_bytes
from ..keys import format_timestamp
from ..server_fields import KEY_VERIFIED, RECEIVED_AT
from .model import ENVELOPE_FIELDS, TrialUpload


def stored_document(trial: TrialUpload, *, received_at: datetime, verified: bool) -> dict[str, Any]:
    """The upload as sent (already without the key and server fields), plus what the server adds."""
    document = dict(trial.document)
    document[RECEIVED_AT] = format_timestamp(received_at)
    if not verified:
        document[KEY_VERIFIED] = False
    return document


def same_trial(stored_body: bytes, trial: TrialUpload) -> bool:
    """Is the stored object this trial (a retry or another tab's send)? By content, envelope aside.

    The uploadId and timestamp are left out on purpose: two tabs of one run send the same trial
    with different ones, and it is still the same trial.
    """
    try:
        stored = json.loads(stored_body)
    except ValueError:
        return False
    if not isinstance(stored, dict):
        return False
    return _content(stored) == _content(trial.document)


def content_suffix(trial: TrialUpload) -> str:
    """8 hex of the trial's content (envelope aside): an unverified trial's name, the same for its retries."""
    return hashlib.sha256(compact_json_bytes(_content(trial.document), sort_keys=True)).hexdigest()[:8]


def _content(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in ENVELOPE_FIELDS}
