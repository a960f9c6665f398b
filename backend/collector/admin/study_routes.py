"""The dashboard's study pages: every study at a glance, one study's settings with its close and
archive actions, and a trial session's trials as a table (docs/studies.md).

Every dashboard page takes ``?study=ID`` (``collector.admin.context.study_context``); the links
the pages make keep it (``in_study``), so a study's overview, participants, files and export are
that study's alone.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import pass_context

from ..errors import NotFound
from ..keys import is_valid_participant_id
from ..reading.scan import decode_object, read_many
from ..storage import StorageError
from ..studies.manage import change_study_settings, register_study
from ..studies.registry import STUDY_STATUSES, InvalidStudy, Study, make_study
from .bounded import MAX_COLUMNS, cell_text, page_of, session_columns
from .context import AdminContext, SessionDep, checked_form, off_loop, same_origin, study_context
from .rendering import render_html

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/admin", include_in_schema=False)

WHO = "dashboard"
_MAX_FORM_BYTES = 4096
# Trial fields shown as columns first, when present (what jsPsych records for every trial).
PREFERRED_TRIAL_FIELDS = ("trial_type", "stimulus", "response", "rt", "correct")


@pass_context
def in_study(context: Any, url: str) -> str:
    """``url`` within the study the page shows (``?study=ID`` appended), for links and forms."""
    request = context.get("request")
    study_id = request.query_params.get("study") if request is not None else None
    if not study_id or not is_valid_participant_id(study_id):
        return url
    return f"{url}{'&' if '?' in url else '?'}study={quote(study_id)}"


@router.get("/studies")
async def all_studies(request: Request, admin: SessionDep) -> HTMLResponse:
    return await _studies_page(request, admin)


async def _studies_page(
    request: Request,
    admin: AdminContext,
    *,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The default study and every registered one, with their figures (each study's own index),
    and the form that registers a study."""
    rows = await off_loop(admin, _study_rows, request.app.state.admin)
    context = {"rows": rows, "error": error, "form": form or {}}
    return await render_html(request, admin, "studies.html", context, status_code=status_code)


@router.post("/studies", dependencies=[Depends(same_origin)])
async def register(request: Request, admin: SessionDep) -> Response:
    """Register a study from the dashboard (the same rules and audit as ``collector study add``)."""
    form = await _form(request, admin)
    study_id = form.get("study_id", "").strip()
    services = admin.services
    prefix = services.settings.data_prefix
    try:
        study = make_study(prefix, study_id, status="open", **_settings_of(form))
        await run_in_threadpool(register_study, services.store, prefix, study, who=WHO)
    except InvalidStudy as exc:
        return await _studies_page(request, admin, error=str(exc), form=form, status_code=400)
    except StorageError as exc:
        logger.warning("Dashboard registration of study %r not made: %s", study_id, exc)
        error = f"Not registered: {exc}"
        return await _studies_page(request, admin, error=error, form=form, status_code=503)
    _forget_registry(admin)
    logger.info("Dashboard registered study %s", study_id)
    return RedirectResponse(f"/admin/studies/{quote(study_id)}", status_code=303)


@router.post("/studies/{study_id}/settings", dependencies=[Depends(same_origin)])
async def change_settings(request: Request, study_id: str, admin: SessionDep) -> Response:
    """Change a study's title, origins, cap and milestones (as ``collector study set``)."""
    await off_loop(admin, study_context, request.app.state.admin, study_id)
    form = await _form(request, admin)
    try:
        changes = _settings_of(form)
    except InvalidStudy as exc:
        return await _study_page(request, admin, study_id, error=f"Not changed: {exc}", status_code=400)
    return await _change(request, admin, study_id, changes, form.get("reason", ""))


def _settings_of(form: dict[str, str]) -> dict[str, Any]:
    """A study's settings from a dashboard form (lists: one per line, or comma-separated)."""

    def listed(name: str) -> list[str]:
        text = form.get(name, "").replace(",", "\n")
        return [item.strip() for item in text.splitlines() if item.strip()]

    cap = form.get("max_participants", "").strip()
    if cap and not cap.isdigit():
        raise InvalidStudy("max participants is a whole number from 1 (or empty: no cap)")
    return {
        "title": form.get("title", "").strip(),
        "origins": listed("origins"),
        "max_participants": int(cap) if cap else None,
        "milestones": listed("milestones"),
    }


async def _form(request: Request, admin: AdminContext) -> dict[str, str]:
    """The posted form's fields (first value each), once its form token is checked."""
    form = await checked_form(request, admin, max_bytes=_MAX_FORM_BYTES)
    return {name: values[0] for name, values in form.items()}


def _forget_registry(admin: AdminContext) -> None:
    """This process sees a change made here at once (the others within the registry's interval)."""
    if admin.services.studies is not None:
        admin.services.studies.registry.forget()


