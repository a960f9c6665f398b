"""Reading a JSON request body within limits: content type, time, and number of JSON values.

Its size (bytes, and JSON values) is capped by the one body-size policy, ``web.body_limit``.
Receiving and parsing are two steps, so the upload routes take their concurrency slot between
them: a body still on its way holds no slot (``web.concurrency``). A large parse runs in a
worker thread, never on the event loop, and a body with more JSON values than ``max_values``
is refused before it is parsed: a 3 MB body of a million ``{}`` costs about a second of CPU to
parse, which on the event loop would stall every other request.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from ..errors import InvalidUpload, RequestTimeout, UnsupportedMediaType
from ..models import parse_json, parse_json_exactly
from .body_limit import check_json_values
from .concurrency import within_wait_budget

# text/plain is what navigator.sendBeacon can send cross-origin without a CORS preflight.
ACCEPTED_MEDIA_TYPES = ("application/json", "text/plain")
# Bodies with at most this many JSON values and bytes (well under a millisecond to parse) are
# parsed on the event loop; any other in a worker thread. Bytes count as well as values: a 4 MB
# body of a few long strings takes milliseconds to decode, however few its values.
INLINE_PARSE_VALUES = 256
INLINE_PARSE_BYTES = 64 * 1024
# Bodies whose JSON values average more bytes than this (a few long strings) parse faster in
# Python's json alone: its string scan is as fast as orjson's, and the checks that make orjson's
# answer exact pass over the body again (bench/bench_json.py: 4 MB of 16 KB strings,
# 5.6 ms against 7.4 ms). Both give the same answer (models.parse_json).
LONG_VALUE_BYTES = 1024


def estimate_json_values(raw: bytes) -> int:
    """An upper bound of the JSON values in ``raw``, in C-speed passes (milliseconds for 4 MB).

    Every value after the first in a container follows a comma, and every container opens with a
    bracket. Commas and brackets inside strings count too, so this may overestimate (never
    underestimate) a document that has them in its text.
    """
    # One pass that drops the three bytes, not three counts: half the time on the event loop.
    return len(raw) - len(raw.translate(None, b",{[")) + 1


class ReceivedBody:
    """A request body that has arrived whole, with its JSON value estimate, not yet parsed."""

    __slots__ = ("raw", "values")

    def __init__(self, raw: bytes, values: int) -> None:
        self.raw = raw
        self.values = values

    async def parse(self, *, max_depth: int) -> Any:
        """The decoded JSON, or an ``InvalidUpload`` subclass saying what is wrong with it."""
        parse = parser_for(self.raw, self.values)
        if self.values <= INLINE_PARSE_VALUES and len(self.raw) <= INLINE_PARSE_BYTES:
            # A small upload parses faster here than a hop to a thread and back would take.
            return parse(self.raw, max_depth=max_depth)
        # One large parse at a time per process: CPU-bound threads fight the event loop for the
        # GIL (each of its socket calls waits a switch interval to get it back), and one fights
        # least. The others wait here, holding no thread, for no longer than what is left of
        # their upload slot's wait budget (then 503 + Retry-After: web.concurrency).
        async with within_wait_budget(_parse_slot()):
            return await run_in_threadpool(parse, self.raw, max_depth=max_depth)


def parser_for(raw: bytes, values: int) -> Callable[..., Any]:
    """``models.parse_json``, or for a body of long values Python's json alone (same answers)."""
    return parse_json_exactly if len(raw) > LONG_VALUE_BYTES * values else parse_json


async def receive_body(
    request: Request,
    *,
    timeout_seconds: float,
    max_values: int | None = None,
    charge: Callable[[int], None] | None = None,
) -> ReceivedBody:
    """The whole body, checked for type, time and value count, not yet parsed.

    ``charge`` is told the body's size once it has arrived, before it is parsed (the per-address
    byte budget), and may refuse it by raising.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"send the upload as application/json (got {media_type or 'no content type'})"
        )
    try:
        # asyncio.timeout, not wait_for: the same deadline without a new task per request.
        async with asyncio.timeout(timeout_seconds):
            raw, values = await _read_counting(request, max_values)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout_seconds:g} s") from None
    if not raw:
        raise InvalidUpload("the body is empty; send a JSON object")
    if charge is not None:
        charge(len(raw))
    return ReceivedBody(raw, values)


async def _read_counting(request: Request, max_values: int | None) -> tuple[bytes, int]:
    """The body and its value estimate, refusing (413, connection closed) as soon as it is over."""
    chunks: list[bytes] = []
    values = 1
    async for chunk in request.stream():
        values += estimate_json_values(chunk) - 1
        check_json_values(values, max_values)
        chunks.append(chunk)
    return b"".join(chunks), values


_PARSE_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _parse_slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slot = _PARSE_SLOTS.get(loop)
    if slot is None:
        slot = _PARSE_SLOTS[loop] = asyncio.Semaphore(1)
    return slot
