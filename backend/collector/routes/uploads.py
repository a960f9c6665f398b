"""Participant-facing API: single upload, batch upload, and status restore (docs/api.md)."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..errors import CollectorError, InvalidUpload, Refusal, StorageUnavailable, log_refusal
from ..keys import PARTICIPANT_ID_PATTERN, is_valid_participant_id
from ..models import (
    BatchRequest,
    ErrorResponse,
    RestoreRequest,
    Upload,
    UploadRequest,
    UploadResponse,
    parse_batch,
    parse_upload,
)
from ..participant_keys import KEY_FIELD
from ..pipeline.admission import Admission
from ..pipeline.answer import Answer, outcome
from ..trials import TrialUpload, is_trial, parse_trial
from ..web.error_handlers import refusal_body, refuse
from ..web.rate_limit import client_address, too_many_uploads
from ..web.request_body import ReceivedBody, receive_body
from ..web.responses import CompactJSONResponse
from ..web.services import Services
from .study_uploads import route_to_study

logger = logging.getLogger(__name__)
router = APIRouter(tags=["uploads"])


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Malformed upload; retrying will not help.",
        403: "Status upload with a missing or wrong participant key; status not changed.",
        408: "The body arrived too slowly.",
        413: "Body over MAX_UPLOAD_BYTES.",
        415: "Not sent as JSON.",
        422: "Valid JSON that breaks the contract.",
        410: "The participant was erased at the research team's request; nothing stored.",
        429: "Rate-limited; retry after Retry-After.",
        503: "Storage unavailable; nothing stored; retry after Retry-After.",
    }.items()
}


# A batch answers 403 and 410 per item (in its result), never for the request itself.
_BATCH_ERRORS = {code: doc for code, doc in _ERRORS.items() if code not in (403, 410)}


def _json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The request body's OpenAPI entry: the model's schema, self-contained.

    The routes read their bodies by hand (to store them exactly as sent), so FastAPI does not
    document them; nested models stay inline, as ``$defs`` of a hand-made entry would otherwise
    be referenced but never registered among the components. ``text/plain`` carries the same JSON
    (what a page-hide beacon sends).
    """
    schema = _inline_refs(model.model_json_schema())
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def _admitted(request: Request) -> tuple[Services, str]:
    """The app's services and the client's address, once the address's rate-limit token is taken.

    Neither is a FastAPI dependency (``ServicesDep``, ``Depends(limits.uploads)``) on these
    routes, the hot path: solving them cost about a sixth of an upload's request CPU
    (bench/bench_request_cpu.py --profile). Taken first, as the dependencies were, so a flooding
    address is refused before its body is read; the request bodies are documented by hand
    (``_json_body_doc``), so the OpenAPI description is the same.
    """
    services: Services = request.app.state.services  # what ``web.services.get_services`` returns
    client = client_address(request)
    if services.limits is not None:
        services.limits.uploads.admit(client)
    return services, client


async def _receive(request: Request, services: Services, client: str) -> ReceivedBody:
    """The whole body, received outside the upload slot (bounded per address: web.concurrency)."""
    s = services.settings
    limits = services.limits
    with services.bodies.receiving(client) if services.bodies is not None else nullcontext():
        return await receive_body(
            request,
            timeout_seconds=s.body_timeout_seconds,
            max_values=s.max_json_values,
            charge=(lambda size: limits.charge_body(client, size)) if limits is not None else None,
        )


def _slot(services: Services) -> AbstractAsyncContextManager[None]:
    """One of the process's upload slots, for parsing and storing a body that has arrived."""
    return services.slots.slot() if services.slots is not None else nullcontext()


async def _store(services: Services, value: Any, client: str, origin: str | None) -> Answer | Refusal:
    """Route, parse and store one upload (the pipeline, ``collector.pipeline``): its answer or refusal."""
    received_at = datetime.now(UTC)
    upload: Upload | TrialUpload
    try:
        study = await route_to_study(services, value, origin)  # its studyId: unknown, archived, origin
        services = study.services
        if is_trial(value):  # uploadType "trial": stored once per (session, index)
            upload = parse_trial(value)
        else:
            upload = parse_upload(value, received_at=received_at, clock_skew=services.uploads.clock_skew)
    except CollectorError as refused:  # before its type is known: counted as "unknown"
        refusal = Refusal.of(refused)
        services.metrics.count_upload("unknown", outcome(refusal))
        return refusal
    admission = Admission(services.limits, client, study)
    result = await services.uploads.store_upload(upload, received_at=received_at, admission=admission)
    kind = "trial" if isinstance(upload, TrialUpload) else upload.upload_type
    services.metrics.count_upload(kind, outcome(result))
    return result


@router.post(
    "/api/upload-user-data",
    response_model=UploadResponse,
    responses=_ERRORS,
    openapi_extra=_json_body_doc(UploadRequest),
    summary="Store one participant upload",
)
async def upload_user_data(request: Request) -> JSONResponse:
    """Store a status, submission or trial upload; 200 only once it is durably stored."""
    services, client = _admitted(request)
    try:
        body = await _receive(request, services, client)
        async with _slot(services):
            value = await body.parse(max_depth=services.settings.max_json_depth)
            origin = request.headers.get("origin")
            result = await _store(services, value, client, origin)
    except InvalidUpload:
        services.metrics.count_upload("unknown", "refused")
        raise
    if isinstance(result, Refusal):
        return refuse(request, result)
    return CompactJSONResponse(result.body())


