"""Does a huge participant page stall the collector? (a script that prints figures, not a test)

Starts a real ``collector serve`` process on a temporary local folder, uploads through the API
the largest legal participant page: a status upload just under ``MAX_UPLOAD_BYTES`` whose
sessionHistory is as wide as it can be (every record has its own keys, so every key would be
a column), plus a submission at the body limit. Then, in the same run:

* a no-load baseline: ``/healthz`` latency, probed one request at a time;
* a control: ``/healthz`` while the same clients fetch a tiny page (the login form) over and
  over, which is what any busy client costs on this machine;
* under load: ``/healthz`` latency while ``--renderers`` clients fetch that participant page
  (and the view of the big submission) over and over.

Prints p50/p99 of both (target under load: p99 < 100 ms) and the page's size and render time.

    .venv/bin/python bench/bench_admin_stall.py [--probes 300] [--renderers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers live in tests/support
from tests.support.collector_process import CollectorProcess
from tests.support.settings import TEST_ADMIN_PASSWORD, local_settings

PID = "BENCHWIDE"


def wide_status(limit: int) -> bytes:
    """The widest sessionHistory that fits in ``limit`` bytes: records of 50 keys, none shared."""

    def body(records: int) -> bytes:
        history = [{f"k{r}_{c}": c for c in range(50)} for r in range(records)]
        upload = {"participantId": PID, "uploadType": "status", "sessionHistory": history}
        return json.dumps(upload, separators=(",", ":")).encode()

    low, high = 1, 100_000
    while low < high:  # the most records that fit
        middle = (low + high + 1) // 2
        if len(body(middle)) <= limit:
            low = middle
        else:
            high = middle - 1
    return body(low)


def big_submission(limit: int) -> bytes:
    upload = {"participantId": PID, "uploadType": "submission", "submissionData": {"text": ""}}
    room = limit - len(json.dumps(upload, separators=(",", ":")).encode()) - 64
    upload["submissionData"] = {"text": "x" * room}
    return json.dumps(upload, separators=(",", ":")).encode()


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms   (n={len(ordered)})"


def probe(url: str, count: int, interval: float) -> list[float]:
    samples = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(count):
            started = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            samples.append(time.perf_counter() - started)
            time.sleep(interval)
    return samples


def under_load(
    url: str, cookies: httpx.Cookies, paths: list[str], args: argparse.Namespace
) -> tuple[list[float], list[float], list[int]]:
    """/healthz latencies while ``args.renderers`` clients fetch ``paths`` over and over; and theirs."""
    stop = threading.Event()
    renders: list[float] = []
    sizes: list[int] = []

    def render_forever() -> None:
        with httpx.Client(base_url=url, timeout=120, cookies=cookies) as http:
            n = 0
            while not stop.is_set():
                started = time.perf_counter()
                answer = http.get(paths[n % len(paths)])
                assert answer.status_code == 200, answer.status_code
                renders.append(time.perf_counter() - started)
                sizes.append(len(answer.content))
                n += 1

    threads = [threading.Thread(target=render_forever, daemon=True) for _ in range(args.renderers)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # let the renderers get going
    loaded = probe(url, args.probes, args.interval)
    stop.set()
    for thread in threads:
        thread.join()
    return loaded, renders, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--renderers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between /healthz probes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        settings = local_settings(Path(folder) / "data")
        limit = settings.max_upload_bytes
        with CollectorProcess(settings, log_path=Path(folder) / "collector.log") as collector:
            headers = {"Content-Type": "application/json"}
            status = wide_status(limit - 1024)
            for body in (status, big_submission(limit - 1024)):
                answer = httpx.post(
                    collector.url + "/api/upload-user-data", content=body, headers=headers, timeout=60
                )
                assert answer.status_code == 200, answer.text[:300]
            records = len(json.loads(status)["sessionHistory"])
            print(f"status.json: {len(status) / 1e6:.2f} MB, {records} session records x 50 distinct keys")

            session = httpx.Client(base_url=collector.url, timeout=120, follow_redirects=False)
            login = session.post("/admin/login", data={"password": TEST_ADMIN_PASSWORD})
            assert login.status_code == 303, login.text[:200]
            listing = session.get(f"/admin/participants/{PID}")
            assert listing.status_code == 200
            submission = next(
                line.split('href="', 1)[1].split('"', 1)[0]
                for line in listing.text.splitlines()
                if "/view/submissions/" in line
            )

            baseline = probe(collector.url, args.probes, args.interval)
            heavy = [f"/admin/participants/{PID}", f"/admin/participants/{PID}?sessions_page=40", submission]
            # The same clients fetching a tiny page: what any busy client costs on this machine.
            control, _, _ = under_load(collector.url, session.cookies, ["/admin/login"], args)
            loaded, renders, sizes = under_load(collector.url, session.cookies, heavy, args)
            session.close()

    print(f"/healthz, no load:                        {percentiles(baseline)}")
    print(f"/healthz, {args.renderers} clients on a tiny page:     {percentiles(control)}")
    print(
        f"/healthz, {args.renderers} clients rendering the page: {percentiles(loaded)}  (target p99 < 100 ms)"
    )
    print(
        f"participant page / big file view, served: {percentiles(renders)}, largest {max(sizes) / 1e3:.0f} kB"
    )


if __name__ == "__main__":
    main()
