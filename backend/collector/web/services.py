"""What one app instance holds (settings, store, key layout, metrics, upload and trial services), and the
dependency aliases route handlers declare to receive it (``services: ServicesDep``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ..ingest import UploadService
from ..keys import KeyLayout
from ..metrics import Metrics
from ..settings import Settings
from ..storage import ObjectStore
from ..trials import TrialService
from .concurrency import BodiesInFlight, ConcurrencyLimit
from .rate_limit import ParticipantLimits


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: ObjectStore
    layout: KeyLayout
    metrics: Metrics
    uploads: UploadService
    trials: TrialService
    limits: ParticipantLimits | None = None  # None: no per-address limits (tools, not the API)
    slots: ConcurrencyLimit | None = None  # uploads parsed and stored at once (None: unbounded)
    bodies: BodiesInFlight | None = None  # bodies arriving per address (None: unbounded)


async def get_services(request: Request) -> Services:
    """The app's services, for route handlers (``Depends(get_services)``)."""
    # Async on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, which would
    # cost every request a thread round trip (and one of the storage calls' thread tokens).
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
