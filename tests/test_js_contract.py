"""The browser modules' copy of the contract equals the collector's OpenAPI description.

js/collector-common.js states the participant ID rule, the key rule, the trial index bound, the batch
and body limits and the upload types in JavaScript; the collector describes the same in its
OpenAPI. Each constant is read from the module's source and compared, so the two cannot drift.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from collector.app import create_app
from tests.support.collector_process import REPO
from tests.support.settings import local_settings

SOURCE = (REPO / "js" / "collector-common.js").read_text()


def js_constant(name: str) -> str:
    found = re.search(rf"^export const {name} = (.+?);", SOURCE, re.MULTILINE)
    assert found, f"{name} is not a constant of js/collector-common.js"
    return found.group(1)


def js_pattern(name: str) -> tuple[str, int, int]:
    """A JS regex literal `/^[class]{min,max}$/` as (class, min, max)."""
    found = re.fullmatch(r"/\^(\[[^\]]+\])\{(\d+),(\d+)\}\$/", js_constant(name))
    assert found, f"{name} is not of the form /^[...]{{min,max}}$/"
    return found.group(1), int(found.group(2)), int(found.group(3))


def schema_pattern(schema: dict[str, Any]) -> tuple[str, int, int]:
    """A string schema `^[class]+$` with minLength/maxLength as (class, min, max)."""
    found = re.fullmatch(r"\^(\[[^\]]+\])\+\$", schema["pattern"])
    assert found, schema["pattern"]
    return found.group(1), schema["minLength"], schema["maxLength"]


def string_branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The string alternative of an optional field (`anyOf: [{type: string}, {type: null}]`)."""
    return next(s for s in schema.get("anyOf", [schema]) if s.get("type") == "string")


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return create_app(local_settings(Path(tmp_path_factory.mktemp("contract")) / "data")).openapi()


@pytest.fixture(scope="module")
def upload(openapi: dict[str, Any]) -> dict[str, Any]:
    body = openapi["paths"]["/api/upload-user-data"]["post"]["requestBody"]
    return body["content"]["application/json"]["schema"]


def trial_rules(upload: dict[str, Any]) -> dict[str, Any]:
    for rule in upload["allOf"]:
        if rule["if"].get("properties", {}).get("uploadType", {}).get("const") == "trial":
            return rule["then"]["properties"]
    raise AssertionError("no trial rule in the upload schema")


def test_participant_and_session_ids(upload: dict[str, Any]) -> None:
    assert js_pattern("ID_PATTERN") == schema_pattern(upload["properties"]["participantId"])
    assert js_pattern("ID_PATTERN") == schema_pattern(trial_rules(upload)["sessionId"])


def test_participant_key(upload: dict[str, Any]) -> None:
    assert js_pattern("KEY_PATTERN") == schema_pattern(string_branch(upload["properties"]["participantKey"]))


def test_trial_index_bound(upload: dict[str, Any]) -> None:
    index = trial_rules(upload)["trialIndex"]
    assert index["minimum"] == 0
    assert int(js_constant("MAX_TRIAL_INDEX")) == index["maximum"]


def test_upload_types(upload: dict[str, Any]) -> None:
    declared = string_branch(upload["properties"]["uploadType"])["enum"]
    assert json.loads(js_constant("UPLOAD_TYPES").replace("'", '"')) == declared


def test_batch_limit(openapi: dict[str, Any]) -> None:
    batch = openapi["paths"]["/api/upload-user-data/batch"]["post"]["requestBody"]
    uploads = batch["content"]["application/json"]["schema"]["properties"]["uploads"]
    assert int(js_constant("MAX_BATCH_ITEMS")) == uploads["maxItems"]


def test_body_limit_default(openapi: dict[str, Any]) -> None:
    """The module's fallback is the collector's default; a collector configured otherwise says so in
    the same field, which the module reads (tests/browser/test_module_route.py)."""
    assert int(js_constant("MAX_UPLOAD_BYTES")) == openapi["info"]["x-max-upload-bytes"]
