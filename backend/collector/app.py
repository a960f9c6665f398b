"""The app factory: ``create_app(settings)`` assembles one collector from its settings."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from . import __version__, admin
from .ingest import UploadService
from .keys import KeyLayout
from .metrics import Metrics
from .routes import health, static, uploads
from .settings import Settings
from .status_cache import StatusCache
from .storage import ObjectStore, RetryingStore, open_store
from .trials import TrialService
from .web.body_limit import BodyLimitMiddleware
from .web.concurrency import ConcurrencyLimit
from .web.error_handlers import install_error_handlers
from .web.rate_limit import ParticipantLimits
from .web.services import Services


def create_app(settings: Settings, *, store: ObjectStore | None = None) -> FastAPI:
    """A collector over ``store`` (default: the backend the settings select)."""
    metrics = Metrics()
    retrying = RetryingStore(
        store or open_store(settings), metrics, deadline_seconds=settings.storage_deadline_seconds
    )
    layout = KeyLayout(settings.data_prefix)
    limits = ParticipantLimits.from_settings(settings)
    services = Services(
        settings=settings,
        store=retrying,
        layout=layout,
        metrics=metrics,
        uploads=UploadService(
            retrying,
            layout,
            retry_after=settings.retry_after_seconds,
            deadline_seconds=settings.storage_deadline_seconds,
            participant_keys=settings.participant_keys,
            clock_skew=timedelta(seconds=settings.clock_skew_seconds),
            status_cache=StatusCache(settings.status_cache_size) if settings.status_cache_size else None,
        ),
        trials=TrialService(
            retrying,
            layout,
            retry_after=settings.retry_after_seconds,
            deadline_seconds=settings.storage_deadline_seconds,
        ),
        limits=limits,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Storage calls run in anyio's worker threads, each holding its thread while it waits:
        # the default 40 would cap uploads/s against a distant bucket (40 / request latency).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.storage_threads
        yield
        retrying.close()

    app = FastAPI(
        title="Participant data collector",
        version=__version__,
        description="Backs up browser-study participant uploads to an S3-compatible bucket.",
        lifespan=lifespan,
    )
    app.state.services = services
    # The participant API: refuse a flooding address first (cheap), then bound uploads in progress.
    participant_limits = [
        Depends(limits.uploads),
        Depends(ConcurrencyLimit.from_settings(settings)),
    ]
    app.include_router(uploads.router, dependencies=participant_limits)
    app.include_router(health.router)
    admin.install(app, services)  # the research team's dashboard under /admin
    app.include_router(static.router)
    static.describe_limits(app, settings)
    install_error_handlers(app)
    # Inside CORS, so a browser can read the 413 (and drop the upload rather than retry it).
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type"],
        # The browser module reads Retry-After on 429/503; cross-origin it must be exposed.
        expose_headers=["Retry-After"],
        max_age=600,
    )
    return app


def create_app_from_environment() -> FastAPI:
    """Entry point for ``uvicorn --factory``: settings from the environment, read once."""
    # A thread parsing a large body holds the GIL for up to a switch interval each time the event
    # loop wants it back (after every socket call); 1 ms instead of 5 keeps the loop responsive.
    sys.setswitchinterval(0.001)
    return create_app(Settings())
