"""Rendering dashboard pages off the event loop."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from .auth import COOKIE_NAME
from .context import AdminContext


async def render_html(
    request: Request,
    admin: AdminContext,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render a template on the thread pool: a large page must not stall other requests.

    Every page gets ``form_token``, the token its forms that change anything carry
    (``context.checked_form``); computing it may re-read the session state, so off the loop too.
    """
    template = admin.templates.get_template(name)
    cookie = request.cookies.get(COOKIE_NAME)

    def render() -> str:
        token = admin.auth.form_token(cookie) if cookie else ""
        return template.render({**context, "request": request, "form_token": token})

    html = await run_in_threadpool(render)
    return HTMLResponse(html, status_code=status_code, headers=headers)
