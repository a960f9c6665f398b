"""Serves the browser module, so a study on any origin can ``import`` it from the collector."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from ..errors import NotFound
from ..models import ErrorResponse
from ..settings import Settings

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


# Each module the collector serves, and what it is. data-uploader.js imports the two shared ones (and
# uploader-extras.js when first needed), jspsych-collector.js imports data-uploader.js: they are served
# side by side, from the same path.
MODULES = {
    "data-uploader.js": "The browser uploader module (docs/browser-module.md)",
    "jspsych-collector.js": "The jsPsych hooks module (imports ./data-uploader.js; docs/jspsych.md)",
    "collector-common.js": "What the browser modules share (imported by both)",
    "seed-study.js": "The seed study's localStorage fields (imported by data-uploader.js)",
    "uploader-extras.js": "restoreUserStatus and downloadBackup, loaded by data-uploader.js on first use",
}


def _module_route(name: str, summary: str) -> None:
    async def serve_module(request: Request) -> Response:
        """The ES module, CORS-open whatever ``ALLOWED_ORIGINS`` says: it is public code, not data."""
        return _serve(request, name)

    router.add_api_route(
        f"/js/{name}",
        serve_module,
        methods=["GET"],
        summary=summary,
        response_class=JavaScriptResponse,
        responses=_MODULE_RESPONSES,
        operation_id=f"module_{name.replace('-', '_').replace('.', '_')}",
    )


for _name, _summary in MODULES.items():
    _module_route(_name, _summary)


def describe_limits(app: FastAPI, settings: Settings) -> None:
    """Adds the body limit to the app's OpenAPI description (``info.x-max-upload-bytes``): the
    browser module reads it to keep an upload the collector would refuse as too large."""
    describe = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            describe()["info"]["x-max-upload-bytes"] = settings.max_upload_bytes
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


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
