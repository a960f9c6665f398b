"""Close connections whose request headers do not arrive within ``HEADER_TIMEOUT_SECONDS``.

uvicorn (0.54) arms its keep-alive timeout only after a response: a connection that never sends
a request line, or sends part of its headers and stops, is kept open for ever. About a thousand
of them exhaust a 1,024 file-handle limit, after which the local store cannot open files. This
protocol is uvicorn's own httptools one with one timer more: armed when the connection opens
and after each response, cancelled once a request's headers are complete. Slow bodies are
another matter: ``BODY_TIMEOUT_SECONDS`` (web.request_body) cuts those off.

``collector serve`` passes it to uvicorn as ``http=header_timeout_protocol(seconds)``.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # A pipelined request already sent its headers: it starts now, with no timer.
        waiting_for_headers = not self.pipeline
        super().on_response_complete()
        if waiting_for_headers and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def header_timeout_protocol(seconds: float) -> functools.partial[HeaderTimeoutProtocol]:
    """What ``uvicorn.run(http=...)`` takes: picklable, so every worker process gets it."""
    return functools.partial(HeaderTimeoutProtocol, header_timeout=seconds)
