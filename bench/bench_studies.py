"""What a registered study costs an upload, against the default study in the same run.

In one process (TestClient over the real app, a local folder), interleaved rounds of new
participants' status uploads to: the default study, an open study without a cap, and a study
with a cap (its admissions record read and swapped per new participant). Then the cost of one
admission when the admissions record already holds 10,000 participants. Prints milliseconds per
upload and the ratios to the default study; the storage requests are pinned by
``tests/test_studies.py::test_what_a_study_costs_in_storage_requests``.

Usage (about 30 s; timings inflate with whatever else runs on the machine)::

    .venv/bin/python bench/bench_studies.py
    .venv/bin/python bench/bench_studies.py --uploads 100 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from collector.app import create_app
from collector.settings import Settings
from collector.storage import open_store
from collector.studies.admission import admissions_key, admit_to_capped_study
from collector.studies.manage import register_study
from collector.studies.registry import make_study, read_registry

URL = "/api/upload-user-data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=200, help="new participants per study and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--admitted", type=int, default=10_000, help="participants in the record")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench-studies-"))
    settings = Settings(local_storage_dir=root, admin_password="bench-password-1", rate_limit_per_minute=0)
    store = open_store(settings)
    prefix = settings.data_prefix
    register_study(store, prefix, make_study(prefix, "open1"), who="bench")
    register_study(store, prefix, make_study(prefix, "capped1", max_participants=10**9), who="bench")
    studies = {"default": None, "open study": "open1", "capped study": "capped1"}
    totals = dict.fromkeys(studies, 0.0)
    with TestClient(create_app(settings)) as client:
        for round_number in range(args.rounds):
            for label, study_id in studies.items():  # interleaved: drifting load hits all alike
                started = time.perf_counter()
                for n in range(args.uploads):
                    body = {"participantId": f"R{round_number}N{n}", "uploadType": "status", "x": 1}
                    if study_id:
                        body["studyId"] = study_id
                    assert client.post(URL, json=body).status_code == 200
                totals[label] += time.perf_counter() - started
    count = args.uploads * args.rounds
    base = totals["default"] / count * 1000
    print(f"new participants' status uploads ({count} per study, local folder):")
    for label, seconds in totals.items():
        each = seconds / count * 1000
        print(f"  {label:13s} {each:6.2f} ms per upload  ({each / base:4.2f} x the default study)")

    study = read_registry(store, prefix).get("capped1")
    assert study is not None
    ids = [f"P{i:07d}" for i in range(args.admitted)]
    store.put(admissions_key(prefix, "capped1"), json.dumps({"participants": ids}).encode())
    size = len(store.get(admissions_key(prefix, "capped1")).body)
    started = time.perf_counter()
    for n in range(20):
        admit_to_capped_study(store, prefix, study, f"NEW{n}")
    each = (time.perf_counter() - started) / 20 * 1000
    print(f"one admission with {args.admitted} participants in the record ({size} bytes): {each:.1f} ms")
    store.close()


if __name__ == "__main__":
    main()
