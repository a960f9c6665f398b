"""One participant: status, session history, submissions (viewed or downloaded), trial sessions,
everything as a zip.

Read live from the bucket, not from the index, so what is shown here is what is stored now.
Object names in URLs are checked with ``layout.parse``: a URL can only reach this participant's
status.json or one of their submission files.
"""

from __future__ import annotations

import json
import zipfile
from datetime import datetime
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from ..errors import Forbidden, InvalidUpload, NotFound
from ..keys import is_valid_participant_id
from ..participant_keys import HASH_FIELD, release_key
from ..reading.records import SESSION_COMPLETED_NAMES, session_records
from ..reading.scan import decode_object, read_many
from ..storage import ObjectInfo, ObjectNotFound, StorageError
from ..trials import TrialSession, submission_session_ids, summarise_sessions
from .auth import COOKIE_NAME
from .context import AdminContext, SessionDep, same_origin
from .zipstream import stream_zip

router = APIRouter(prefix="/admin/participants", include_in_schema=False)

# Session-history columns shown first; any other field of the records follows.
_SESSION_COLUMNS = ("sessionId", "startTime", "endTime", "duration", *SESSION_COMPLETED_NAMES)


@router.get("/{participant_id}")
async def participant_page(request: Request, participant_id: str, admin: SessionDep) -> HTMLResponse:
    objects = await run_in_threadpool(_objects, admin, participant_id)
    status_key = admin.services.layout.status_key(participant_id)
    stored = await run_in_threadpool(admin.services.store.get_or_none, status_key)
    status, problem = None, None
    if stored is not None:
        try:
            status = decode_object(stored.body)
        except ValueError as exc:
            problem = str(exc)
    records = session_records(status or {})
    extra = sorted({name for record in records for name in record} - set(_SESSION_COLUMNS))
    columns = [c for c in _SESSION_COLUMNS if any(c in r for r in records)] + extra
    submissions = [(info, _name(info)) for info in objects if _kind(admin, info) == "submission"]
    trial_sessions = await run_in_threadpool(_trial_sessions, admin, participant_id, objects)
    unverified = await run_in_threadpool(_unverified, admin, [info.key for info, _ in submissions])
    return admin.templates.TemplateResponse(
        request,
        "participant.html",
        {
            "pid": participant_id,
            "status": status,
            "status_problem": problem,
            "fields": {k: v for k, v in (status or {}).items() if k not in ("sessionHistory", HASH_FIELD)},
            "key_held": bool((status or {}).get(HASH_FIELD)),
            "unverified": unverified,
            "form_token": admin.auth.form_token(request.cookies.get(COOKIE_NAME, "")),
            "released": request.query_params.get("released"),
            "sessions": records,
            "session_columns": columns,
            "submissions": submissions,
            "status_info": next((o for o in objects if _kind(admin, o) == "status"), None),
            "trial_sessions": trial_sessions,
        },
    )


@router.get("/{participant_id}/view/{name:path}")
async def view_file(request: Request, participant_id: str, name: str, admin: SessionDep) -> HTMLResponse:
    key, body = await run_in_threadpool(_read, admin, participant_id, name)
    try:
        text = json.dumps(json.loads(body), ensure_ascii=False, indent=2)
        problem = None
    except ValueError as exc:
        text, problem = body.decode("utf-8", "replace"), f"not valid JSON: {exc}"
    return admin.templates.TemplateResponse(
        request,
        "file.html",
        {"pid": participant_id, "name": name, "key": key, "text": text, "problem": problem},
    )


@router.get("/{participant_id}/files/{name:path}")
async def download_file(participant_id: str, name: str, admin: SessionDep) -> Response:
    _, body = await run_in_threadpool(_read, admin, participant_id, name)
    download = name.rsplit("/", 1)[-1]
    if download == "status.json":
        download = f"{participant_id}_status.json"
    return Response(
        body,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{download}"'},
    )


