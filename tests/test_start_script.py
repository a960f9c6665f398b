"""The README's first command: ``backend/start_local_collector.sh`` serves the README's curl example."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.collector_process import REPO, free_port

pytestmark = pytest.mark.processes

CURL_BODY = '{"participantId": "TEST123", "uploadType": "submission", "submissionData": {"test": true}}'


def test_start_script_serves_the_readme_curl_example(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "PORT": str(port),
        "LOCAL_STORAGE_DIR": str(data),
        "VENV_DIR": str(REPO / ".venv"),  # reuse the test venv; the script installs into it if needed
    }
    env.pop("ADMIN_PASSWORD", None)
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(REPO / "backend" / "start_local_collector.sh")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                assert process.poll() is None, log.read_text()
                try:
                    httpx.get(url + "/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            # The README's curl example, byte for byte in what it sends.
            answer = subprocess.run(
                [
                    "curl", "-sS", "-X", "POST", f"{url}/api/upload-user-data",
                    "-H", "Content-Type: application/json",
                    "-d", CURL_BODY,
                ],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)
    assert '"status":"success"' in answer.stdout
    folder = data / "volcano-audio-anonymized-data" / "participants" / "TEST123"
    assert (folder / "user-status" / "status.json").is_file()
    assert len(list((folder / "submissions").glob("TEST123_Complete_*.json"))) == 1
    printed = log.read_text()
    assert "✅ Uploaded user data for TEST123" in printed
    assert "Admin dashboard password (generated):" in printed
