"""The participant endpoints' study step: which study an upload goes to, and whether it may join.

Kept out of ``uploads.py`` so that the upload path reads as before: it asks here first, then
stores with the services this returns (docs/studies.md).
"""

from __future__ import annotations

from typing import Any

from fastapi.concurrency import run_in_threadpool

from ..errors import storage_unavailable
from ..keys import is_valid_participant_id
from ..studies.routing import StudyRoute
from ..web.services import Services


async def route_to_study(services: Services, value: Any, origin: str | None) -> StudyRoute:
    """The upload's study (``studyId``); raises unknown-study, study-archived or origin refusals."""
    if services.studies is None:
        return StudyRoute(services)
    return await services.studies.route(services, value, origin)


async def admit_trial(study: StudyRoute, value: Any) -> None:
    """A trial of a participant new to a closed or full study is refused like any upload of theirs.

    An open study without a cap costs nothing here; an invalid participant ID is left to the
    trial parser, which says what is wrong with it.
    """
    participant_id = value.get("participantId") if isinstance(value, dict) else None
    if study.study is None or not is_valid_participant_id(participant_id):
        return
    if study.study.status == "open" and study.study.max_participants is None:
        return
    settings = study.services.settings
    with storage_unavailable(
        "storage is unavailable right now; the upload was not stored, please retry",
        retry_after=settings.retry_after_seconds,
        log_context=f"{participant_id}, study admission",
    ):
        await run_in_threadpool(study.admit, participant_id)
