"""Real collector processes for tests that need sockets: ``collector serve`` in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from collector.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def venv_bin(name: str) -> Path:
    """A console script installed beside the running interpreter (its venv's ``bin``), wherever that is."""
    return Path(sys.executable).parent / name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce ``settings`` in another process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[name.upper()] = str(value)
    return env


def collector_environment(
    settings: Settings, port: int, *, workers: int = 1, checkout: Path = REPO
) -> dict[str, str]:
    """The environment for ``python -m collector serve`` with ``settings`` on a loopback port,
    running ``checkout``'s code (benchmarks point it at an older checkout for a before figure)."""
    return {
        **os.environ,
        # That checkout's code, even when the venv was installed from another one.
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(checkout / "backend"), os.environ.get("PYTHONPATH")])
        ),
        **settings_environment(settings),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": str(workers),
        "ADMIN_PASSWORD": settings.admin_password or "test-admin-password-1",
    }


def wait_until_healthy(process: subprocess.Popen, url: str, timeout: float, log_hint: str = "") -> None:
    """Return once ``url``/healthz answers 200; raise if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"collector exited with {process.returncode}{log_hint}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"collector did not become ready{log_hint}")


def terminate(process: subprocess.Popen) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if it has not ended within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class CollectorProcess:
    """``python -m collector serve`` on a free loopback port; a context manager, or call ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int = 1,
        log_path: Path | None = None,
        checkout: Path = REPO,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.environment = collector_environment(settings, self.port, workers=workers, checkout=checkout)
        self._log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collector", "serve"],
            cwd=checkout,
            env=self.environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_until_healthy(self.process, self.url, timeout)

    def stop(self) -> None:
        terminate(self.process)
        self._log.close()

    def __enter__(self) -> CollectorProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
