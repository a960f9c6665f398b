"""The app factory: ``create_app(settings)`` assembles one collector from its settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from . import __version__, admin
from .keys import KeyLayout
from .metrics import Metrics
from .routes import api_docs, health, static, uploads
from .settings import Settings
from .storage import (
    ConditionalWriteGate,
    ConditionalWritesIgnored,
    ObjectStore,
    RetryingStore,
    StorageError,
    open_store,
)
from .studies.cors import StudyCORSMiddleware
from .studies.registry import RegistryCache
from .studies.routing import StudyServices
from .web.body_limit import BodyLimitMiddleware
from .web.concurrency import BodiesInFlight, ConcurrencyLimit
from .web.error_handlers import install_error_handlers
from .web.rate_limit import ParticipantLimits
from .web.services import Services, upload_pipeline

logger = logging.getLogger("collector")


def create_app(settings: Settings, *, store: ObjectStore | None = None) -> FastAPI:
    """A collector over ``store`` (default: the backend the settings select).

    A bucket the settings select is used only once it has proven its conditional writes
    (``ConditionalWriteGate``); a ``store`` handed in (tests, benchmarks) is used as it is.
    """
    metrics = Metrics()
    layout = KeyLayout(settings.data_prefix)
    retrying: ObjectStore = RetryingStore(
        store or open_store(settings), metrics, deadline_seconds=settings.storage_deadline_seconds
    )
    gate = None
    if store is None and settings.storage_kind == "s3":
        retrying = gate = ConditionalWriteGate(retrying, layout.conditional_probe_key)
    limits = ParticipantLimits.from_settings(settings)
    # Registered studies: their own services over the same store, refusals before storing.
    registry = RegistryCache(
        retrying, settings.data_prefix, check_seconds=settings.study_registry_check_seconds
    )
    services = Services(
        settings=settings,
        store=retrying,
        layout=layout,
        metrics=metrics,
        uploads=upload_pipeline(retrying, layout, settings),
        limits=limits,
        studies=StudyServices(registry),
        slots=ConcurrencyLimit.from_settings(settings),
        bodies=BodiesInFlight.from_settings(settings),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Blocking storage calls (the dashboard, the study registry) run in anyio's worker threads,
        # each holding its thread while it waits: the default 40 would cap requests/s against a
        # distant bucket (40 / request latency).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.storage_threads
        # The upload pipeline's store calls (ObjectStore.put_async and get_async, when a backend
        # has no native ones) run in the event loop's default executor: as many threads, not
        # asyncio's default of a few per core.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(settings.storage_threads, thread_name_prefix="storage")
        )
        proving = None
        if gate is not None and not await _proven_at_start(gate):
            proving = asyncio.create_task(_prove_until_done(gate, settings.retry_after_seconds))
        yield
        if proving is not None:
            proving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await proving
        retrying.close()

    app = FastAPI(
        title="Participant data collector",
        version=__version__,
        description="Backs up browser-study participant uploads to an S3-compatible bucket.",
        lifespan=lifespan,
        docs_url=None,  # served from the collector's own copy of Swagger UI (routes/api_docs.py)
        redoc_url=None,
    )
    app.state.services = services
    # The participant API: its routes refuse a flooding address first (cheap), then bound bodies
    # arriving per address and, once a body is whole, uploads in progress (web.concurrency).
    app.include_router(uploads.router)
    app.include_router(health.router)
    app.include_router(api_docs.router)
    admin.install(app, services)  # the research team's dashboard under /admin
    app.include_router(static.router)
    static.describe_limits(app, settings)
    install_error_handlers(app)
    # Inside CORS, so a browser can read the 413 (and drop the upload rather than retry it).
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(
        StudyCORSMiddleware,
        registry=registry,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type"],
        # The browser module reads Retry-After on 429/503; cross-origin it must be exposed.
        expose_headers=["Retry-After"],
        max_age=600,
    )
    return app


async def _proven_at_start(gate: ConditionalWriteGate) -> bool:
    """Prove the bucket before serving. A bucket that ignores a condition stops the start
    (``ConditionalWritesIgnored`` propagates); an unreachable one does not, since R2 may hiccup
    during a deploy: uploads and /healthz answer 503 until a later proof succeeds."""
    try:
        await anyio.to_thread.run_sync(gate.prove)
    except ConditionalWritesIgnored:
        raise
    except StorageError as exc:
        logger.warning(
            "⚠️ Cannot reach the bucket to prove its conditional writes (%s); "
            "answering 503 to uploads and /healthz, and trying again",
            exc,
        )
        return False
    return True


async def _prove_until_done(gate: ConditionalWriteGate, interval: float) -> None:
    """Keep proving in the background until it holds (requests also try, see the gate)."""
    while not gate.proven:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(gate.prove)
        except ConditionalWritesIgnored:
            return  # the gate refuses every call from now on, and has said why
        except StorageError:
            continue


def create_app_from_environment() -> FastAPI:
    """Entry point for ``uvicorn --factory``: settings from the environment, read once."""
    # A thread parsing a large body holds the GIL for up to a switch interval each time the event
    # loop wants it back (after every socket call); 1 ms instead of 5 keeps the loop responsive.
    sys.setswitchinterval(0.001)
    return create_app(Settings())
