"""What one app instance holds: its settings, store, key layout, metrics and upload service."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from .ingest import UploadService
from .keys import KeyLayout
from .metrics import Metrics
from .settings import Settings
from .storage import ObjectStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: ObjectStore
    layout: KeyLayout
    metrics: Metrics
    uploads: UploadService


def get_services(request: Request) -> Services:
    """The app's services, for route handlers (``Depends(get_services)``)."""
    return request.app.state.services
