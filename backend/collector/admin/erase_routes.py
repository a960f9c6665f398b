"""Erasing a participant from the dashboard: a confirmation page, then a POST that erases.

The POST is guarded like every dashboard form: a valid session cookie (SameSite=Strict), the
session's form token, and an Origin, when sent, naming this dashboard. The confirmation step
asks for the reason and for the participant ID typed again, so neither a stray click nor a
forged form erases anyone.
The audit record names ``dashboard`` as who asked.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from ..erasure import ErasureRefused, erase_participant, preview_erasure
from ..errors import NotFound
from ..keys import is_valid_participant_id
from ..storage import StorageError
from ..web.body_limit import form_too_large
from .context import AdminContext, SessionDep, checked_form, same_origin
from .rendering import render_html

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/admin/participants", include_in_schema=False)

WHO = "dashboard"
_MAX_FORM_BYTES = 8192


@router.get("/{participant_id}/erase")
async def erase_form(request: Request, participant_id: str, admin: SessionDep) -> HTMLResponse:
    return await _confirm_page(request, admin, participant_id, error=None, reason="")


@router.post("/{participant_id}/erase", dependencies=[Depends(same_origin)])
async def erase(request: Request, participant_id: str, admin: SessionDep) -> HTMLResponse:
    if not is_valid_participant_id(participant_id):
        raise NotFound("no such participant")
    form = await checked_form(request, admin, max_bytes=_MAX_FORM_BYTES)  # 403 unless this session's
    too_large = form_too_large(len(await request.body()), _MAX_FORM_BYTES)
    if too_large is not None:
        error = "The form is too large."
        return await _confirm_page(request, admin, participant_id, error=error, status=too_large.status)
    reason = form.get("reason", [""])[0].strip()
    typed = form.get("confirm", [""])[0].strip()
    if typed != participant_id:
        error = "Type the participant ID exactly to confirm."
        return await _confirm_page(request, admin, participant_id, error=error, reason=reason, status=400)
    if not reason:
        error = "Give the reason (it goes into the audit record)."
        return await _confirm_page(request, admin, participant_id, error=error, reason=reason, status=400)
    services = admin.services
    try:
        result = await run_in_threadpool(
            erase_participant,
            services.store,
            services.layout,
            participant_id,
            who=WHO,
            reason=reason,
            settle_seconds=services.settings.erasure_settle_seconds,
        )
    except ErasureRefused as exc:
        return await _confirm_page(request, admin, participant_id, error=str(exc), reason=reason, status=400)
    except StorageError as exc:
        logger.warning("Dashboard erasure of %s not finished: %s", participant_id, exc)
        error = f"The erasure is not finished ({exc}). Submit again to finish it."
        return await _confirm_page(request, admin, participant_id, error=error, reason=reason, status=503)
    services.uploads.forget(participant_id)  # its cached status no longer decides a trial here
    logger.info("Dashboard erased participant %s: %d object(s)", participant_id, len(result.objects))
    await run_in_threadpool(admin.index.refresh, full=False)
    return await render_html(
        request, admin, "erase.html", {"pid": participant_id, "result": result, "preview": None}
    )


async def _confirm_page(
    request: Request,
    admin: AdminContext,
    participant_id: str,
    *,
    error: str | None,
    reason: str,
    status: int = 200,
) -> HTMLResponse:
    if not is_valid_participant_id(participant_id):
        raise NotFound("no such participant")
    services = admin.services
    preview = await run_in_threadpool(preview_erasure, services.store, services.layout, participant_id)
    return await render_html(
        request,
        admin,
        "erase.html",
        {"pid": participant_id, "preview": preview, "result": None, "error": error, "reason": reason},
        status_code=status,
    )