@router.get("/{participant_id}/download.zip")
async def download_zip(participant_id: str, admin: SessionDep) -> Response:
    """Every object in this participant's folder, under its bucket key, streamed as a zip."""
    objects = await run_in_threadpool(_objects, admin, participant_id)
    if not objects:
        raise NotFound(f"nothing stored for participant {participant_id}")
    store = admin.services.store

    def fill(archive: zipfile.ZipFile) -> None:
        for key, body in read_many(store, [info.key for info in objects], workers=8):
            if isinstance(body, StorageError):
                raise body
            archive.writestr(key, body)

    return StreamingResponse(
        stream_zip(fill),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{participant_id}.zip"'},
    )


@router.post("/{participant_id}/release-key", dependencies=[Depends(same_origin)])
async def release_participant_key(request: Request, participant_id: str, admin: SessionDep) -> Response:
    """Release the participant's key (they changed device): their next keyed upload claims again."""
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
    if not admin.auth.form_token_valid(request.cookies.get(COOKIE_NAME), form.get("token", [""])[0]):
        raise Forbidden("the form has expired; reload the page and try again")
    if not is_valid_participant_id(participant_id):
        raise NotFound("no such participant")
    reason = form.get("reason", [""])[0].strip()
    if not reason:
        raise InvalidUpload("give a reason for releasing the key")
    services = admin.services
    result = await run_in_threadpool(
        release_key, services.store, services.layout, participant_id, reason=reason, by="dashboard"
    )
    services.uploads.forget(participant_id)  # the released hash no longer decides a trial here
    outcome = "1" if result.released else "none"
    return RedirectResponse(f"/admin/participants/{participant_id}?released={outcome}", status_code=303)


def _unverified(admin: AdminContext, keys: list[str]) -> set[str]:
    """Submissions stored with ``keyVerified: false`` (the participant key was missing or wrong)."""
    found = set()
    for key, body in read_many(admin.services.store, keys, workers=8):
        if isinstance(body, StorageError):
            continue
        try:
            if decode_object(body).get("keyVerified") is False:
                found.add(key)
        except ValueError:
            continue
    return found


def _objects(admin: AdminContext, participant_id: str) -> list[ObjectInfo]:
    if not is_valid_participant_id(participant_id):
        raise NotFound("no such participant")
    # The trailing slash of the folder keeps P1 from also listing P10's objects.
    return list(admin.services.store.list(admin.services.layout.participant_dir(participant_id)))


def _read(admin: AdminContext, participant_id: str, name: str) -> tuple[str, bytes]:
    if not is_valid_participant_id(participant_id):
        raise NotFound("no such participant")
    key = admin.services.layout.participant_dir(participant_id) + name
    parsed = admin.services.layout.parse(key)
    if parsed is None or parsed.participant_id != participant_id:
        raise NotFound("no such file")
    try:
        return key, admin.services.store.get(key).body
    except ObjectNotFound:
        raise NotFound("no such file") from None


def _trial_sessions(
    admin: AdminContext, participant_id: str, objects: list[ObjectInfo]
) -> list[TrialSession]:
    """Sessions of per-trial data, from the listing; submissions are read only when there are trials,
    to see which sessions they complete (the rule is in collector.trials.sessions)."""
    layout = admin.services.layout
    trials: list[tuple[str, int, datetime | str | None]] = [
        (parsed.session_id, parsed.trial_index, info.last_modified)
        for info in objects
        if (parsed := layout.parse(info.key))
        and parsed.session_id is not None
        and parsed.trial_index is not None
    ]
    if not trials:
        return []
    completed_by: dict[str, str] = {}
    submission_keys = [info.key for info in objects if _kind(admin, info) == "submission"]
    for key, body in read_many(admin.services.store, submission_keys, workers=8):
        if isinstance(body, StorageError):
            continue  # unreadable here; the submission table above still lists it
        try:
            document = decode_object(body)
        except ValueError:
            continue
        for session_id in submission_session_ids(document):
            completed_by.setdefault(session_id, key)
    return summarise_sessions(participant_id, trials, completed_by)


def _kind(admin: AdminContext, info: ObjectInfo) -> str | None:
    parsed = admin.services.layout.parse(info.key)
    return parsed.kind if parsed else None


def _name(info: ObjectInfo) -> str:
    """The part of the key after the participant's folder (what the file URLs carry)."""
    return "/".join(info.key.split("/")[-2:])
