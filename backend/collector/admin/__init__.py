"""The research team's dashboard under ``/admin``: ``install(app, services)`` adds it to a collector."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import LoginRequired
from ..web.error_handlers import error_response
from ..web.services import Services
from . import completeness_routes, erase_routes, participant_routes, routes, study_routes
from .bounded import cell_text, utc_text
from .context import STATIC_DIR, build_context

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make form posts send Origin: null
    (b"cache-control", b"no-store"),
]


def install(app: FastAPI, services: Services) -> None:
    """Add the dashboard's routes, static files, login redirect and security headers."""
    admin = build_context(services)
    admin.templates.env.filters["cell"] = cell_text
    admin.templates.env.filters["utc"] = utc_text
    admin.templates.env.globals["in_study"] = study_routes.in_study
    admin.templates.env.globals["export_formats"] = completeness_routes.offered_export_formats()
    app.state.admin = admin
    app.include_router(routes.router)
    app.include_router(participant_routes.router)
    app.include_router(erase_routes.router)
    app.include_router(study_routes.router)
    app.include_router(completeness_routes.router)
    app.mount("/admin/static", StaticFiles(directory=STATIC_DIR), name="admin-static")
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_middleware(AdminHeaders)


async def _login_required(request: Request, exc: Exception) -> Response:
    # A person's browser asking for a page is sent to the form; anything else gets the JSON error.
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/admin/login?next={_quoted(target)}", status_code=303)
    return error_response(401, str(exc))


def _quoted(text: str) -> str:
    return quote(text, safe="/")


class AdminHeaders:
    """Security headers on every ``/admin`` response (pure ASGI, so streamed downloads stay streamed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/admin"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
