"""``/docs``: Swagger UI served from the collector itself, so it renders offline and behind firewalls.

FastAPI's own page loads Swagger UI from a CDN. The assets come from the ``swagger-ui-py``
package instead (Swagger UI 5, which renders the OpenAPI 3.1 FastAPI writes); only the three
files the page needs are served. ReDoc, also CDN-hosted, is switched off.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from ..errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS_URL = "/docs/assets"
_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def assets_dir() -> Path:
    """The package's static folder, found without importing it (its import loads every web adapter)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing; reinstall the collector")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


_ASSETS = assets_dir()


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Participant data collector: API",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
    )


@router.get(ASSETS_URL + "/{name}")
async def swagger_ui_asset(name: str) -> FileResponse:
    if name not in _MEDIA_TYPES:  # a fixed list: nothing else of the package is reachable
        raise NotFound("no such documentation asset")
    return FileResponse(
        _ASSETS / name, media_type=_MEDIA_TYPES[name], headers={"Cache-Control": "public, max-age=86400"}
    )
