"""Per-trial saving: trial uploads (parse, store exactly once) and what a session of trials adds up to."""

from __future__ import annotations

from .model import TRIAL_UPLOAD_TYPE, TrialUpload, is_trial, parse_trial
from .service import TrialResult, TrialService
from .sessions import TrialSession, submission_session_ids, summarise_sessions

__all__ = [
    "TRIAL_UPLOAD_TYPE",
    "TrialResult",
    "TrialService",
    "TrialSession",
    "TrialUpload",
    "is_trial",
    "parse_trial",
    "submission_session_ids",
    "summarise_sessions",
]
