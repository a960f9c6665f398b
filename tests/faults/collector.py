"""A real collector process that can be SIGKILLed and restarted on the same port, and measured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from collector.settings import Settings
from tests.support.collector_process import (
    REPO,
    collector_environment,
    free_port,
    terminate,
    wait_until_healthy,
)


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
        env = collector_environment(self.settings, self.port)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collector", "serve"], cwd=REPO, env=env, stdout=log, stderr=log
        )
        if log is not subprocess.DEVNULL:
            log.close()  # the child holds its own copy
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        wait_until_healthy(self.process, self.url, timeout, f"; see {self.log_path}")

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
        if self.process is not None:
            terminate(self.process)
