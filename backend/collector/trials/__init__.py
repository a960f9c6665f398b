"""Per-trial saving: trial uploads (parsed here, stored once by ``collector.pipeline``) and their sessions."""

from __future__ import annotations

from .model import TRIAL_UPLOAD_TYPE, TrialUpload, is_trial, parse_trial
from .sessions import TrialSession, submission_session_ids, summarise_sessions

__all__ = [
    "TRIAL_UPLOAD_TYPE",
    "TrialSession",
    "TrialUpload",
    "is_trial",
    "parse_trial",
    "submission_session_ids",
    "summarise_sessions",
]
