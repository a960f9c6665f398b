"""The Dockerfile's recipe, carried out without a container daemon (none runs on the test machines).

``Recipe.read()`` parses the Dockerfile; ``build_like_the_image`` copies the build context as its
COPY lines say, runs its RUN commands with the image's paths mapped into a folder of the test's
(``/opt/collector`` → ``root/opt/collector`` ...), and so builds the wheel and installs it into a
fresh venv exactly as the image build would. What cannot run outside a container (creating the
system user, chown) is listed in ``SYSTEM_ONLY`` and checked to be all that is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEM_ONLY = ("useradd ", "chown ")  # RUN steps that need a container's root and /etc/passwd


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def all(self, keyword: str) -> list[str]:
        return [args for word, args in self.instructions if word == keyword]

    def one(self, keyword: str) -> str:
        (args,) = self.all(keyword)
        return args

    @property
    def env(self) -> dict[str, str]:
        """Every ``ENV KEY=VALUE ...`` of the stage, in order (values as written, ``$PATH`` unexpanded)."""
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                values[name] = value
        return values

    @property
    def cmd(self) -> list[str]:
        """The exec-form CMD (a JSON array); a shell-form CMD fails here on purpose."""
        return json.loads(self.one("CMD"))

    @property
    def healthcheck(self) -> tuple[list[str], str]:
        """The HEALTHCHECK's exec-form command, and its options as written."""
        options, _, command = self.one("HEALTHCHECK").partition("CMD ")
        return json.loads(command), options.strip()


@dataclass
class Recipe:
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    @classmethod
    def read(cls, path: Path = REPO / "Dockerfile") -> Recipe:
        logical: list[str] = []
        pending = ""
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if line.startswith("#"):  # a comment inside a continued instruction
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            logical.append(pending + line)
            pending = ""
        stages: list[Stage] = []
        for line in logical:
            keyword, _, args = line.partition(" ")
            keyword = keyword.upper()
            if keyword == "FROM":
                words = args.split()
                stages.append(Stage(words[0], words[2] if len(words) == 3 else None))
            else:
                stages[-1].instructions.append((keyword, " ".join(args.split())))
        return cls(stages)


def build_like_the_image(recipe: Recipe, root: Path, *, keep_wheels: Path) -> dict[str, Path]:
    """Carry out the recipe's COPY and RUN steps under ``root``; the image paths mapped to real ones.

    The built wheels are copied to ``keep_wheels`` before the final stage deletes them. Returns
    the mapping (image path → folder here) for the paths the final stage uses.
    """
    build, final = recipe.stages[0], recipe.final
    context = root / "src"
    wheels = root / "wheels"
    mapping = {
        build.one("WORKDIR"): context,
        "/wheels": wheels,
        "/opt/collector": root / "opt" / "collector",
        final.one("WORKDIR"): root / "data",
    }
    for args in build.all("COPY"):
        *sources, _ = args.split()
        for source in sources:
            _copy(REPO / source, context / source)
    python_dir = root / "bin"  # `python` and `pip` on PATH, as in the python base image
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("python", "pip"):
        shim = python_dir / name
        target = (
            f'exec "{sys.executable}" "$@"' if name == "python" else f'exec "{sys.executable}" -m pip "$@"'
        )
        shim.write_text(f"#!/bin/sh\n{target}\n")
        shim.chmod(0o755)
    env = clean_environment(PATH=f"{python_dir}{os.pathsep}{os.environ['PATH']}")
    steps = [(context, run) for run in build.all("RUN")]
    steps.append((root, f"cp -r /wheels {keep_wheels}"))
    for run in final.all("RUN"):
        steps += [(root, step.strip()) for step in run.split("&&")]
    skipped = []
    for cwd, command in steps:
        if command.startswith(SYSTEM_ONLY):
            skipped.append(command.split()[0])
            continue
        # --no-cache-dir keeps the image small; here pip's cache saves the test a download.
        mapped = map_paths(command, mapping).replace(" --no-cache-dir", "")
        subprocess.run(mapped, shell=True, check=True, cwd=cwd, env=env, timeout=300)
    assert sorted(set(skipped)) == ["chown", "useradd"], skipped
    return mapping


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without what would import the checkout or pick a storage."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
        and not name.startswith(("R2_", "S3_", "ADMIN_", "STORAGE", "ALLOWED_", "LOCAL_STORAGE"))
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def map_paths(text: str, mapping: dict[str, Path]) -> str:
    """``text`` with each image path (a whole path component) replaced by its folder here."""
    for image_path in sorted(mapping, key=len, reverse=True):
        text = re.sub(rf"(?<![\w/]){re.escape(image_path)}(?=/|\b|$)", str(mapping[image_path]), text)
    return text


def _copy(source: Path, destination: Path) -> None:
    ignored = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    if source.is_dir():
        shutil.copytree(source, destination, ignore=ignored)
    else:
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
