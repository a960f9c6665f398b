"""Browser module figures against their budgets: sizes, and main-thread time per call in headless Chromium.

Run: ``.venv/bin/python bench/bench_uploader.py [--calls 200]``. It prints

* the sizes of js/data-uploader.js (as served, and gzip -9) and js/jspsych-collector.js (gzip -9);
* for ``uploadUserStatus`` and ``uploadSubmissionData`` (a jsonDump of about 30 KB), loaded from a
  real collector on a temporary folder: the synchronous part (what blocks the study's code,
  performance.now() around the call; the budget is on its median) and the whole main-thread cost
  (Chromium's TaskDuration over all calls, the request and its answer included);
* for the jsPsych hook ``on_data_update``: the synchronous part per trial.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.chromium import launch_chromium  # noqa: E402
from tests.support.collector_process import CollectorProcess  # noqa: E402
from tests.support.settings import local_settings  # noqa: E402

MODULE = REPO / "js" / "data-uploader.js"
HOOKS = REPO / "js" / "jspsych-collector.js"
BUDGETS = {"served": 30_000, "gzipped": 8_000, "hooks gzipped": 3_000, "submission ms": 1.0, "trial ms": 0.3}

# Study keys as the study leaves them after a few weeks, and a jsonDump of about 40 KB.
SETUP = """async ([url, regions]) => {
  const m = await import(url + '/js/data-uploader.js');
  m.configureUploader({ collectorUrl: url, statusIntervalMs: 0 });
  const history = Array.from({ length: 30 },
    (_, i) => ({ start: i * 1e6, end: i * 1e6 + 9e5, completed: true }));
  Object.entries({
    study_has_seen_participant_setup: 'true', study_has_seen_welcome: 'true', study_has_seen_tutorial: 'true',
    study_tutorial_completed: 'true', study_weekly_session_count: '3', study_week_start_date: '2026-11-23',
    study_last_awesf_date: '2026-11-24', study_total_sessions_started: '31',
    study_total_sessions_completed: '30',
    study_total_session_time: '27000000', study_session_history: JSON.stringify(history),
    study_current_session_start: String(Date.now()), selectedVolcano: 'Okmok', selectedMode: 'study',
    participant_response_BENCH01: JSON.stringify({ q1: 'yes', q2: 4, q3: 'some free text answer' }),
  }).forEach(([k, v]) => localStorage.setItem(k, v));
  window.m = m;
  window.dump = { regions: Array.from({ length: regions }, (_, i) => ({
    id: i, start: i * 1.5, end: i * 1.5 + 1, label: 'tremor', confidence: 0.8,
    features: { amplitude: 0.1 * i, frequency: 2.5 } })),
    surveyResponses: { q1: 'yes' }, timing: { total: 1234 }, completion: 'qualtrics' };
  return JSON.stringify(window.dump).length;
}"""

# jsPsych-like trials through the hooks, one after another as jsPsych makes them (each returns at once).
TIME_TRIALS = """async ([url, calls]) => {
  const { collectorHooks } = await import(url + '/js/jspsych-collector.js');
  const hooks = collectorHooks({ participantId: 'BENCH02', collectorUrl: url });
  const sync = [];
  for (let i = 0; i < calls; i += 1) {
    const trial = { trial_type: 'html-keyboard-response', trial_index: i, rt: 400 + i, response: 'f',
      stimulus: '<p>+</p>', time_elapsed: 1000 * i };
    const t0 = performance.now();
    hooks.on_data_update(trial);
    sync.push(performance.now() - t0);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await hooks.flush(10000);
  return sync.sort((a, b) => a - b);
}"""

# Sequential calls: each one finishes before the next, as a study makes them.
TIME_CALLS = """async ([kind, calls]) => {
  const sync = [];
  for (let i = 0; i < calls; i += 1) {
    const t0 = performance.now();
    const pending = kind === 'status'
      ? m.uploadUserStatus('BENCH01') : m.uploadSubmissionData('BENCH01', dump);
    sync.push(performance.now() - t0);
    const answer = await pending;
    if (answer.status !== window.expected) throw new Error(JSON.stringify(answer));
  }
  return sync;
}"""


def task_seconds(cdp: Any) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "TaskDuration")


def measure(page: Any, cdp: Any, kind: str, calls: int, expected: str) -> tuple[float, float, float]:
    page.evaluate(f"window.expected = {expected!r}")
    before = task_seconds(cdp)
    sync = sorted(page.evaluate(TIME_CALLS, [kind, calls]))
    total_ms = (task_seconds(cdp) - before) * 1000 / calls
    return sync[len(sync) // 2], sync[int(len(sync) * 0.95)], total_ms


def report(label: str, figures: tuple[float, float, float]) -> None:
    print("{:52} {:9.3f}ms {:7.3f}ms {:14.3f}ms".format(label, *figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--regions", type=int, default=250, help="size of the benchmark jsonDump")
    args = parser.parse_args()

    raw = MODULE.read_bytes()
    gzipped = len(gzip.compress(raw, 9))
    hooks = len(gzip.compress(HOOKS.read_bytes(), 9))
    print(f"js/data-uploader.js: {len(raw)} bytes served (budget {BUDGETS['served']}), ", end="")
    print(f"{gzipped} bytes gzipped (budget {BUDGETS['gzipped']})")
    print(f"js/jspsych-collector.js: {hooks} bytes gzipped (budget {BUDGETS['hooks gzipped']})")

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        collector = CollectorProcess(local_settings(Path(tmp) / "data"))
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.goto(collector.url + "/healthz")
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            dump_bytes = page.evaluate(SETUP, [collector.url, args.regions])
            print(
                f"Chromium {browser.version}, {args.calls} sequential calls each, jsonDump {dump_bytes} bytes"
            )
            print(f"{'call':52} {'sync median':>11} {'sync p95':>9} {'main thread/call':>16}")
            rows = [
                ("uploadUserStatus, collector up", "status", "success"),
                ("uploadSubmissionData, collector up", "submission", "success"),
            ]
            for label, kind, expected in rows:
                report(label, measure(page, cdp, kind, args.calls, expected))
            trials = page.evaluate(TIME_TRIALS, [collector.url, args.calls])
            median, p95 = trials[len(trials) // 2], trials[int(len(trials) * 0.95)]
            print("{:52} {:9.3f}ms {:7.3f}ms".format("on_data_update (jsPsych hooks)", median, p95))
            print(
                f"budgets: uploadSubmissionData sync median < {BUDGETS['submission ms']} ms, "
                f"on_data_update median < {BUDGETS['trial ms']} ms"
            )
            collector.stop()  # now every call fails and stays queued: the queue grows to `calls` items
            page.evaluate(
                "m.configureUploader({ retryBaseMs: 3600000, retryMaxMs: 3600000, maxQueueItems: 100000 })"
            )
            label = f"uploadSubmissionData, collector down (0..{args.calls} queued)"
            report(label, measure(page, cdp, "submission", args.calls, "queued"))
        finally:
            browser.close()
            collector.stop()


if __name__ == "__main__":
    main()
