"""The collector as a lab installs it: a wheel built from this checkout, in a fresh venv, not editable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def plain_environment(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would import the checkout instead."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
        and not name.startswith(("R2_", "S3_", "ADMIN_", "STORAGE", "ALLOWED_", "LOCAL_STORAGE"))
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def build_wheel(out_dir: Path) -> Path:
    """``pip wheel --no-deps .``: the build backend (hatchling) comes from PyPI, through pip's cache."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out_dir), str(REPO)],
        check=True,
        env=plain_environment(),
        cwd=out_dir,
        timeout=300,
    )
    (wheel,) = out_dir.glob("*.whl")
    return wheel


def fresh_venv_with(wheel: Path, venv: Path) -> Path:
    """A new venv with ``wheel`` and its dependencies installed (not editable); its ``bin`` folder."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        env=plain_environment(),
        cwd=venv,
        timeout=300,
    )
    return venv / "bin"
