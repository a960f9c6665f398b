"""A trial upload (``uploadType: "trial"``): one trial of one run of an experiment, checked by hand.

Like the other uploads, the stored document is the client's JSON as sent (types, unknown fields,
order), so validation does not go through a pydantic model; every refusal says what to fix.
Body size and nesting depth are already capped by the body reader before this runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import UnprocessableUpload
from ..keys import MAX_TRIAL_INDEX, format_timestamp, is_valid_participant_id
from ..models import parse_envelope, preview
from ..participant_keys import KEY_FIELD
from ..server_fields import SERVER_FIELDS, without_server_fields

TRIAL_UPLOAD_TYPE = "trial"
# Fields of the upload's envelope: they may differ between two sends of the same trial (a new
# uploadId from another tab, a later timestamp) without the trial being a different one.
ENVELOPE_FIELDS = ("uploadId", "timestamp", KEY_FIELD, *SERVER_FIELDS)


@dataclass(frozen=True)
class TrialUpload:
    """One validated trial upload."""

    document: dict[str, Any]  # as sent, without the key and the server's own fields
    participant_id: str
    session_id: str
    trial_index: int
    upload_id: str | None
    participant_key: str | None  # for the key check; never stored

    def timestamp_text(self, received_at: datetime) -> str:
        """The timestamp to answer with: the client's own text, else the server's receipt time."""
        return self.document.get("timestamp") or format_timestamp(received_at)


def is_trial(value: Any) -> bool:
    """Is this request body (or batch item) a trial upload? Decides which parser checks it."""
    return isinstance(value, dict) and value.get("uploadType") == TRIAL_UPLOAD_TYPE


def parse_trial(value: Any) -> TrialUpload:
    """Check one trial upload against the contract (docs/api.md); raises ``InvalidUpload``."""
    envelope = parse_envelope(value)
    session_id = value.get("sessionId")
    if session_id is None:
        raise UnprocessableUpload("a trial needs sessionId (one run of the experiment)")
    if not is_valid_participant_id(session_id):  # same alphabet and length as participant IDs
        raise UnprocessableUpload(
            f"sessionId must be 1 to 64 letters, digits, '_' or '-' (got {preview(session_id)})"
        )
    trial_index = value.get("trialIndex")
    if trial_index is None:
        raise UnprocessableUpload("a trial needs trialIndex, its position in the session from 0")
    # JSON (and its schema) has one number type: 3.0 is the integer 3, stored as 3 so the document
    # agrees with its key. A bool is an int in Python, not a number in JSON.
    if isinstance(trial_index, float) and trial_index.is_integer():
        trial_index = int(trial_index)
        value = {**value, "trialIndex": trial_index}
    if isinstance(trial_index, bool) or not isinstance(trial_index, int):
        raise UnprocessableUpload(f"trialIndex must be a whole number (got {preview(trial_index)})")
    if not 0 <= trial_index <= MAX_TRIAL_INDEX:
        raise UnprocessableUpload(
            f"trialIndex must be from 0 to {MAX_TRIAL_INDEX} (got {preview(trial_index)})"
        )
    if not isinstance(value.get("trialData"), dict):
        raise UnprocessableUpload("a trial needs trialData, a JSON object")
    return TrialUpload(
        # The key is a secret, the server fields are the collector's (server_fields).
        document=without_server_fields({k: v for k, v in value.items() if k != KEY_FIELD}),
        participant_id=envelope.participant_id,
        session_id=session_id,
        trial_index=trial_index,
        upload_id=envelope.upload_id,
        participant_key=envelope.participant_key,
    )
