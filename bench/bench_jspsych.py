"""jsPsych per-trial saving figures: storage writes and requests per trial, main-thread ms per on_data_update.

Run: ``.venv/bin/python bench/bench_jspsych.py [--trials 300] [--auto-ms 5]`` after ``npm ci``. It starts
moto's S3 server behind a counting proxy and a real collector on it, serves the repository root, and runs
examples/jspsych/ in headless Chromium: ``--trials`` keyboard trials that end on their own after
``--auto-ms`` (no key presses needed), then the survey. It prints

* storage writes per trial: PUTs that reached the S3 server, over the trials stored (the end's
  submission and status writes are shown apart);
* HTTP requests per trial from the page to the collector (the uploader sends the trials of each
  ``batchDelayMs`` window, 100 ms by default, in one batch request);
* main-thread ms per ``on_data_update`` (the synchronous part jsPsych waits for between trials,
  performance.now() around the hook): median, p95 and max. The target is a median under 1 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "backend"))

from tests.support.chromium import launch_chromium  # noqa: E402
from tests.support.collector_process import CollectorProcess  # noqa: E402
from tests.support.helper_servers import FaultProxy, static_site  # noqa: E402
from tests.support.settings import s3_settings  # noqa: E402

PARTICIPANT = "BENCHJSPSYCH"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(trials: int, auto_ms: int) -> None:
    from moto.server import ThreadedMotoServer
    from playwright.sync_api import sync_playwright

    if not (REPO / "node_modules" / "jspsych").is_dir():
        raise SystemExit("jsPsych is not installed: run `npm ci` at the repository root first")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    counter = FaultProxy(f"http://{host}:{port}")  # forwards everything, and counts it
    site = static_site(REPO)
    settings = s3_settings(counter.url, allowed_origins=site.url)
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            CollectorProcess(settings, log_path=Path(tmp) / "collector.log") as collector,
            sync_playwright() as playwright,
        ):
            browser = launch_chromium(playwright)
            page = browser.new_context().new_page()
            requests: list[str] = []
            page.on(
                "request",
                lambda r: (
                    requests.append(r.url)
                    if r.method == "POST" and "/api/upload-user-data" in r.url
                    else None
                ),
            )
            query = urlencode(
                {
                    "collector": collector.url,
                    "participant": PARTICIPANT,
                    "trials": trials,
                    "auto": auto_ms,
                    "measure": 1,
                    "statusIntervalMs": 0,
                    "flushMs": 60000,
                }
            )
            page.goto(f"{site.url}/examples/jspsych/index.html?{query}")
            page.wait_for_selector("#jspsych-survey-text-next", timeout=trials * (auto_ms + 200) + 60000)
            timings: list[float] = page.evaluate("window.experiment.timings")
            page.fill("#input-0", "fine")
            page.click("#jspsych-survey-text-next")
            page.wait_for_selector("body[data-done=true]", timeout=120000)  # after flush: all stored
            browser.close()
            # Writes of participant data (the bucket's creation went through the proxy too).
            puts = [
                path for method, path, _ in counter.forwarded if method == "PUT" and "/participants/" in path
            ]
    finally:
        site.stop()
        counter.stop()
        moto.stop()

    stored_trials = trials + 1  # the survey is a trial too
    trial_puts = sum(1 for path in puts if "/trials/" in path)
    per_trial = trial_puts / stored_trials
    per_request = len(requests) / stored_trials
    median, p95, mean = statistics.median(timings), percentile(timings, 0.95), statistics.fmean(timings)
    print(f"{trials} keyboard trials ending after {auto_ms} ms each, then a survey; collector on S3 (moto)")
    print(f"  storage writes for trials: {trial_puts} PUTs, {stored_trials} trials ({per_trial:.2f} each)")
    print(f"  other storage writes (submission, status.json): {len(puts) - trial_puts}")
    print(f"  upload requests from the page: {len(requests)} ({per_request:.2f} per trial, batches included)")
    # performance.now() is coarsened (0.1 ms in Chromium here): the mean over all calls is finer.
    print(f"  main-thread ms per on_data_update ({len(timings)} calls): median {median:.3f}, p95 {p95:.3f},")
    print(f"    mean {mean:.4f}, max {max(timings):.3f} (target: median < 1 ms)")
    if trial_puts < stored_trials:
        print("  WARNING: fewer trial writes than trials: trials left unstored, or batched into one object?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--auto-ms", type=int, default=5, help="a keyboard trial ends on its own after this")
    args = parser.parse_args()
    run(args.trials, args.auto_ms)


if __name__ == "__main__":
    main()
