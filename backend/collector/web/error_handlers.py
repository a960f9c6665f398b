"""The one place errors become HTTP answers: ``{"status": "error", "error": "<for a person>"}``.

A refusal (``collector.errors.Refusal``: a ``CollectorError`` raised anywhere, or a value the
upload pipeline returns) gets ``refusal_body``, with ``"reason"`` when it has one; a batch item
is the same body plus ``httpStatus`` and ``retryAfter`` (routes.uploads). The shape, the statuses
and the headers (``Retry-After``, ``Allow``, ``Connection: close``) are described in docs/api.md §2.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import CollectorError, Refusal, log_refusal
from .responses import CompactJSONResponse

logger = logging.getLogger(__name__)


def refusal_body(refusal: Refusal) -> dict[str, Any]:
    """The one error body: ``status``, ``error`` (for a person), and ``reason`` (for the browser module)."""
    body: dict[str, Any] = {"status": "error", "error": refusal.message}
    if refusal.reason is not None:
        body["reason"] = refusal.reason
    return body


def error_response(
    status: int,
    message: str,
    *,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON error for a status and message; ``headers`` adds e.g. a 405's ``Allow``."""
    return refusal_response(Refusal(status, message, retry_after=retry_after), headers=headers)


def refusal_response(refusal: Refusal, *, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The answer to a refusal, with the headers it asks for."""
    all_headers = dict(headers or {})
    if refusal.retry_after is not None:
        all_headers["Retry-After"] = str(refusal.retry_after)
    if refusal.closes_connection:
        # The rest of the body was never read: close, or a trickling client keeps the
        # connection (and the server keeps reading and discarding) for as long as it likes.
        all_headers["Connection"] = "close"
    return CompactJSONResponse(refusal_body(refusal), status_code=refusal.status, headers=all_headers)


def collector_error_response(exc: CollectorError) -> JSONResponse:
    """The answer to one of the collector's own errors, with the headers its class asks for."""
    return refusal_response(Refusal.of(exc))


def refuse(request: Request, refusal: Refusal) -> JSONResponse:
    """Log the refusal (``log_refusal``) and answer it: what every refused request gets."""
    log_refusal(request.method, request.url.path, refusal.status, refusal.message)
    return refusal_response(refusal)


def install_error_handlers(app: FastAPI) -> None:
    """Map the exception hierarchy, framework errors and surprises to the one error shape."""

    @app.exception_handler(CollectorError)
    async def _collector_error(request: Request, exc: CollectorError) -> JSONResponse:
        return refuse(request, Refusal.of(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        # Keep the framework's headers: a 405 must say which methods are allowed (RFC 9110 §15.5.6).
        return error_response(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
        log_refusal(request.method, request.url.path, 422, message)
        return error_response(422, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The trace goes to the log for us, never into the answer.
        logger.exception("Unexpected error on %s %r", request.method, request.url.path)
        return error_response(500, "internal error; nothing was stored")