@router.post(
    "/api/upload-user-data/batch",
    responses=_BATCH_ERRORS,
    openapi_extra=_json_body_doc(BatchRequest),
    summary="Store several queued uploads, each answered on its own",
)
async def upload_batch(request: Request) -> JSONResponse:
    """Answers ``{"status": "success", "results": [...]}``: one result per upload, in order.

    Each result carries ``httpStatus`` (what the single endpoint would have answered), the
    item's ``uploadId``, and either the success fields or ``error``; the client drops exactly
    the items whose ``httpStatus`` is 200 (stored) or a 4xx other than 429 (never storable).

    Every item costs one rate-limit token (the request's own token pays for the first): items
    beyond the address's budget are answered 429 on their own, with ``retryAfter``, and the
    client keeps them for later.
    """
    services, client = _admitted(request)
    body = await _receive(request, services, client)
    async with _slot(services):
        return await _store_batch(
            request, services, client, await body.parse(max_depth=services.settings.max_json_depth)
        )


async def _store_batch(request: Request, services: Services, client: str, value: Any) -> JSONResponse:
    items = parse_batch(value, max_items=services.settings.max_batch_items)
    origin = request.headers.get("origin")
    results: list[dict[str, Any]] = []
    storage_down: Refusal | None = None
    retry_after: int | None = None
    for index, item in enumerate(items):
        upload_id = item.get("uploadId") if isinstance(item, dict) else None
        result = _charge(services, client, index)
        if result is not None:
            retry_after = max(retry_after or 0, result.retry_after or 1)
        elif storage_down is not None:
            # Storage already failed past its deadline for this batch: trying each remaining
            # item would make the answer take a deadline per item, far past the client's timeout.
            result = Refusal(storage_down.status, storage_down.message)
        if result is None:
            result = await _store(services, item, client, origin)
            if isinstance(result, Refusal):
                log_refusal(request.method, f"{request.url.path} item {index}", result.status, result.message)
                if result.status == StorageUnavailable.status:
                    storage_down = result
        if isinstance(result, Refusal):
            results.append({"index": index, "uploadId": upload_id, **_item_refusal(result)})
        else:
            results.append({"index": index, "uploadId": upload_id, **result.body(), "httpStatus": 200})
    if storage_down is not None:
        retry_after = max(retry_after or 0, storage_down.retry_after or 1)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return CompactJSONResponse({"status": "success", "results": results}, headers=headers)


def _item_refusal(refusal: Refusal) -> dict[str, Any]:
    """A batch item's refusal: the single endpoint's body, its status, and Retry-After as a field."""
    answer = {**refusal_body(refusal), "httpStatus": refusal.status}
    if refusal.retry_after is not None:
        answer["retryAfter"] = refusal.retry_after
    return answer


def _charge(services: Services, client: str, index: int) -> Refusal | None:
    """Take the item's rate-limit token (the first item's was taken with the request)."""
    if index == 0 or services.limits is None:
        return None
    wait = services.limits.uploads.wait_seconds(client)
    return Refusal.of(too_many_uploads(wait)) if wait > 0 else None


@router.post(
    "/api/user-status",
    responses={
        **{code: doc for code, doc in _ERRORS.items() if code in (400, 408, 413, 415, 429, 503)},
        404: {
            "model": ErrorResponse,
            "description": "Unknown, erased, or a missing or wrong key: one answer.",
        },
    },
    openapi_extra=_json_body_doc(RestoreRequest),
    summary="Read back one participant's status with its key (no submissions, no survey answers)",
)
async def restore_user_status(request: Request) -> JSONResponse:
    """The stored status fields, so the study app can rebuild progress flags and counters.

    POST, so the key travels in the body, never in a URL. An unknown participant, an erased one,
    and a missing or wrong key all get the same 404, byte for byte.
    """
    services, client = _admitted(request)
    body = await _receive(request, services, client)
    async with _slot(services):
        value = await body.parse(max_depth=services.settings.max_json_depth)
        if not isinstance(value, dict):
            raise InvalidUpload("the body must be a JSON object")
        participant_id = value.get("participantId")
        if not is_valid_participant_id(participant_id):
            raise InvalidUpload(f"participantId must match {PARTICIPANT_ID_PATTERN}")
        services = (await route_to_study(services, value, request.headers.get("origin"))).services
        key = value.get(KEY_FIELD)
        status = await services.uploads.read_status(participant_id, key if isinstance(key, str) else None)
    # Starlette's encoder, not CompactJSONResponse: the fields were read from the bucket by
    # Python's json, which accepts NaN, and a NaN is refused (500) as it always was (web.responses).
    return JSONResponse({"status": "success", "participantId": participant_id, "userStatus": status})
