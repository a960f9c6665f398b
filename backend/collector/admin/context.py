"""What the dashboard's routes share (auth, index, templates) and the dependency that guards them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.templating import Jinja2Templates

from ..errors import Forbidden, LoginRequired, NotFound, storage_unavailable
from ..keys import is_valid_participant_id
from ..studies.registry import Study
from ..web.services import Services
from .auth import COOKIE_NAME, AdminAuth, LoginThrottle, SessionStateStore
from .index import ParticipantIndex
from .password import StoredPassword

T = TypeVar("T")

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class AdminContext:
    services: Services
    auth: AdminAuth
    throttle: LoginThrottle
    index: ParticipantIndex
    templates: Jinja2Templates
    # The registered study these pages show (``?study=ID``); None: the default study.
    study: Study | None = None
    # The per-study contexts built so far (by study and milestones), shared by all of them.
    by_study: dict[tuple[str, tuple[str, ...]], AdminContext] = field(default_factory=dict, compare=False)


def build_context(services: Services) -> AdminContext:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    templates.env.autoescape = True  # every template, whatever its file name
    settings = services.settings
    state = SessionStateStore(
        services.store,
        services.layout.admin_session_key,
        configured_secret=settings.admin_session_secret,
        check_seconds=settings.admin_session_check_seconds,
    )
    return AdminContext(
        services=services,
        auth=AdminAuth(
            settings.admin_password,
            state,
            StoredPassword(
                services.store,
                services.layout.admin_password_key,
                check_seconds=settings.admin_session_check_seconds,
            ),
        ),
        throttle=LoginThrottle(),
        index=ParticipantIndex(services.store, services.layout),
        templates=templates,
    )


def get_admin(request: Request) -> AdminContext:
    return request.app.state.admin


def require_session(request: Request) -> AdminContext:
    """The dashboard's context, only for a request carrying a valid session cookie.

    A plain ``def``: FastAPI runs it on the thread pool, where reading the shared session
    state from the bucket (at most every few seconds) does not block the event loop.
    """
    admin = get_admin(request)
    with storage_unavailable(
        "cannot check the session: storage unavailable",
        retry_after=admin.services.settings.retry_after_seconds,
        log_context="admin session state",
    ):
        valid = admin.auth.valid(request.cookies.get(COOKIE_NAME))
    if not valid:
        raise LoginRequired("log in to the admin dashboard first")
    return study_context(admin, request.query_params.get("study"))


def study_context(admin: AdminContext, study_id: str | None) -> AdminContext:
    """The dashboard's context for one registered study (``?study=ID``), or the default study's.

    Its services, layout and index are the study's; the session, templates and throttle are
    shared. Blocking (may read the study registry): called on the thread pool.
    """
    studies = admin.services.studies
    if not study_id or studies is None:
        return admin
    if not is_valid_participant_id(study_id):
        raise NotFound("no such study")
    with storage_unavailable(
        "cannot read the study registry: storage unavailable",
        retry_after=admin.services.settings.retry_after_seconds,
        log_context="admin study registry",
    ):
        study = studies.registry.current().get(study_id)
    if study is None:
        raise NotFound(f"no study {study_id} is registered")
    cache_key = (study.id, study.milestones)
    built = admin.by_study.get(cache_key)
    if built is None:
        services, _ = studies.services_for(admin.services, study)
        index = ParticipantIndex(services.store, services.layout, milestones=study.milestones)
        built = admin.by_study[cache_key] = replace(admin, services=services, index=index, study=study)
    # The study's settings as read now (status, title), with the index built for its milestones.
    return replace(built, study=study)


async def off_loop(admin: AdminContext, function: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (bucket reads, big renders) on the thread pool; storage trouble is a 503."""
    with storage_unavailable(
        "storage unavailable; try again shortly",
        retry_after=admin.services.settings.retry_after_seconds,
        log_context="admin dashboard",
    ):
        return await run_in_threadpool(function, *args)


def cookie_secure(request: Request, admin: AdminContext) -> bool:
    """Secure unless the collector serves plain http on a loopback address (local use)."""
    mode = admin.services.settings.admin_cookie_secure
    if mode != "auto":
        return mode == "always"
    host = admin.services.settings.host
    loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
    return request.url.scheme == "https" or not loopback


def same_origin(request: Request) -> None:
    """Refuse a cross-site form post (belt and braces beside the SameSite=Strict cookie and the
    form tokens).

    The dashboard's own origin is the request's ``Host``, or what a proxy in front says it was:
    ``X-Forwarded-Host`` (nginx's default rewrites ``Host`` to the upstream's address), or
    ``PUBLIC_URL``. A browser cannot add ``X-Forwarded-Host`` to a cross-site form post (a form
    sets no headers, and a script would need a CORS preflight the dashboard never grants), so
    honouring it lets no forged form through.
    """
    origin = request.headers.get("origin")
    if not origin:
        return
    parts = urlsplit(origin)
    own_hosts = {request.headers.get("host", "")}
    forwarded = request.headers.get("x-forwarded-host")
    if forwarded:
        own_hosts.add(forwarded.split(",", 1)[0].strip())
    own_origin = get_admin(request).services.settings.public_origin
    if parts.netloc not in own_hosts and f"{parts.scheme}://{parts.netloc}".lower() != own_origin:
        raise Forbidden("cross-site request refused")


async def checked_form(
    request: Request, admin: AdminContext, *, max_bytes: int = 4096
) -> dict[str, list[str]]:
    """The posted form (its first ``max_bytes``), once its ``token`` field is this session's form
    token (``AdminAuth.form_token``, put in every page's forms): 403 otherwise, before anything
    changes. A forged form from another site cannot know it."""
    body = await request.body()
    form = parse_qs(body[:max_bytes].decode("utf-8", "replace"))
    token = form.get("token", [""])[0]
    # Off the loop: checking the token may re-read the shared session state from the bucket.
    if not await off_loop(admin, admin.auth.form_token_valid, request.cookies.get(COOKIE_NAME), token):
        raise Forbidden("the form has expired; reload the page and try again")
    return form


AdminDep = Annotated[AdminContext, Depends(get_admin)]
SessionDep = Annotated[AdminContext, Depends(require_session)]
