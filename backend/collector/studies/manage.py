"""Registering and changing studies, for the command line and the dashboard alike."""

from __future__ import annotations

from typing import Any

from ..storage import ObjectStore
from .admission import seed_admissions
from .registry import Study, add_study, read_registry, update_study


def register_study(store: ObjectStore, data_prefix: str, study: Study, *, who: str) -> Study:
    """Add a study to the registry (``StudyExists`` if its ID is taken)."""
    added = add_study(store, data_prefix, study, who=who)
    if added.max_participants is not None:
        seed_admissions(store, data_prefix, added)
    return added


def change_study_settings(
    store: ObjectStore,
    data_prefix: str,
    study_id: str,
    changes: dict[str, Any],
    *,
    who: str,
    reason: str = "",
) -> Study:
    """Change a study; a cap set where there was none counts the participants already in."""
    before = read_registry(store, data_prefix).get(study_id)
    after = update_study(store, data_prefix, study_id, changes, who=who, reason=reason)
    if after.max_participants is not None and (before is None or before.max_participants is None):
        seed_admissions(store, data_prefix, after)
    return after
