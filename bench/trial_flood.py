"""Stream trials for one participant from this process until told to stop (a load for erasure tests).

    python bench/trial_flood.py URL PARTICIPANT KEY SECONDS [THREADS]

Each thread posts trials of its own session, index after index, over one keep-alive connection,
for at most SECONDS (bounded: loopback only, stops by itself). Prints one JSON line at the end:
how many trials were answered 200, 410 and otherwise. Used by tests/test_erasure_final.py and
bench/bench_erasure_flood.py.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter

import httpx


def stream(
    url: str, pid: str, key: str, until: float, session: str, counts: Counter, lock: threading.Lock
) -> None:
    with httpx.Client(timeout=10) as client:
        index = 0
        while time.monotonic() < until and index <= 100_000:
            body = {
                "participantId": pid,
                "participantKey": key,
                "uploadType": "trial",
                "sessionId": session,
                "trialIndex": index,
                "trialData": {"rt": index},
            }
            try:
                status = client.post(f"{url}/api/upload-user-data", json=body).status_code
            except httpx.TransportError:
                status = 0
            with lock:
                counts[str(status)] += 1
            index += 1


def main() -> None:
    url, pid, key, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    until = time.monotonic() + seconds
    counts: Counter = Counter()
    lock = threading.Lock()
    workers = [
        threading.Thread(target=stream, args=(url, pid, key, until, f"flood-{n}", counts, lock))
        for n in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps(dict(counts)), flush=True)


if __name__ == "__main__":
    main()
