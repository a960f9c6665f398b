"""One participant: status, session history, submissions (viewed or downloaded), trial sessions,
everything as a zip.

Read live from the bucket, not from the index, so what is shown here is what is stored now.
Object names in URLs are checked with ``layout.parse``: a URL can only reach this participant's
status.json or one of their submission files.
"""

from __future__ import annotations

import json
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from ..errors import InvalidUpload, NotFound
from ..keys import is_valid_participant_id
from ..participant_keys import HASH_FIELD, release_key
from ..reading.records import (
    PRIVATE_FIELDS,
    SESSION_COMPLETED_NAMES,
    session_records,
    shareable_body,
    without_private_fields,
)
from ..reading.scan import decode_object, read_many
from ..storage import ObjectInfo, ObjectNotFound, StorageError, StoredObject
from ..trials import TrialSession, summarise_sessions
from ..trials.sessions import SessionCompletions
from .bounded import (
    MAX_PARSE_BYTES,
    MAX_VIEW_CHARS,
    PAGE_ROWS,
    page_of,
    session_columns,
    session_table,
    status_fields,
)
from .context import AdminContext, SessionDep, checked_form, off_loop, same_origin
from .rendering import render_html
from .zipstream import stream_zip

router = APIRouter(prefix="/admin/participants", include_in_schema=False)

# Session-history columns shown first; any other field of the records follows.
_SESSION_COLUMNS = ("sessionId", "startTime", "endTime", "duration", *SESSION_COMPLETED_NAMES)


class DecodedStatuses:
    """The last few large status documents decoded, by (key, ETag), with what was derived from them.

    Decoding a 4 MiB status holds the interpreter lock for tens of ms, and choosing its session
    columns walks every record; paging through its sessions would pay both on every page. The
    ETag is the content's hash, so a hit is exactly the stored document; small ones are not
    kept (decoding them costs nothing).
    """

    def __init__(self, entries: int = 2, min_bytes: int = 256 * 1024) -> None:
        self.entries = entries
        self.min_bytes = min_bytes
        self._cache: OrderedDict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def decode(self, key: str, stored: StoredObject) -> tuple[dict[str, Any], dict[str, Any]]:
        """The document (``ValueError`` when it is not a JSON object) and a memo for values
        derived from it. Callers must not change the document."""
        if len(stored.body) < self.min_bytes:
            return decode_object(stored.body), {}
        with self._lock:
            if (hit := self._cache.get((key, stored.etag))) is not None:
                self._cache.move_to_end((key, stored.etag))
                return hit
        entry = (decode_object(stored.body), {})
        with self._lock:
            self._cache[(key, stored.etag)] = entry
            while len(self._cache) > self.entries:
                self._cache.popitem(last=False)
        return entry


_STATUSES = DecodedStatuses()


@dataclass(frozen=True)
class SubmissionRow:
    info: ObjectInfo
    name: str  # the part of the key after the participant's folder (what file URLs carry)
    problem: str | None  # why it cannot be read, or None when it is a readable JSON object
    key_verified: bool | None = None  # the stored document's keyVerified, when it says


@router.get("/{participant_id}")
async def participant_page(
    request: Request,
    participant_id: str,
    admin: SessionDep,
    sessions_page: int = Query(1, ge=1, le=1_000_000),
    submissions_page: int = Query(1, ge=1, le=1_000_000),
    trials_page: int = Query(1, ge=1, le=1_000_000),
    released: str | None = None,
) -> HTMLResponse:
    """Read, build and render on the thread pool: a big page never holds up the event loop."""
    pages = (sessions_page, submissions_page, trials_page)
    context = await off_loop(admin, _participant_context, admin, participant_id, pages)
    return await render_html(request, admin, "participant.html", {**context, "released": released})


def _participant_context(
    admin: AdminContext, participant_id: str, pages: tuple[int, int, int]
) -> dict[str, Any]:
    sessions_page, submissions_page, trials_page = pages
    objects = _objects(admin, participant_id)
    status_info = next((o for o in objects if _kind(admin, o) == "status"), None)
    status, problem, memo = None, None, {}
    if status_info is not None and status_info.size > MAX_PARSE_BYTES:
        problem = f"too large to show here ({status_info.size} bytes); download it instead"
    elif status_info is not None:
        stored = admin.services.store.get_or_none(status_info.key)
        if stored is not None:
            try:
                status, memo = _STATUSES.decode(status_info.key, stored)
            except ValueError as exc:
                problem = str(exc)
    records = session_records(status or {})
    if "columns" not in memo:
        memo["columns"] = session_columns(records, _SESSION_COLUMNS)
    fields, more_fields = status_fields(status or {}, hidden=("sessionHistory", *PRIVATE_FIELDS))
    submitted = [info for info in objects if _kind(admin, info) == "submission"]
    page = page_of(len(submitted), submissions_page)
    # Through the index's record of what each submission says: only those it has not read yet
    # (stored since its last build) are read here, however many are stored.
    facts = admin.index.submissions.of(admin.services.store, submitted[page.slice])
    trial_sessions = _trial_sessions(admin, participant_id, objects, submitted)
    trials = page_of(len(trial_sessions), trials_page)
    return {
        "pid": participant_id,
        "status": status,
        "status_problem": problem,
        "fields": fields,
        "more_fields": more_fields,
        "key_held": bool((status or {}).get(HASH_FIELD)),
        "sessions": session_table(records, _SESSION_COLUMNS, sessions_page, memo["columns"]),
        "submissions": [
            SubmissionRow(info, _name(info), facts[info.key].problem, facts[info.key].key_verified)
            for info in submitted[page.slice]
        ],
        "submissions_page": page,
        "trial_sessions": trial_sessions[trials.slice],
        "trials_page": trials,
        "page_rows": PAGE_ROWS,
        "status_info": status_info,
    }


