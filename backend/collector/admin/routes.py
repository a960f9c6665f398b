"""Dashboard pages: login/logout, overview, the participants table, and the full export download."""

from __future__ import annotations

import importlib.util
import logging
import math
import zipfile
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from ..errors import NotImplementedOnServer
from ..export import ExportFailed, ZipSink, export_bucket
from .auth import COOKIE_NAME, SESSION_SECONDS
from .context import AdminDep, SessionDep, checked_form, cookie_secure, off_loop, same_origin
from .index import ParticipantSummary
from .overview import build_overview
from .rendering import render_html
from .zipstream import stream_zip

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/admin", include_in_schema=False)

PAGE_SIZE = 50
_MAX_FORM_BYTES = 4096
SORT_KEYS = {
    "id": lambda p: p.participant_id,
    "started": lambda p: p.sessions_started,
    "completed": lambda p: p.sessions_completed,
    "hours": lambda p: p.total_hours,
    "volcano": lambda p: p.volcano,
    "mode": lambda p: p.mode,
    "last": lambda p: p.last_upload,
    "submissions": lambda p: p.submission_count,
}


@router.get("/login")
async def login_form(request: Request, admin: AdminDep, next: str = "/admin") -> HTMLResponse:
    return admin.templates.TemplateResponse(
        request, "login.html", {"next": _safe_next(next), "error": None, "enabled": admin.auth.enabled}
    )


@router.post("/login", dependencies=[Depends(same_origin)])
async def login(request: Request, admin: AdminDep) -> Response:
    body = await request.body()
    form = parse_qs(body[:_MAX_FORM_BYTES].decode("utf-8", "replace"))
    password = form.get("password", [""])[0]
    target = _safe_next(form.get("next", ["/admin"])[0])
    client = request.client.host if request.client else "unknown"
    wait = admin.throttle.retry_after(client)
    if wait is not None:
        logger.warning("⚠️ Admin login from %r refused: too many failed attempts", client)
        return _login_page(
            request,
            admin,
            target,
            f"Too many failed attempts; try again in {wait} s.",
            429,
            {"Retry-After": str(wait)},
        )
    if not await off_loop(admin, admin.auth.password_matches, password):
        admin.throttle.failed(client)
        logger.warning("⚠️ Admin login from %r failed: wrong password", client)
        return _login_page(request, admin, target, "Wrong password.", 401)
    admin.throttle.succeeded(client)
    logger.info("Admin login from %r", client)
    token = await off_loop(admin, admin.auth.issue)  # may create the shared secret in the bucket
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=SESSION_SECONDS,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request, admin),
    )
    return response


@router.post("/logout", dependencies=[Depends(same_origin)])
async def logout(request: Request, admin: AdminDep) -> Response:
    """End the session on every worker and instance (recorded in the bucket), then clear the cookie."""
    await checked_form(request, admin)
    await off_loop(admin, admin.auth.revoke, request.cookies.get(COOKIE_NAME))
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(
        COOKIE_NAME, path="/admin", httponly=True, samesite="strict", secure=cookie_secure(request, admin)
    )
    return response


@router.get("")
async def overview(request: Request, admin: SessionDep) -> HTMLResponse:
    snapshot = await off_loop(admin, admin.index.get)
    milestones = admin.study.milestones if admin.study is not None else ()
    summary = await run_in_threadpool(build_overview, snapshot, None, milestones)
    return await render_html(
        request, admin, "overview.html", {"o": summary, "built": _built(snapshot.built_wall)}
    )


@router.get("/participants")
async def participants(
    request: Request,
    admin: SessionDep,
    q: str = Query("", max_length=64),
    sort: str = "id",
    order: Literal["asc", "desc"] = "asc",
    page: int = Query(1, ge=1),
) -> HTMLResponse:
    sort = sort if sort in SORT_KEYS else "id"
    snapshot = await off_loop(admin, admin.index.get)
    needle = q.strip().lower()
    rows = [p for p in snapshot.participants if needle in p.participant_id.lower()]
    rows = _sorted(rows, sort, descending=order == "desc")
    pages = max(1, math.ceil(len(rows) / PAGE_SIZE))
    page = min(page, pages)
    return await render_html(
        request,
        admin,
        "participants.html",
        {
            "rows": rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
            "total": len(rows),
            "all": len(snapshot.participants),
            "q": q,
            "sort": sort,
            "order": order,
            "page": page,
            "pages": pages,
            "built": _built(snapshot.built_wall),
        },
    )


@router.post("/refresh", dependencies=[Depends(same_origin)])
async def refresh(request: Request, admin: SessionDep) -> Response:
    await checked_form(request, admin)
    await off_loop(admin, admin.index.refresh)
    study = f"?study={admin.study.id}" if admin.study is not None else ""
    return RedirectResponse(f"/admin/participants{study}", status_code=303)


@router.get("/export.zip")
async def export_zip(admin: SessionDep, format: Literal["csv", "jsonl", "parquet"] = "csv") -> Response:
    """The export tool's tables and README as one zip, streamed while the bucket is read."""
    services = admin.services
    if format == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise NotImplementedOnServer("Parquet export needs pyarrow on the server; choose CSV or JSON Lines")

    def fill(archive: zipfile.ZipFile) -> None:
        try:
            report = export_bucket(services.store, services.layout, ZipSink(archive, "export/"), fmt=format)
        except ExportFailed:
            logger.exception("Dashboard export failed")
            raise
        logger.info("Dashboard export: %s, %d skipped", report.rows, len(report.problems))

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        stream_zip(fill),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="participant-export-{stamp}.zip"'},
    )


def _sorted(rows: list[ParticipantSummary], sort: str, *, descending: bool) -> list[ParticipantSummary]:
    key = SORT_KEYS[sort]
    present = [p for p in rows if key(p) is not None]
    missing = [p for p in rows if key(p) is None]  # empty values last, whichever the direction
    present.sort(key=lambda p: (key(p), p.participant_id), reverse=descending)
    return present + missing


def _safe_next(target: str) -> str:
    """Only a path inside the dashboard: no open redirect to another site."""
    if target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return "/admin"


def _login_page(
    request: Request,
    admin: AdminDep,
    target: str,
    error: str,
    status: int,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    return admin.templates.TemplateResponse(
        request,
        "login.html",
        {"next": target, "error": error, "enabled": admin.auth.enabled},
        status_code=status,
        headers=headers,
    )


def _built(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
