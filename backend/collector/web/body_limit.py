"""The one cap on every request body, whatever the route (ASGI middleware).

This is the only size check: ``request_body`` (the upload routes) and the dashboard's forms
read bodies that have already passed through here. A body declared larger than
``MAX_UPLOAD_BYTES`` is refused before it is read; one that grows past it while streaming is
cut off there. Both answer 413 in the one error shape, with ``Connection: close``
(docs/api.md §2).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge, log_refusal
from .error_handlers import collector_error_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            # Outside the app's exception handlers, so answered here, in the same shape.
            refusal = PayloadTooLarge(f"the body is {int(declared)} bytes; the limit is {self.max_bytes}")
            log_refusal(scope["method"], scope["path"], refusal.status, refusal.message)
            await collector_error_response(refusal)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(f"the body is over the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)
