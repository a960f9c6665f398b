"""``/docs`` needs no other host: the page names only the collector's own assets, and they are served."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from collector.app import create_app
from tests.support.settings import local_settings

REFERENCE = re.compile(r"""(?:src|href|url)\s*[=:]\s*["']([^"']+)["']""")


def test_docs_page_references_only_the_collectors_own_assets(tmp_path: Path) -> None:
    with TestClient(create_app(local_settings(tmp_path))) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        references = REFERENCE.findall(page.text)
        assert "/openapi.json" in references
        assert len(references) >= 4  # the stylesheet, the icon, the script and the description
        assert [ref for ref in references if "//" in ref or not ref.startswith("/")] == []
        assert "://" not in page.text  # no other host anywhere on the page
        for reference in references:
            answer = client.get(reference)
            assert answer.status_code == 200, reference
            assert answer.content
        script = client.get("/docs/assets/swagger-ui-bundle.js")
        assert script.headers["content-type"].startswith("application/javascript")
        assert b"SwaggerUIBundle" in script.content


def test_only_the_pages_assets_are_reachable(tmp_path: Path) -> None:
    with TestClient(create_app(local_settings(tmp_path))) as client:
        for name in ("LICENSE", "swagger-editor-bundle.js", "..%2F__init__.py", "index.css"):
            assert client.get(f"/docs/assets/{name}").status_code == 404, name
        assert client.get("/redoc").status_code == 404  # ReDoc loads from a CDN: switched off
