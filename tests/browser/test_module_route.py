"""The collector serves the browser module itself: right type, open to any origin, revalidatable."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from fastapi.testclient import TestClient

from collector.app import create_app
from collector.routes.static import MODULES, module_path
from tests.support.collector_process import REPO
from tests.support.settings import local_settings


def test_module_is_served_cors_open_even_when_origins_are_restricted(tmp_path: Path) -> None:
    settings = local_settings(tmp_path / "data", allowed_origins="https://study.example")
    with TestClient(create_app(settings)) as client:
        answer = client.get("/js/data-uploader.js", headers={"Origin": "https://elsewhere.example"})
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/javascript")
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.content == (REPO / "js" / "data-uploader.js").read_bytes()
        again = client.get("/js/data-uploader.js", headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304
        # Uploads stay restricted to the configured origin.
        refused = client.options(
            "/api/upload-user-data",
            headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in refused.headers


def test_retry_after_is_readable_cross_origin(tmp_path: Path) -> None:
    with TestClient(create_app(local_settings(tmp_path / "data"))) as client:
        answer = client.post(
            "/api/upload-user-data", json={"participantId": "P1"}, headers={"Origin": "https://study.example"}
        )
        assert "retry-after" in answer.headers["access-control-expose-headers"].lower()


def test_an_editable_install_finds_the_module_in_the_repository() -> None:
    assert module_path() == REPO / "js" / "data-uploader.js"


def test_every_module_the_modules_import_is_served_and_packaged(tmp_path: Path) -> None:
    """A module imported from the collector loads what it imports from beside it, statically
    (``from './x.js'``) or on first use (``import('./x.js')``): each is served (CORS-open) and listed
    for the wheel."""
    served = set(MODULES)
    imported = set()
    for name in served:
        text = (REPO / "js" / name).read_text()
        imported |= set(re.findall(r"(?:from |import\()'\./([\w-]+\.js)'", text))
    assert "uploader-extras.js" in imported  # the dynamic import is seen, not only the static ones
    assert imported <= served
    assert served == {path.name for path in (REPO / "js").glob("*.js")}
    packaged = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]
    assert set(packaged["wheel"]["force-include"]) == {f"js/{name}" for name in served}
    with TestClient(create_app(local_settings(tmp_path / "data"))) as client:
        for name in served:
            answer = client.get(f"/js/{name}", headers={"Origin": "https://elsewhere.example"})
            assert answer.status_code == 200, name
            assert answer.headers["access-control-allow-origin"] == "*"
            assert answer.content == (REPO / "js" / name).read_bytes()


def test_the_openapi_description_gives_the_body_limit(tmp_path: Path) -> None:
    settings = local_settings(tmp_path / "data", max_upload_bytes=123456)
    with TestClient(create_app(settings)) as client:
        assert client.get("/openapi.json").json()["info"]["x-max-upload-bytes"] == 123456
