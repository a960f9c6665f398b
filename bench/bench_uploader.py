"""Browser module figures against their budgets, before (a git ref, main by default) and after (this tree).

Run: ``.venv/bin/python bench/bench_uploader.py [--before main] [--calls 200]``. It prints

* sizes, as served and gzip -9: js/data-uploader.js alone, and everything a page loads to use
  ``uploadSubmissionData`` (data-uploader.js and every module it imports, followed transitively;
  each file is fetched and compressed on its own, so the total is the sum); apart from that total,
  the modules it loads on first use (``import('./x.js')``, js/uploader-extras.js), which a page that
  never calls ``restoreUserStatus`` or ``downloadBackup`` never fetches; js/jspsych-collector.js;
* for ``uploadUserStatus`` and ``uploadSubmissionData`` (a jsonDump of about 30 KB), loaded from a
  real collector on a temporary folder: the synchronous part (what blocks the study's code,
  performance.now() around the call; the budget is on its median) and the whole main-thread cost
  (Chromium's TaskDuration over all calls, the request and its answer included);
* for the jsPsych hook ``on_data_update``: the synchronous part per trial.

The before figures come from a collector run on ``git archive <before>`` in a temporary folder, in the
same run as the after figures: compare the two columns, not figures from different runs.
"""

from __future__ import annotations

import argparse
import gzip
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.chromium import launch_chromium  # noqa: E402
from tests.support.collector_process import CollectorProcess  # noqa: E402
from tests.support.settings import local_settings  # noqa: E402

BUDGETS = {
    "data-uploader.js served": 30_000,
    "data-uploader.js gzip -9": 8_000,
    "jspsych-collector.js gzip -9": 3_000,
    "uploadSubmissionData sync median ms": 1.0,
    "on_data_update sync median ms": 0.3,
}
IMPORT = re.compile(r"""^(?:import|export)\b[^;]*?\bfrom\s+'\./([\w-]+\.js)'""", re.MULTILINE)
LAZY_IMPORT = re.compile(r"""\bimport\(\s*'\./([\w-]+\.js)'\s*\)""")  # loaded on first use only

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


def page_load(read: Callable[[str], bytes], entry: str = "data-uploader.js") -> dict[str, bytes]:
    """`entry` and every module it imports (``from './x.js'``), transitively: what a page fetches."""
    files: dict[str, bytes] = {}
    pending = [entry]
    while pending:
        name = pending.pop()
        if name not in files:
            files[name] = read(name)
            pending.extend(IMPORT.findall(files[name].decode()))
    return files


def gz(data: bytes) -> int:
    return len(gzip.compress(data, 9))


def sizes(read: Callable[[str], bytes]) -> dict[str, Any]:
    loaded = page_load(read)
    lazy: dict[str, bytes] = {}
    for text in loaded.values():
        for name in LAZY_IMPORT.findall(text.decode()):
            lazy.update({n: b for n, b in page_load(read, name).items() if n not in loaded})
    return {
        "data-uploader.js served": len(loaded["data-uploader.js"]),
        "data-uploader.js gzip -9": gz(loaded["data-uploader.js"]),
        "page load: files": " ".join(sorted(loaded)),
        "page load served": sum(len(b) for b in loaded.values()),
        "page load gzip -9 (sum per file)": sum(gz(b) for b in loaded.values()),
        "on first use: files": " ".join(sorted(lazy)) or "-",
        "on first use served (not in page load)": sum(len(b) for b in lazy.values()),
        "on first use gzip -9 (not in page load)": sum(gz(b) for b in lazy.values()),
        "jspsych-collector.js gzip -9": gz(read("jspsych-collector.js")),
    }


def task_seconds(cdp: Any) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "TaskDuration")


def measure(page: Any, cdp: Any, kind: str, calls: int, expected: str) -> tuple[float, float, float]:
    page.evaluate(f"window.expected = {expected!r}")
    before = task_seconds(cdp)
    sync = sorted(page.evaluate(TIME_CALLS, [kind, calls]))
    total_ms = (task_seconds(cdp) - before) * 1000 / calls
    return sync[len(sync) // 2], sync[int(len(sync) * 0.95)], total_ms


def timings(browser: Any, checkout: Path, calls: int, regions: int) -> dict[str, Any]:
    """Every timing row for the module `checkout` serves, on a fresh page of a fresh collector."""
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # No rate limit: hundreds of calls a second from one address are the benchmark, not an attack.
        settings = local_settings(Path(tmp) / "data", rate_limit_per_minute=0)
        collector = CollectorProcess(settings, checkout=checkout)
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(collector.url + "/healthz")
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            rows["jsonDump bytes"] = page.evaluate(SETUP, [collector.url, regions])
            status = measure(page, cdp, "status", calls, "success")
            submission = measure(page, cdp, "submission", calls, "success")
            trials = page.evaluate(TIME_TRIALS, [collector.url, calls])
            rows["uploadSubmissionData sync median ms"] = submission[0]
            rows["on_data_update sync median ms"] = trials[len(trials) // 2]
            rows["uploadUserStatus sync median / p95 / main thread ms"] = status
            rows["uploadSubmissionData sync median / p95 / main thread ms"] = submission
            rows["on_data_update sync p95 ms"] = trials[int(len(trials) * 0.95)]
            collector.stop()  # now every call fails and stays queued: the queue grows to `calls` items
            page.evaluate(
                "m.configureUploader({ retryBaseMs: 3600000, retryMaxMs: 3600000, maxQueueItems: 100000 })"
            )
            label = f"uploadSubmissionData, collector down (0..{calls} queued) ms"
            rows[label] = measure(page, cdp, "submission", calls, "queued")
        finally:
            context.close()
            collector.stop()
    return rows


def show(value: Any) -> str:
    if isinstance(value, tuple):
        return " / ".join(f"{v:.3f}" for v in value)
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="git ref of the before figures")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--regions", type=int, default=250, help="size of the benchmark jsonDump")
    args = parser.parse_args()

    command = ["git", "-C", str(REPO), "archive", args.before]
    archive = subprocess.run(command, capture_output=True, check=True).stdout
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as old, sync_playwright() as playwright:
        with tarfile.open(fileobj=BytesIO(archive)) as tree:
            tree.extractall(old, filter="data")
        before_tree, after_tree = Path(old), REPO
        table = [sizes(lambda name: (before_tree / "js" / name).read_bytes())]
        table.append(sizes(lambda name: (after_tree / "js" / name).read_bytes()))
        browser = launch_chromium(playwright)
        try:
            print(f"Chromium {browser.version}, {args.calls} sequential calls each")
            for tree, row in zip((before_tree, after_tree), table, strict=True):
                row.update(timings(browser, tree, args.calls, args.regions))
        finally:
            browser.close()

    before, after = table
    for label, row in (("before", before), ("after", after)):
        lazy = row.pop("on first use: files")
        print(f"page load {label}: {row.pop('page load: files')}; on first use: {lazy}")
    print(f"{'':62} {'before (' + args.before + ')':>22} {'after':>22} {'budget':>8}")
    for name, value in after.items():
        budget = show(BUDGETS.get(name, ""))
        print(f"{name:62} {show(before.get(name, '')):>22} {show(value):>22} {budget:>8}")


if __name__ == "__main__":
    main()
