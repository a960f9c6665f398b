"""Serves the browser module, so a study on any origin can ``import`` it from the collector."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..errors import NotFound
from ..models import ErrorResponse

router = APIRouter(tags=["browser module"])

_HERE = Path(__file__).resolve().parent
# A wheel carries the modules in collector/static/ (pyproject force-include); an editable
# install runs from the repository, where they live in js/.


class JavaScriptResponse(Response):
    """Declares ``application/javascript`` in the OpenAPI description, as the route answers."""

    media_type = "application/javascript"


def module_path(name: str = "data-uploader.js") -> Path | None:
    """Where the browser module ``name`` is: the wheel's copy first, else the repository's."""
    candidates = (_HERE.parent / "static" / name, _HERE.parents[2] / "js" / name)
    return next((path for path in candidates if path.is_file()), None)


_MODULE_RESPONSES: dict[int | str, dict] = {
    200: {"content": {"application/javascript": {"schema": {"type": "string"}}}},
    304: {"description": "Not modified: the If-None-Match ETag is current."},
    404: {
        "description": "The module is not installed with this collector.",
        "content": {"application/json": {"schema": ErrorResponse.model_json_schema()}},
    },
}


@router.get(
    "/js/data-uploader.js",
    summary="The browser uploader module (docs/browser-module.md)",
    response_class=JavaScriptResponse,
    responses=_MODULE_RESPONSES,
)
async def data_uploader_module(request: Request) -> Response:
    """The ES module, CORS-open whatever ``ALLOWED_ORIGINS`` says: it is public code, not data."""
    return _serve(request, "data-uploader.js")


@router.get(
    "/js/jspsych-collector.js",
    summary="The jsPsych hooks module (imports ./data-uploader.js; docs/jspsych.md)",
    response_class=JavaScriptResponse,
    responses=_MODULE_RESPONSES,
)
async def jspsych_collector_module(request: Request) -> Response:
    """The jsPsych integration, served like the uploader it imports (same origin, same path)."""
    return _serve(request, "jspsych-collector.js")


def _serve(request: Request, name: str) -> Response:
    path = module_path(name)
    if path is None:
        raise NotFound("the browser module is not installed with this collector")
    body = path.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "Access-Control-Allow-Origin": "*",
        "Cache-Control": "no-cache",  # revalidate, so a fixed module reaches participants at once
        "ETag": etag,
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return JavaScriptResponse(body, media_type="application/javascript; charset=utf-8", headers=headers)
