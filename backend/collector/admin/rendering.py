"""Rendering dashboard pages off the event loop."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from .context import AdminContext


async def render_html(
    request: Request,
    admin: AdminContext,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render a template on the thread pool: a large page must not stall other requests."""
    template = admin.templates.get_template(name)
    html = await run_in_threadpool(template.render, {**context, "request": request})
    return HTMLResponse(html, status_code=status_code, headers=headers)
