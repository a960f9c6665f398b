"""The local folder when the disk runs short: refuse with 503, leave no temporary behind, say so.

A write that fails for lack of space must remove its temporary file (or the disk stays full);
temporaries a crash left behind are removed at start and reported by ``collector verify``;
under the free-space or free-inode thresholds uploads answer 503 + Retry-After and ``/healthz``
says "storage is low on space" without naming a path.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.cli import main
from collector.keys import KeyLayout
from collector.storage import LocalStore, LowOnSpace, StorageError
from collector.storage import local as local_module
from collector.verify import LEFTOVER_TEMPORARY, verify_bucket
from tests.support.collector_process import settings_environment
from tests.support.settings import local_settings

UPLOAD = "/api/upload-user-data"


def hidden_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p.is_file())


def big_upload(participant_id: str, size: int) -> dict[str, object]:
    return {
        "participantId": participant_id,
        "uploadType": "submission",
        "submissionData": {"blob": "x" * size},
    }


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, so a real write runs out of space (needs root to mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the failing-write test covers the cleanup")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_keeps_no_temporary_and_frees_again(small_disk: Path) -> None:
    store = LocalStore(small_disk, min_free_bytes=0, min_free_inodes=0)
    store.put("a/first.json", b"1" * 1_200_000, if_absent=True)
    with pytest.raises(LowOnSpace):
        store.put("a/second.json", b"2" * 1_200_000, if_absent=True)
    assert hidden_files(small_disk) == []  # the half-written temporary is gone
    assert store.get_or_none("a/second.json") is None
    # The space the failed write took is free again: a smaller write fits.
    store.put("a/third.json", b"3" * 500_000, if_absent=True)
    assert store.get("a/third.json").body == b"3" * 500_000


def test_a_full_disk_answers_503_over_http_and_leaves_nothing(small_disk: Path) -> None:
    settings = local_settings(small_disk, min_free_bytes=0, min_free_inodes=0)
    with TestClient(create_app(settings)) as client:
        assert client.post(UPLOAD, json=big_upload("DISK001", 1_200_000)).status_code == 200
        for _ in range(3):  # every failed try must give its space back
            answer = client.post(UPLOAD, json=big_upload("DISK002", 1_200_000))
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"]
            assert answer.json()["status"] == "error"
        assert hidden_files(small_disk) == []
        # No submission. Its status.json, written first and small, may be there: a retry once
        # there is space stores the submission (as after any 503 between the two writes).
        participant = small_disk / settings.data_prefix / "participants" / "DISK002"
        assert not list(participant.rglob("*_Complete_*"))
        assert client.post(UPLOAD, json=big_upload("DISK003", 100_000)).status_code == 200


def test_a_write_that_fails_half_way_removes_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)

    def write_half_then_fail(path: str, body: bytes) -> None:
        Path(path).write_bytes(body[: len(body) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(local_module, "_write", write_half_then_fail)
    with pytest.raises(LowOnSpace):
        store.put("p/one.json", b"x" * 10_000, if_absent=True)

    def write_then_fail_otherwise(path: str, body: bytes) -> None:
        Path(path).write_bytes(body[:10])
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(local_module, "_write", write_then_fail_otherwise)
    with pytest.raises(StorageError):
        store.put("p/two.json", b"x" * 10_000)
    assert hidden_files(tmp_path) == []
    assert list(store.list("")) == []


@pytest.mark.parametrize("threshold", ["min_free_bytes", "min_free_inodes"])
def test_under_the_free_space_threshold_uploads_are_refused_and_healthz_says_so(
    tmp_path: Path, threshold: str
) -> None:
    settings = local_settings(tmp_path / "data", **{threshold: 2**62})
    with TestClient(create_app(settings)) as client:
        answer = client.post(UPLOAD, json=big_upload("LOW001", 10))
        assert answer.status_code == 503
        assert answer.headers["Retry-After"]
        health = client.get("/healthz")
        assert health.status_code == 503
        assert "low on space" in health.json()["error"]
        assert str(tmp_path) not in health.text
    assert not list((tmp_path / "data").rglob("*.json"))


def test_over_the_threshold_uploads_are_stored(tmp_path: Path) -> None:
    settings = local_settings(tmp_path / "data", min_free_bytes=1, min_free_inodes=1)
    with TestClient(create_app(settings)) as client:
        assert client.post(UPLOAD, json=big_upload("OK001", 10)).status_code == 200
        assert client.get("/healthz").json()["status"] == "ok"


def test_stale_temporaries_are_removed_at_start_and_fresh_ones_reported(tmp_path: Path) -> None:
    settings = local_settings(tmp_path / "data")
    layout = KeyLayout(settings.data_prefix)
    folder = tmp_path / "data" / settings.data_prefix / "participants" / "TMP001" / "submissions"
    folder.mkdir(parents=True)
    stale = folder / ".TMP001_Complete_2026-01-01_00-00-00.json.tmp-0123456789ab"
    fresh = folder / ".TMP001_Complete_2026-01-01_00-00-01.json.tmp-ba9876543210"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"maybe a live write")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    store = LocalStore(tmp_path / "data")  # start: sweeps what is older than a few minutes
    assert not stale.exists()
    assert fresh.exists()

    report = verify_bucket(store, layout)
    assert [(d.kind, d.key) for d in report.defects] == [
        (LEFTOVER_TEMPORARY, str(fresh.relative_to(tmp_path / "data")))
    ]
    result = CliRunner().invoke(main, ["verify"], env=settings_environment(settings))
    assert result.exit_code == 1
    assert LEFTOVER_TEMPORARY in result.output


# --- the same on the event loop (put_async, the upload path) --------------------------------------


def test_an_async_write_to_a_full_disk_keeps_no_temporary_and_frees_again(small_disk: Path) -> None:
    store = LocalStore(small_disk, min_free_bytes=0, min_free_inodes=0)

    async def scenario() -> None:
        await store.put_async("a/first.json", b"1" * 1_200_000, if_absent=True)
        with pytest.raises(LowOnSpace):
            await store.put_async("a/second.json", b"2" * 1_200_000, if_absent=True)
        assert hidden_files(small_disk) == []
        assert await store.get_or_none_async("a/second.json") is None
        await store.put_async("a/third.json", b"3" * 500_000, if_absent=True)

    asyncio.run(scenario())
    store.close()
    assert store.get("a/third.json").body == b"3" * 500_000


def test_an_async_write_that_fails_half_way_removes_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    failure = {"errno": errno.ENOSPC}

    def write_half_then_fail(path: str, body: bytes) -> None:
        Path(path).write_bytes(body[: len(body) // 2])
        raise OSError(failure["errno"], os.strerror(failure["errno"]))

    monkeypatch.setattr(local_module, "_write", write_half_then_fail)

    async def scenario() -> None:
        with pytest.raises(LowOnSpace):
            await store.put_async("p/one.json", b"x" * 10_000, if_absent=True)
        failure["errno"] = errno.EIO
        with pytest.raises(StorageError) as caught:
            await store.put_async("p/two.json", b"x" * 10_000)
        assert not isinstance(caught.value, LowOnSpace)

    asyncio.run(scenario())
    store.close()
    assert hidden_files(tmp_path) == []
    assert list(store.list("")) == []


@pytest.mark.parametrize("threshold", ["min_free_bytes", "min_free_inodes"])
def test_under_the_free_space_threshold_async_writes_are_refused(tmp_path: Path, threshold: str) -> None:
    store = LocalStore(tmp_path / "data", **{threshold: 2**62})

    async def scenario() -> None:
        with pytest.raises(LowOnSpace):
            await store.put_async("p/one.json", b"x", if_absent=True)

    asyncio.run(scenario())
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").rglob("*"))
