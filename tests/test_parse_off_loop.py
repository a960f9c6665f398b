"""Which bodies are parsed on the event loop: only those small in values *and* bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.web import request_body
from tests.support.settings import local_settings

URL = "/api/upload-user-data"


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize(
    ("text_bytes", "expect_on_loop"),
    [
        pytest.param(100, True, id="small"),
        pytest.param(request_body.INLINE_PARSE_BYTES, False, id="few-long-values"),
    ],
)
def test_a_large_body_is_parsed_off_the_event_loop_whatever_its_value_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text_bytes: int, expect_on_loop: bool
) -> None:
    where: list[bool] = []

    def recording(real_parse: Any) -> Any:
        def recording_parse(raw: bytes, **kwargs: Any) -> Any:
            where.append(on_event_loop())
            return real_parse(raw, **kwargs)

        return recording_parse

    # Either parser: a body of long values takes Python's json alone (request_body.parser_for).
    for name in ("parse_json", "parse_json_exactly"):
        monkeypatch.setattr(request_body, name, recording(getattr(request_body, name)))
    body = {"participantId": "L1", "uploadType": "submission", "submissionData": {"text": "x" * text_bytes}}
    with TestClient(create_app(local_settings(tmp_path / "data"))) as client:
        assert client.post(URL, json=body).status_code == 200
    assert where == [expect_on_loop]