def _study_rows(base: AdminContext) -> list[dict[str, Any]]:
    studies = base.services.studies
    registered = list(studies.registry.current().studies.values()) if studies is not None else []
    # ``base``: the default study's context (the app's own), which every study's is built from.
    contexts: list[tuple[Study | None, AdminContext]] = [(None, base)]
    contexts += [(study, study_context(base, study.id)) for study in registered]
    rows = []
    for study, context in contexts:
        snapshot = context.index.get()
        people = [p for p in snapshot.participants if not p.erased]
        rows.append(
            {
                "study": study,
                "prefix": context.services.layout.prefix,
                "participants": len(people),
                "submissions": sum(p.submission_count for p in people),
                "trials": sum(p.trial_count for p in people),
                "trial_only": sum(1 for p in people if p.trial_count and not p.has_status),
            }
        )
    return rows


@router.get("/studies/{study_id}")
async def study_page(request: Request, study_id: str, admin: SessionDep) -> HTMLResponse:
    return await _study_page(request, admin, study_id)


async def _study_page(
    request: Request, admin: AdminContext, study_id: str, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    context = await off_loop(admin, study_context, request.app.state.admin, study_id)
    assert context.study is not None
    return await render_html(
        request,
        admin,
        "study.html",
        {"study": context.study, "statuses": STUDY_STATUSES, "error": error},
        status_code=status_code,
    )


@router.post("/studies/{study_id}/status", dependencies=[Depends(same_origin)])
async def change_status(request: Request, study_id: str, admin: SessionDep) -> Response:
    """Open, close or archive a study (a form with the session's form token)."""
    await off_loop(admin, study_context, request.app.state.admin, study_id)
    form = await _form(request, admin)
    status = form.get("status", "")
    if status not in STUDY_STATUSES:
        error = "Choose open, closed or archived."
        return await _study_page(request, admin, study_id, error=error, status_code=400)
    return await _change(request, admin, study_id, {"status": status}, form.get("reason", ""))


async def _change(
    request: Request, admin: AdminContext, study_id: str, changes: dict[str, Any], reason: str
) -> Response:
    services = admin.services
    try:
        await run_in_threadpool(
            change_study_settings,
            services.store,
            services.settings.data_prefix,
            study_id,
            changes,
            who=WHO,
            reason=reason.strip()[:500],
        )
    except InvalidStudy as exc:
        return await _study_page(request, admin, study_id, error=f"Not changed: {exc}", status_code=400)
    except StorageError as exc:
        logger.warning("Dashboard change of study %s not made: %s", study_id, exc)
        return await _study_page(request, admin, study_id, error=f"Not changed: {exc}", status_code=503)
    _forget_registry(admin)
    logger.info("Dashboard changed study %s: %s", study_id, sorted(changes))
    return RedirectResponse(f"/admin/studies/{quote(study_id)}", status_code=303)


@router.get("/participants/{participant_id}/trials/{session_id}")
async def trial_session(
    request: Request,
    participant_id: str,
    session_id: str,
    admin: SessionDep,
    page: int = Query(1, ge=1),
) -> HTMLResponse:
    """One trial session's trials as a table: index, received time, verified, the trial's fields."""
    if not is_valid_participant_id(participant_id) or not is_valid_participant_id(session_id):
        raise NotFound("no such trial session")
    table = await off_loop(admin, _trial_table, admin, participant_id, session_id, page)
    return await render_html(
        request, admin, "trial_session.html", {"pid": participant_id, "session_id": session_id, **table}
    )


def _trial_table(admin: AdminContext, participant_id: str, session_id: str, requested: int) -> dict[str, Any]:
    layout = admin.services.layout
    infos = [
        info
        for info in admin.services.store.list(layout.trials_dir(participant_id, session_id))
        if (parsed := layout.parse(info.key)) is not None and parsed.kind == "trial"
    ]
    if not infos:
        raise NotFound("no such trial session")
    page = page_of(len(infos), requested)
    shown = infos[page.slice]
    documents: list[tuple[int, dict[str, Any] | None]] = []
    for key, body in read_many(admin.services.store, [info.key for info in shown]):
        parsed = layout.parse(key)
        index = parsed.trial_index if parsed is not None and parsed.trial_index is not None else -1
        document = None
        if not isinstance(body, StorageError):
            try:
                document = decode_object(body)
            except ValueError:
                document = None
        documents.append((index, document))
    trial_data = [
        d.get("trialData") if d is not None and isinstance(d.get("trialData"), dict) else {}
        for _, d in documents
    ]
    columns, folded = session_columns(trial_data, PREFERRED_TRIAL_FIELDS)
    shown_names = set(columns)
    rows = []
    for (index, document), data in zip(documents, trial_data, strict=True):
        cells = [cell_text(data.get(name)) for name in columns]
        if folded:
            rest = {name: value for name, value in data.items() if name not in shown_names}
            cells.append(cell_text(rest) if rest else "")
        rows.append(
            {
                "index": index,
                "received": cell_text(document.get("serverReceivedAt")) if document else "",
                "verified": "unreadable"
                if document is None
                else ("no" if document.get("keyVerified") is False else "yes"),
                "cells": cells,
            }
        )
    return {
        "columns": [*columns, "other fields (JSON)"] if folded else columns,
        "rows": rows,
        "page": page,
        "max_columns": MAX_COLUMNS,
    }
