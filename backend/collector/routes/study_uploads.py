"""The participant endpoints' study step: which study an upload goes to (docs/studies.md).

Kept out of ``uploads.py`` so that the upload path reads as before: it asks here first, then
stores with the services this returns. Whether a new participant may join a closed or capped
study is asked by the upload pipeline, once it knows the participant is new
(``collector.pipeline.admission``).
"""

from __future__ import annotations

from typing import Any

from ..studies.routing import StudyRoute
from ..web.services import Services


async def route_to_study(services: Services, value: Any, origin: str | None) -> StudyRoute:
    """The upload's study (``studyId``); raises unknown-study, study-archived or origin refusals."""
    if services.studies is None:
        return StudyRoute(services)
    return await services.studies.route(services, value, origin)
