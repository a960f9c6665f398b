"""A small loopback load against a real collector process on each backend: nothing refused,
nothing lost or doubled (``bench/reliability.py`` runs it large and reports the figures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.load import run_load

pytestmark = [pytest.mark.slow, pytest.mark.processes]

SIZES = {"local": (1500, 32), "s3": (200, 16)}


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_load_is_stored_exactly_once(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    uploads, concurrency = SIZES[backend]
    moto = request.getfixturevalue("moto_endpoint") if backend == "s3" else None
    result = run_load(backend, uploads=uploads, concurrency=concurrency, workdir=tmp_path, moto_endpoint=moto)
    assert result.errors == 0, dict(result.stats.answers)
    assert result.verdict.problems == []
    assert result.verdict.acknowledged == result.verdict.stored == uploads
    assert (result.verdict.duplicated, result.verdict.lost, result.verdict.partial) == (0, 0, 0)
    assert len(result.rss_samples) >= 2 and result.peak_rss_kib > 0  # the server was measured