@router.get("/{participant_id}/view/{name:path}")
async def view_file(request: Request, participant_id: str, name: str, admin: SessionDep) -> HTMLResponse:
    context = await off_loop(admin, _view_context, admin, participant_id, name)
    return await render_html(request, admin, "file.html", context)


def _view_context(admin: AdminContext, participant_id: str, name: str) -> dict[str, Any]:
    key = _checked_key(admin, participant_id, name)
    listed = next((info for info in admin.services.store.list(key) if info.key == key), None)
    if listed is not None and listed.size > MAX_PARSE_BYTES:  # offered for download, not read
        return {
            "pid": participant_id,
            "name": name,
            "key": key,
            "text": "",
            "truncated": True,
            "size": listed.size,
            "problem": f"too large to show here ({listed.size} bytes)",
        }
    key, body = _read(admin, participant_id, name)
    try:
        document = json.loads(body)
        if isinstance(document, dict):
            document = without_private_fields(document)
        text = json.dumps(document, ensure_ascii=False, indent=2)
        problem = None
    except (ValueError, RecursionError) as exc:
        text, problem = body.decode("utf-8", "replace"), f"cannot be read as JSON: {exc}"
    truncated = len(text) > MAX_VIEW_CHARS
    return {
        "pid": participant_id,
        "name": name,
        "key": key,
        "text": text[:MAX_VIEW_CHARS] if truncated else text,
        "truncated": truncated,
        "size": len(body),
        "problem": problem,
    }


@router.get("/{participant_id}/files/{name:path}")
async def download_file(participant_id: str, name: str, admin: SessionDep) -> Response:
    _, body = await off_loop(admin, _read, admin, participant_id, name)
    download = name.rsplit("/", 1)[-1]
    if download == "status.json":
        download = f"{participant_id}_status.json"
    return Response(
        shareable_body(body),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{download}"'},
    )


@router.get("/{participant_id}/download.zip")
async def download_zip(participant_id: str, admin: SessionDep) -> Response:
    """Every object in this participant's folder, under its bucket key, streamed as a zip."""
    objects = await off_loop(admin, _objects, admin, participant_id)
    if not objects:
        raise NotFound(f"nothing stored for participant {participant_id}")
    store = admin.services.store

    def fill(archive: zipfile.ZipFile) -> None:
        for key, body in read_many(store, [info.key for info in objects], workers=8):
            if isinstance(body, StorageError):
                raise body
            archive.writestr(key, shareable_body(body))

    return StreamingResponse(
        stream_zip(fill),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{participant_id}.zip"'},
    )


@router.post("/{participant_id}/release-key", dependencies=[Depends(same_origin)])
async def release_participant_key(request: Request, participant_id: str, admin: SessionDep) -> Response:
    """Release the participant's key (they changed device): their next keyed upload claims again."""
    form = await checked_form(request, admin)
    if not is_valid_participant_id(participant_id):
        raise NotFound("no such participant")
    reason = form.get("reason", [""])[0].strip()
    if not reason:
        raise InvalidUpload("give a reason for releasing the key")
    services = admin.services
    result = await off_loop(
        admin,
        partial(release_key, services.store, services.layout, participant_id, reason=reason, by="dashboard"),
    )
    services.uploads.forget(participant_id)  # the released hash no longer decides a trial here
    outcome = "1" if result.released else "none"
    study = f"&study={admin.study.id}" if admin.study is not None else ""
    return RedirectResponse(
        f"/admin/participants/{participant_id}?released={outcome}{study}", status_code=303
    )


def _objects(admin: AdminContext, participant_id: str) -> list[ObjectInfo]:
    if not is_valid_participant_id(participant_id):
        raise NotFound("no such participant")
    # The trailing slash of the folder keeps P1 from also listing P10's objects.
    return list(admin.services.store.list(admin.services.layout.participant_dir(participant_id)))


def _checked_key(admin: AdminContext, participant_id: str, name: str) -> str:
    """The bucket key for a file URL, only if it is this participant's status or submission."""
    if not is_valid_participant_id(participant_id):
        raise NotFound("no such participant")
    key = admin.services.layout.participant_dir(participant_id) + name
    parsed = admin.services.layout.parse(key)
    if parsed is None or parsed.participant_id != participant_id:
        raise NotFound("no such file")
    return key


def _read(admin: AdminContext, participant_id: str, name: str) -> tuple[str, bytes]:
    key = _checked_key(admin, participant_id, name)
    try:
        return key, admin.services.store.get(key).body
    except ObjectNotFound:
        raise NotFound("no such file") from None


def _trial_sessions(
    admin: AdminContext, participant_id: str, objects: list[ObjectInfo], submitted: list[ObjectInfo]
) -> list[TrialSession]:
    """Sessions of per-trial data, from the listing. Only when there are trials do the submissions
    matter, to see which sessions they complete (the rule is in collector.trials.sessions)."""
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
    facts = admin.index.submissions.of(admin.services.store, submitted)
    completions = SessionCompletions()
    for info in submitted:
        found = facts[info.key]
        completions.note(
            info.key, found.session_ids, unverified=found.unverified, keyed=found.key_verified is True
        )
    return summarise_sessions(participant_id, trials, completions.completed_by, completions.unverified)


def _kind(admin: AdminContext, info: ObjectInfo) -> str | None:
    parsed = admin.services.layout.parse(info.key)
    return parsed.kind if parsed else None


def _name(info: ObjectInfo) -> str:
    """The part of the key after the participant's folder (what the file URLs carry)."""
    return "/".join(info.key.split("/")[-2:])
