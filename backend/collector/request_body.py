"""Reading a JSON request body within limits: content type, size (before reading it whole), time."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from .errors import InvalidUpload, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from .models import parse_json

# text/plain is what navigator.sendBeacon can send cross-origin without a CORS preflight.
ACCEPTED_MEDIA_TYPES = ("application/json", "text/plain")


async def read_json_body(request: Request, *, max_bytes: int, max_depth: int, timeout_seconds: float) -> Any:
    """The decoded JSON body, or an ``InvalidUpload`` subclass saying what is wrong with it."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"send the upload as application/json (got {media_type or 'no content type'})"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {max_bytes}")
    try:
        # asyncio.timeout, not wait_for: the same deadline without a new task per request.
        async with asyncio.timeout(timeout_seconds):
            raw = await _read_limited(request, max_bytes)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout_seconds:g} s") from None
    if not raw:
        raise InvalidUpload("the body is empty; send a JSON object")
    return parse_json(raw, max_depth=max_depth)


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
