"""CORS for the participant API, saying in the log which origins it refuses (once per origin).

Starlette's middleware answers a refused preflight with a bare 400 and logs nothing, so a study
on an origin missing from ``ALLOWED_ORIGINS`` looks, from the server, like a study with no
participants, while its uploads wait in the browsers' queues. Every upload is JSON, so every
cross-origin upload is preceded by a preflight: logging refused preflights names every origin
that cannot upload.
"""

from __future__ import annotations

import logging
import threading

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

logger = logging.getLogger("collector.cors")

# Distinct refused origins logged by one process; past it one line says the rest go unlogged,
# so a client inventing origins cannot flood the log.
MAX_LOGGED_ORIGINS = 100


class LoggedCORSMiddleware(CORSMiddleware):
    def __init__(self, app: ASGIApp, **options: object) -> None:
        super().__init__(app, **options)  # type: ignore[arg-type]
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def preflight_response(self, request_headers: Headers) -> Response:
        origin = request_headers["origin"]
        if not self.is_allowed_origin(origin=origin):
            self._log_once(origin)
        return super().preflight_response(request_headers)

    def _log_once(self, origin: str) -> None:
        with self._lock:
            if origin in self._logged or len(self._logged) > MAX_LOGGED_ORIGINS:
                return
            self._logged.add(origin)
            full = len(self._logged) > MAX_LOGGED_ORIGINS
        if full:
            logger.warning("⚠️ More refused CORS origins; no more are logged until restart")
            return
        # %r: the origin is the client's text.
        logger.warning(
            "⚠️ Refused a browser request from origin %r: not in ALLOWED_ORIGINS (logged once per origin)",
            origin,
        )
