"""The collector as a lab deploys it: the built wheel in a fresh venv, run as the image runs it."""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.collector_process import free_port, terminate, wait_until_healthy
from tests.support.installed_package import REPO, build_wheel, fresh_venv_with, plain_environment

pytestmark = pytest.mark.processes

README_BODY = {"participantId": "TEST123", "uploadType": "submission", "submissionData": {"test": True}}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path
    home: Path  # a folder outside the checkout to run in


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """One wheel and one fresh venv for the whole module (building and installing take ~20 s)."""
    root = tmp_path_factory.mktemp("installed")
    wheel = build_wheel(root)
    home = root / "home"
    home.mkdir()
    return Installed(wheel, fresh_venv_with(wheel, root / "venv"), home)


@pytest.fixture
def served(installed: Installed, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The installed ``collector serve`` on a loopback port over a fresh local folder."""
    port = free_port()
    env = plain_environment(
        HOST="127.0.0.1",
        PORT=str(port),
        LOCAL_STORAGE_DIR=str(tmp_path / "data"),
        ADMIN_PASSWORD="installed-package-test",
    )
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(installed.bin / "collector"), "serve"], cwd=installed.home, env=env, stdout=out, stderr=out
        )
        try:
            wait_until_healthy(process, f"http://127.0.0.1:{port}", 60, log_hint=f" (log: {log})")
            yield f"http://127.0.0.1:{port}", env
        finally:
            terminate(process)


def test_the_wheel_holds_every_file_of_the_package(installed: Installed) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "backend/collector"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked, "no tracked files: not a git checkout?"
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    missing = [path for path in tracked if path.replace("backend/", "", 1) not in names]
    assert missing == []
    assert {"collector/static/data-uploader.js", "collector/static/jspsych-collector.js"} <= names


def test_the_installed_collector_is_not_the_checkout(installed: Installed) -> None:
    where = subprocess.run(
        [str(installed.bin / "python"), "-c", "import collector; print(collector.__file__)"],
        cwd=installed.home,
        env=plain_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.bin.parent), where


def test_the_installed_collector_serves_exports_and_verifies(
    installed: Installed, served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = served
    answer = httpx.post(f"{url}/api/upload-user-data", json=README_BODY, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "success"
    module = httpx.get(f"{url}/js/data-uploader.js", timeout=10)
    assert module.status_code == 200
    assert module.headers["content-type"].startswith("application/javascript")
    assert "export" in module.text
    assert httpx.get(f"{url}/js/jspsych-collector.js", timeout=10).status_code == 200
    login = httpx.get(f"{url}/admin/login", timeout=10)
    assert login.status_code == 200 and "password" in login.text.lower()
    assert httpx.get(f"{url}/admin/static/admin.css", timeout=10).status_code == 200

    out = tmp_path / "export"
    exported = subprocess.run(
        [str(installed.bin / "collector"), "export", "--out", str(out)],
        cwd=installed.home,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr
    assert "TEST123" in (out / "submissions.csv").read_text()
    verified = subprocess.run(
        [str(installed.bin / "collector"), "verify"],
        cwd=installed.home,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 submissions" in verified.stdout and "no problems found" in verified.stdout
