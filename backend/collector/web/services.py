"""What one app instance holds (settings, store, key layout, metrics, the upload pipeline, the
registered studies), and the
dependency aliases route handlers declare to receive it (``services: ServicesDep``). The participant
upload routes, the hot path, read it from the request instead (``routes.uploads._admitted``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from ..keys import KeyLayout
from ..metrics import Metrics
from ..pipeline.run import UploadPipeline
from ..settings import Settings
from ..status_cache import StatusCache
from ..storage import ObjectStore
from .concurrency import BodiesInFlight, ConcurrencyLimit
from .rate_limit import ParticipantLimits

if TYPE_CHECKING:
    from ..studies.routing import StudyServices


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: ObjectStore
    layout: KeyLayout
    metrics: Metrics
    uploads: UploadPipeline  # every upload: status, submission, trial (collector.pipeline)
    limits: ParticipantLimits | None = None  # None: no per-address limits (tools, not the API)
    slots: ConcurrencyLimit | None = None  # uploads parsed and stored at once (None: unbounded)
    bodies: BodiesInFlight | None = None  # bodies arriving per address (None: unbounded)
    # The registered studies' services (collector.studies); None: the default study only (tools).
    studies: StudyServices | None = None


def upload_pipeline(store: ObjectStore, layout: KeyLayout, settings: Settings) -> UploadPipeline:
    """The upload pipeline of one study (one key layout) over ``store``."""
    return UploadPipeline(
        store,
        layout,
        retry_after=settings.retry_after_seconds,
        deadline_seconds=settings.storage_deadline_seconds,
        participant_keys=settings.participant_keys,
        clock_skew=timedelta(seconds=settings.clock_skew_seconds),
        status_cache=StatusCache(settings.status_cache_size) if settings.status_cache_size else None,
    )


async def get_services(request: Request) -> Services:
    """The app's services, for route handlers (``Depends(get_services)``)."""
    # Async on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, which would
    # cost every request a thread round trip (and one of the storage calls' thread tokens).
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
