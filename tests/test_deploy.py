"""The collector as a lab deploys it: built and installed by the Dockerfile's own steps, run as it runs.

No container daemon runs here, so the image is not built: ``tests.support.image_recipe`` carries
out the Dockerfile's COPY and RUN steps in a temporary folder (the wheel built from the copied
context, installed into a fresh venv, not editable), and the tests start its CMD with its ENV.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.collector_process import free_port, terminate, wait_until_healthy
from tests.support.image_recipe import REPO, Recipe, build_like_the_image, clean_environment, map_paths

README_BODY = {"participantId": "TEST123", "uploadType": "submission", "submissionData": {"test": True}}
NOBODY = 65534


@dataclass(frozen=True)
class Image:
    recipe: Recipe
    root: Path
    mapping: dict[str, Path]

    @property
    def bin(self) -> Path:
        return self.mapping["/opt/collector"] / "bin"

    @property
    def wheel(self) -> Path:
        return self.root / "wheel-kept"


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    """The Dockerfile's build carried out once for the module (about 20 s, pip's cache helping).

    In a folder every user may read, so the collector can run as an unprivileged user.
    """
    root = Path(tempfile.mkdtemp(prefix="collector-image-"))
    root.chmod(0o755)
    try:
        recipe = Recipe.read()
        # A copy of the wheel is kept: the image's own step deletes it once installed.
        yield Image(recipe, root, build_like_the_image(recipe, root, keep_wheels=root / "wheel-kept"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_installed(image: Image, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(image.bin / "collector"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def served(image: Image, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The installed ``collector serve`` on a loopback port over a fresh local folder."""
    port = free_port()
    env = clean_environment(
        HOST="127.0.0.1",
        PORT=str(port),
        LOCAL_STORAGE_DIR=str(tmp_path / "data"),
        ADMIN_PASSWORD="installed-package-test",
    )
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(image.bin / "collector"), "serve"], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
        try:
            wait_until_healthy(process, f"http://127.0.0.1:{port}", 60, log_hint=f" (log: {log})")
            yield f"http://127.0.0.1:{port}", env
        finally:
            terminate(process)


@pytest.mark.processes
def test_the_wheel_holds_every_file_of_the_package(image: Image) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "backend/collector"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked, "no tracked files: not a git checkout?"
    (wheel,) = image.wheel.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [path for path in tracked if path.replace("backend/", "", 1) not in names]
    assert missing == []
    assert {"collector/static/data-uploader.js", "collector/static/jspsych-collector.js"} <= names


@pytest.mark.processes
def test_the_installed_collector_is_not_the_checkout(image: Image) -> None:
    where = subprocess.run(
        [str(image.bin / "python"), "-c", "import collector; print(collector.__file__)"],
        cwd=image.root,
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(image.mapping["/opt/collector"]), where


@pytest.mark.processes
def test_the_installed_collector_serves_exports_and_verifies(
    image: Image, served: tuple[str, dict[str, str]], tmp_path: Path
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
    assert httpx.get(f"{url}/js/uploader-extras.js", timeout=10).status_code == 200  # loaded on first use
    login = httpx.get(f"{url}/admin/login", timeout=10)
    assert login.status_code == 200 and "password" in login.text.lower()
    assert httpx.get(f"{url}/admin/static/admin.css", timeout=10).status_code == 200

    out = tmp_path / "export"
    exported = run_installed(image, "export", "--out", str(out), env=env, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "TEST123" in (out / "submissions.csv").read_text()
    verified = run_installed(image, "verify", env=env, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 submissions" in verified.stdout and "no problems found" in verified.stdout


def test_the_dockerfile_says_what_a_deployment_needs() -> None:
    final = Recipe.read().final
    assert final.image.startswith("python:3.11.") and final.image.endswith("-slim-bookworm")
    assert all(stage.image == final.image for stage in Recipe.read().stages)  # one pinned base
    user = final.one("USER")
    assert user.split(":")[0] not in {"0", "root"}
    env = final.env
    assert env["HOST"] == "0.0.0.0" and env["LOCAL_STORAGE_DIR"] == final.one("WORKDIR") == "/data"
    assert json.loads(final.one("VOLUME")) == ["/data"]
    assert final.cmd == ["collector", "serve"]
    command, options = final.healthcheck
    assert "/healthz" in " ".join(command) and "--timeout=" in options


def unprivileged_user_if_possible(image: Image) -> dict[str, object]:
    """Popen arguments that run as ``nobody``, when the test is root and ``nobody`` can run the venv's
    interpreter (not when that interpreter lives under root's home, as a pyenv one does)."""
    if os.geteuid() != 0:
        return {}  # already unprivileged
    as_nobody: dict[str, object] = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    try:
        subprocess.run([str(image.bin / "python"), "-c", "pass"], check=True, timeout=30, **as_nobody)
    except (OSError, subprocess.CalledProcessError):
        return {}
    return as_nobody


@pytest.mark.processes
def test_the_image_starts_as_its_dockerfile_says_and_reports_healthy(image: Image, tmp_path: Path) -> None:
    """CMD and ENV from the Dockerfile; an unprivileged user (when the test runs as root); PORT honoured."""
    final = image.recipe.final
    data = image.mapping["/data"]
    port = free_port()
    env = clean_environment(**{name: map_paths(value, image.mapping) for name, value in final.env.items()})
    env["PATH"] = env["PATH"].replace("$PATH", os.environ["PATH"])
    # Loopback here, where the image listens on every interface of its own network namespace.
    env.update(PORT=str(port), HOST="127.0.0.1", HOME=str(data))
    as_user = unprivileged_user_if_possible(image)
    if as_user:
        os.chown(data, NOBODY, NOBODY)
    log = tmp_path / "image.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            final.cmd, cwd=data, env=env, stdout=out, stderr=subprocess.STDOUT, **as_user
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(process, url, 60, log_hint=f" (log: {log})")
            command, _ = final.healthcheck
            check = subprocess.run(command, env=env, cwd=data, timeout=10, **as_user)
            assert check.returncode == 0
            assert httpx.post(f"{url}/api/upload-user-data", json=README_BODY, timeout=10).status_code == 200
            stored = list(data.rglob("TEST123_Complete_*.json"))
            assert len(stored) == 1
            if as_user:
                assert stored[0].stat().st_uid == NOBODY
            process.send_signal(signal.SIGTERM)  # what `docker stop` sends to the exec-form CMD
            # uvicorn shuts down cleanly, then ends by the signal it caught (-15) as a process should.
            assert process.wait(15) in (0, -signal.SIGTERM)
        finally:
            terminate(process)
    assert "Finished server process" in log.read_text()
    # The health check fails once nothing answers.
    assert subprocess.run(command, env=env, cwd=data, timeout=10, capture_output=True).returncode != 0


def test_railway_starts_the_image_command_and_checks_healthz() -> None:
    railway = json.loads((REPO / "railway.json").read_text())
    assert railway["build"]["builder"] == "DOCKERFILE"
    assert (REPO / railway["build"]["dockerfilePath"]).is_file()
    deploy = railway["deploy"]
    assert deploy["startCommand"].split() == Recipe.read().final.cmd
    assert deploy["healthcheckPath"] == "/healthz"
    assert deploy["restartPolicyType"] in {"ON_FAILURE", "ALWAYS"}
    assert deploy["restartPolicyMaxRetries"] >= 1
