"""Step 5 of the pipeline: the answer to one upload, a 200's body or a refusal.

A refusal (``collector.errors.Refusal``) becomes HTTP in ``collector.web.error_handlers``, the
same body for a single upload and a batch item. This holds the success side, and the outcome
``collector_uploads_total`` counts (docs/api.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import Refusal

DUPLICATE_TRIAL_MESSAGE = (
    "a different trial with this sessionId and trialIndex was stored first; "
    "it is kept and this one was not stored"
)


@dataclass(frozen=True)
class Answer:
    """What a 200 says of one upload."""

    participant_id: str
    timestamp: str
    files: list[str] = field(default_factory=list)
    superseded: bool = False  # a newer status.json was already stored; this one was not written
    key_verified: bool | None = None  # False: kept apart, without the participant's key
    duplicate: bool = False  # a trial: a different one holds its key; this one was not stored
    # False: erased, asked without the key the tombstone kept; answered as for a claimed
    # participant, and nothing was stored (docs/trust-model.md).
    stored: bool = True

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "success",
            "participantId": self.participant_id,
            "timestamp": self.timestamp,
            "filesUploaded": self.files,
        }
        if self.superseded:
            body["statusSuperseded"] = True
        if self.key_verified is False:
            body["keyVerified"] = False
        if self.duplicate:
            body["duplicate"] = True
            body["message"] = DUPLICATE_TRIAL_MESSAGE
        return body


def outcome(result: Answer | Refusal) -> str:
    """The ``outcome`` label of ``collector_uploads_total`` for one upload's result."""
    if isinstance(result, Refusal):
        return "storage_error" if result.status >= 500 else "refused"
    if not result.stored:
        return "refused"
    if result.duplicate:
        return "duplicate"
    return "stored_unverified" if result.key_verified is False else "stored"
