"""CORS for several studies: the configured ``ALLOWED_ORIGINS`` plus every registered study's origins.

Starlette's middleware fixes its origins at start; studies come and go in the bucket. This one asks
the process's registry cache (re-read off the event loop at most every few seconds, and only for
an origin ``ALLOWED_ORIGINS`` does not already allow). Which study an allowed origin may upload
to is checked per upload (``collector.studies.routing``): CORS only decides what a page may read.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..storage import StorageError
from ..web.cors import LoggedCORSMiddleware
from .registry import InvalidStudy, RegistryCache

logger = logging.getLogger(__name__)


class StudyCORSMiddleware(LoggedCORSMiddleware):
    def __init__(self, app: ASGIApp, *, registry: RegistryCache, **options: Any) -> None:
        super().__init__(app, **options)
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allow_all_origins and not self.registry.is_fresh():
            origin = Headers(scope=scope).get("origin")
            if origin is not None and origin not in self.allow_origins:
                try:
                    await run_in_threadpool(self.registry.current)
                except (InvalidStudy, StorageError) as exc:
                    # Keep answering by the last registry read (if any); the upload path refuses.
                    logger.warning("⚠️ Cannot read the study registry for CORS: %s", exc)
        await super().__call__(scope, receive, send)

    def is_allowed_origin(self, origin: str) -> bool:
        if super().is_allowed_origin(origin):
            return True
        snapshot = self.registry.snapshot
        return snapshot is not None and origin in snapshot.origins()
