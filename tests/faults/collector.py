"""A real collector process that can be SIGKILLed and restarted on the same port, and measured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from collector.settings import Settings
from tests.live_collector import REPO, free_port, settings_environment


class KillableCollector:
    """``python -m collector serve`` (one worker, so the pid is the server) on a fixed port."""

    def __init__(self, settings: Settings, *, log_path: Path | None = None, port: int | None = None) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.kills = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> KillableCollector:
        env = {
            **os.environ,
            **settings_environment(self.settings),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WORKERS": "1",
            "ADMIN_PASSWORD": self.settings.admin_password or "test-admin-password-1",
        }
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collector", "serve"], cwd=REPO, env=env, stdout=log, stderr=log
        )
        if log is not subprocess.DEVNULL:
            log.close()  # the child holds its own copy
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"collector exited with {self.process.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("collector did not become ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, in-flight requests die half done."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def restart(self) -> None:
        self.start()

    def rss_kib(self) -> tuple[int, int]:
        """(current RSS, peak RSS) of the server process in KiB, from /proc."""
        assert self.process is not None
        values = {}
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    values[name] = int(rest.split()[0])
        return values.get("VmRSS", 0), values.get("VmHWM", 0)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
