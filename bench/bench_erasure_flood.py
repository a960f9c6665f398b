"""Erasure under a trial flood: does anything of the participant outlive ``collector erase``?

    python bench/bench_erasure_flood.py [CHECKOUT] [--threads 4] [--seconds 8]

Serves CHECKOUT's collector (default: this one) on a local folder, floods one participant with
trials from another process (bench/trial_flood.py), runs CHECKOUT's ``collector erase`` once the
flood lands, and prints how long the erasure took, whether it succeeded, and how many of the
participant's objects besides the tombstone were left when it returned and 1.5 s later.
Loopback only; bounded in time. Run it against an older checkout for a before figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers live in tests/support
from tests.support.collector_process import CollectorProcess
from tests.support.settings import local_settings

HERE = Path(__file__).resolve().parents[1]
PID, KEY = "FLOOD1", "flood-key-0123456789ab"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout", nargs="?", default=str(HERE))
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    checkout = Path(args.checkout)
    with tempfile.TemporaryDirectory() as root:
        data = Path(root) / "data"
        settings = local_settings(data, rate_limit_per_minute=0)
        with CollectorProcess(settings, checkout=checkout) as server:
            url = server.url
            claim = {"participantId": PID, "uploadType": "status", "participantKey": KEY}
            httpx.post(url + "/api/upload-user-data", json=claim).raise_for_status()
            flood = subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "bench" / "trial_flood.py"),
                    url,
                    PID,
                    KEY,
                    str(args.seconds),
                    str(args.threads),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            folder = data / "volcano-audio-anonymized-data" / "participants" / PID
            time.sleep(1.5)
            started = time.monotonic()
            erase = subprocess.run(
                [sys.executable, "-m", "collector", "erase", PID, "--reason", "bench", "--yes"],
                env=server.environment,
                cwd=checkout,
                capture_output=True,
                text=True,
            )
            took = time.monotonic() - started
            at_return = objects(folder)
            time.sleep(1.5)
            later = objects(folder)
            counts = json.loads(flood.communicate(timeout=60)[0])
        print(
            json.dumps(
                {
                    "checkout": args.checkout,
                    "erase_exit": erase.returncode,
                    "erase_seconds": round(took, 2),
                    "left_at_return": at_return,
                    "left_1_5s_later": later,
                    "empty_folders_left": sum(
                        1 for p in folder.rglob("*") if p.is_dir() and not any(p.iterdir())
                    ),
                    "flood_answers": counts,
                    "erase_error": erase.stderr.strip().splitlines()[-1:] if erase.returncode else [],
                }
            )
        )


def objects(folder: Path) -> int:
    """The participant's objects besides status.json (hidden temporaries are not objects)."""
    return sum(
        1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != "status.json"
    )


if __name__ == "__main__":
    main()
