"""Reading a JSON request body within limits: content type and time.

Its size is capped for every route by ``BodyLimitMiddleware``, before and while it is read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from ..errors import InvalidUpload, RequestTimeout, UnsupportedMediaType
from ..models import parse_json

# text/plain is what navigator.sendBeacon can send cross-origin without a CORS preflight.
ACCEPTED_MEDIA_TYPES = ("application/json", "text/plain")


async def read_json_body(request: Request, *, max_depth: int, timeout_seconds: float) -> Any:
    """The decoded JSON body, or an ``InvalidUpload`` subclass saying what is wrong with it."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"send the upload as application/json (got {media_type or 'no content type'})"
        )
    try:
        # asyncio.timeout, not wait_for: the same deadline without a new task per request.
        async with asyncio.timeout(timeout_seconds):
            raw = await request.body()
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout_seconds:g} s") from None
    if not raw:
        raise InvalidUpload("the body is empty; send a JSON object")
    return parse_json(raw, max_depth=max_depth)
