"""One address floods a small disk with unverified submissions: does a real participant still get in?

    python bench/bench_disk_flood.py [CHECKOUT] [--count 39] [--mib 4]

Mounts a 200 MiB tmpfs (needs root), serves CHECKOUT's collector (default: this one) on it with
its default settings, claims one participant with a key, then sends COUNT submissions of about
MIB MiB each for that participant without the key, from one address, one after another. Prints
the answers by status, the tmpfs's free space after, and what a real participant's upload then
gets. Loopback only; bounded (COUNT requests). Run it against an older checkout for a before figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers live in tests/support
from tests.support.collector_process import CollectorProcess
from tests.support.settings import local_settings

HERE = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout", nargs="?", default=str(HERE))
    parser.add_argument("--count", type=int, default=39)
    parser.add_argument("--mib", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        disk = Path(root) / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(disk)], check=True)
        try:
            print(json.dumps(run(args, disk)))
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def run(args: argparse.Namespace, disk: Path) -> dict[str, object]:
    with CollectorProcess(local_settings(disk / "data"), checkout=Path(args.checkout)) as server:
        url = server.url
        upload = url + "/api/upload-user-data"
        claim = {
            "participantId": "VICTIM1",
            "uploadType": "status",
            "participantKey": "victim-key-0123456789",
        }
        httpx.post(upload, json=claim).raise_for_status()
        blob = "x" * int(args.mib * 1024 * 1024 - 200)
        answers: Counter[int] = Counter()
        started = time.monotonic()
        with httpx.Client(timeout=60) as client:
            for n in range(args.count):
                body = {
                    "participantId": "VICTIM1",
                    "uploadType": "submission",
                    "submissionData": {"n": n, "b": blob},
                }
                answers[client.post(upload, json=body).status_code] += 1
            took = time.monotonic() - started
            real = {"participantId": "REAL1", "uploadType": "submission", "submissionData": {"answer": 1}}
            real_answer = client.post(upload, json=real).status_code
            health = client.get(url + "/healthz")
    return {
        "checkout": args.checkout,
        "flood_answers": dict(answers),
        "flood_seconds": round(took, 1),
        "free_mib_after": round(shutil.disk_usage(disk).free / 2**20, 1),
        "real_participant_answer": real_answer,
        "healthz": [health.status_code, health.json()],
    }


if __name__ == "__main__":
    main()
