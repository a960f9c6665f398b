"""The one body-size policy: every 413 the collector answers is decided here.

- **Bytes, every route** (``BodyLimitMiddleware``): a body declared larger than
  ``MAX_UPLOAD_BYTES`` is refused before it is read; one that grows past it while streaming is
  cut off there.
- **JSON values, the participant API** (``check_json_values``, called by ``request_body`` as the
  body streams in): over ``MAX_JSON_VALUES`` is refused before the body is parsed.
- **A dashboard form** (``form_too_large``): the erasure form's own, smaller, limit; the other
  forms read only their first bytes.

Each answers 413 in the one error shape (the erasure form: its page, with the same status),
with ``Connection: close`` (docs/api.md §2).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge, log_refusal
from .error_handlers import collector_error_response


def check_json_values(values: int, max_values: int | None) -> None:
    """Refuse a body holding more than ``max_values`` JSON values (an estimate that never undercounts)."""
    if max_values is not None and values > max_values:
        raise PayloadTooLarge(f"the body holds over {max_values} JSON values, the limit (MAX_JSON_VALUES)")


def form_too_large(size: int, max_bytes: int) -> PayloadTooLarge | None:
    """The refusal of a dashboard form over ``max_bytes`` (the page shows it), else None."""
    if size > max_bytes:
        return PayloadTooLarge(f"the form is {size} bytes; the limit is {max_bytes}")
    return None


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
