"""What the dashboard's routes share (auth, index, templates) and the dependency that guards them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from ..errors import Forbidden, LoginRequired
from ..web.services import Services
from .auth import COOKIE_NAME, AdminAuth, LoginThrottle
from .index import ParticipantIndex

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class AdminContext:
    services: Services
    auth: AdminAuth
    throttle: LoginThrottle
    index: ParticipantIndex
    templates: Jinja2Templates


def build_context(services: Services) -> AdminContext:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    templates.env.autoescape = True  # every template, whatever its file name
    return AdminContext(
        services=services,
        auth=AdminAuth(services.settings.admin_password),
        throttle=LoginThrottle(),
        index=ParticipantIndex(services.store, services.layout),
        templates=templates,
    )


def get_admin(request: Request) -> AdminContext:
    return request.app.state.admin


def require_session(request: Request) -> AdminContext:
    """The dashboard's context, only for a request carrying a valid session cookie."""
    admin = get_admin(request)
    if not admin.auth.valid(request.cookies.get(COOKIE_NAME)):
        raise LoginRequired("log in to the admin dashboard first")
    return admin


def same_origin(request: Request) -> None:
    """Refuse a cross-site form post (belt and braces beside the SameSite=Strict cookie)."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("cross-site request refused")


AdminDep = Annotated[AdminContext, Depends(get_admin)]
SessionDep = Annotated[AdminContext, Depends(require_session)]
