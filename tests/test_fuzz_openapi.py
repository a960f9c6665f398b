"""Fuzz the API from its own OpenAPI description (schemathesis) with every check it has.

In process: no answer breaks the description (status, content type, headers, body schema; valid
input accepted, invalid input refused), none carries a stack trace, and nothing is stored unless
a 200 named it. Against a collector process: ``schemathesis run --checks all``, bounded, as a
client generator or a fuzzer would read ``/openapi.json`` (docs/api.md §6).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.generation import GenerationMode

from collector.app import create_app
from collector.keys import KeyLayout
from collector.storage import open_store
from tests.support.collector_process import CollectorProcess, venv_bin
from tests.support.settings import local_settings

pytestmark = pytest.mark.slow
# Cases per operation: enough to reach every documented status, small enough for ~30 s in all.
MAX_EXAMPLES = 40

# Built at import, as schemathesis parametrizes at collection time; the folder goes with the process.
_DATA = tempfile.TemporaryDirectory(prefix="fuzz-")
# Rate limiting off: one fuzzing client would otherwise spend most cases on 429s.
SETTINGS = local_settings(Path(_DATA.name) / "data", rate_limit_per_minute=0)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(SETTINGS))
# Inputs that break the schema too: the collector must refuse them with a 4xx, never a 5xx.
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], allow_x00=True)
STORE = open_store(SETTINGS)


@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_input_breaks_the_api(case: schemathesis.Case) -> None:
    root = KeyLayout(SETTINGS.data_prefix).participants_root
    before = {info.key for info in STORE.list(root)}
    response = case.call_and_validate()  # every built-in check
    assert "Traceback" not in response.text
    created = {info.key for info in STORE.list(root)} - before
    assert created <= named_in(response.text, response.status_code)


def named_in(text: str, status: int) -> set[str]:
    """Keys that a 200 answer says it stored (a batch: those of its items answered 200)."""
    if status != 200:
        return set()
    try:
        answer = json.loads(text)
    except ValueError:
        return set()
    if not isinstance(answer, dict):
        return set()
    items = answer.get("results") if isinstance(answer.get("results"), list) else [answer]
    return {
        key
        for item in items
        if isinstance(item, dict) and item.get("status") == "success" and item.get("httpStatus", 200) == 200
        for key in item.get("filesUploaded", [])
    }


@pytest.mark.processes
def test_schemathesis_run_with_every_check_finds_nothing(tmp_path: Path) -> None:
    """The command a user of the description would run, against a real collector on loopback."""
    settings = local_settings(tmp_path / "data", rate_limit_per_minute=0)
    with CollectorProcess(settings) as collector:
        done = subprocess.run(
            [
                str(venv_bin("schemathesis")),
                "run",
                f"{collector.url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--generation-allow-x00",
                "true",
                "--no-color",
            ],
            cwd=tmp_path,  # its failure cache goes there, not into the repository
            capture_output=True,
            text=True,
            timeout=300,
        )
    # The whole report on failure: it names each case and the random seed that replays it.
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    # Restore answers every generated participant 404 (nobody has their key): the one warning
    # allowed is that this operation "repeatedly returned 404", i.e. it gave nothing away.
    every_case_passed = re.search(r"(\d+) generated, \1 passed\n", done.stdout)
    only_restore_warned = "1 operation repeatedly returned 404" in done.stdout and (
        "- POST /api/user-status\n" in done.stdout
    )
    assert "No issues found" in done.stdout or (every_case_passed and only_restore_warned), done.stdout[
        -3000:
    ]
