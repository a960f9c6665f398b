/**
 * jspsych-collector.js: saves every jsPsych trial to the collector as it finishes, and the whole
 * dataset at the end, so a closed tab, a crash or an early leaver loses no trial already shown.
 *
 *   import { collectorHooks } from 'https://collector.example/js/jspsych-collector.js';
 *   const hooks = collectorHooks({ participantId, collectorUrl: 'https://collector.example' });
 *   const jsPsych = initJsPsych({ ...hooks });
 *   await jsPsych.run(timeline.slice(hooks.session.completedTrials));  // resume where a reload left off
 *   await hooks.flush(5000);                                            // then redirect to Prolific
 *
 * It does not import jsPsych (any jsPsych 7 or 8 calls these hooks); it uses the uploader module
 * beside it, whose persistent queue, batching, backoff and exactly-once storage carry the trials.
 *
 * Sessions and resume (see docs/jspsych.md):
 * - A session is one run of the experiment by one participant. Its id is made here (unless the
 *   study passes `sessionId`) and remembered in this tab's sessionStorage and in localStorage.
 * - A reload of the tab, or reopening the experiment after the tab was closed, RESUMES the same
 *   session: same id, and trial indexes continue from the number of trials already recorded
 *   (`hooks.session.completedTrials`), so no index is ever reused and nothing already stored is
 *   stored again. jsPsych restarts its timeline at 0 after a reload: the study skips the trials
 *   already done (e.g. `timeline.slice(completedTrials)`) or shows them again, in which case the
 *   re-shown trials are recorded as new trials of the session (never overwriting the first ones).
 * - A session that finished (`on_finish` ran) is never resumed: the next run is a new session.
 * - Two tabs of the same participant open at once run two sessions (a tab resumes only a session
 *   whose page was closed), so concurrent tabs never write over each other's indexes. A tab that
 *   crashed without a `pagehide` leaves its session marked open: the next run is a new session.
 */

import * as uploaderModule from './data-uploader.js';

const NS = 'jspsychCollector.v1.';
const ID = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_TRIAL_INDEX = 100000; // the collector's bound on trialIndex
const GUARD_MS = 250; // flush's own deadline past the uploader's, for an uploader that never answers

// --- small, never-throwing storage helpers (storage may be missing, blocked or full)

function store(kind) {
  try {
    return globalThis[kind] || null;
  } catch {
    return null;
  } // sandboxed iframes throw on access
}

function read(storage, key) {
  try {
    return storage ? storage.getItem(key) : null;
  } catch {
    return null;
  }
}

function write(storage, key, value) {
  try {
    if (storage) {
      storage.setItem(key, value);
      return true;
    }
  } catch {
    /* full or blocked */
  }
  return false;
}

function readJson(storage, key) {
  try {
    const text = read(storage, key);
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

function randomId() {
  const c = globalThis.crypto;
  try {
    if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  } catch {
    /* insecure context */
  }
  const bytes = new Uint8Array(16);
  try {
    c.getRandomValues(bytes);
  } catch {
    for (let i = 0; i < 16; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  }
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function errorText(err) {
  try {
    return err && err.message ? String(err.message) : String(err);
  } catch {
    return 'unknown error';
  }
}

/** The trials of a jsPsych DataCollection, an array, or a single object, as an array of objects. */
function trialsOf(data) {
  try {
    if (data && typeof data.values === 'function') return [...data.values()];
    if (Array.isArray(data)) return [...data];
    if (data && typeof data === 'object') return [data];
  } catch {
    /* fall through */
  }
  return [];
}

// --- the session record: per session the next free index and whether it finished; per participant
// the unfinished sessions and whether a page is running each.

function sessionKeys(participantId, sessionId) {
  return {
    tab: `${NS}tab.${participantId}`, // sessionStorage: this tab's session (survives a reload)
    runs: `${NS}runs.${participantId}`, // localStorage: {sessionId: {open, at}} of unfinished sessions
    state: `${NS}session.${participantId}.${sessionId}`, // localStorage: {next, finished, runs}
  };
}

/** The participant's unfinished sessions and whether a page runs them: `{sessionId: {open, at}}`. */
function readRuns(local, key) {
  const runs = readJson(local, key);
  if (!runs || typeof runs !== 'object' || Array.isArray(runs)) return {};
  const clean = {};
  for (const [id, run] of Object.entries(runs)) {
    if (run && typeof run === 'object') clean[id] = { open: Boolean(run.open), at: Number(run.at) || 0 };
  }
  return clean;
}

const KEPT_RUNS = 10; // the unfinished sessions remembered per participant (newest first)

/** Record this session as open (a page runs it), closed (resumable) or finished (forgotten). */
function markRun(local, key, sessionId, state) {
  const runs = readRuns(local, key);
  if (state === 'finished') delete runs[sessionId];
  else {
    // Strictly after every other mark, so "most recently closed" is well defined within a millisecond.
    const latest = Math.max(0, ...Object.values(runs).map((run) => run.at));
    runs[sessionId] = { open: state === 'open', at: Math.max(Date.now(), latest + 1) };
  }
  const kept = Object.entries(runs)
    .sort((a, b) => b[1].at - a[1].at)
    .slice(0, KEPT_RUNS);
  write(local, key, JSON.stringify(Object.fromEntries(kept)));
}

function openSession(participantId, requestedSessionId, local, tab) {
  let sessionId;
  const keys0 = sessionKeys(participantId, '');
  const finishedOrMissing = (id) => {
    const state =
      readJson(local, sessionKeys(participantId, id).state) ||
      readJson(tab, sessionKeys(participantId, id).state);
    return !state || state.finished;
  };
  if (requestedSessionId !== undefined && requestedSessionId !== null) {
    sessionId = String(requestedSessionId);
  } else {
    const mine = read(tab, keys0.tab);
    // The most recently closed unfinished session: what a participant reopening the link left.
    const closed = Object.entries(readRuns(local, keys0.runs))
      .filter(([id, run]) => ID.test(id) && !run.open && !finishedOrMissing(id))
      .sort((a, b) => b[1].at - a[1].at);
    if (mine && ID.test(mine) && !finishedOrMissing(mine)) {
      sessionId = mine; // this tab reloaded: its own run goes on
    } else if (!mine && closed.length) {
      sessionId = closed[0][0]; // the tab was closed and the experiment reopened
    } else {
      sessionId = randomId();
    }
  }
  const keys = sessionKeys(participantId, sessionId);
  const state = readJson(local, keys.state) || readJson(tab, keys.state) || {};
  const next = Number.isInteger(state.next) && state.next >= 0 ? state.next : 0;
  const runs = Number.isInteger(state.runs) && state.runs >= 0 ? state.runs : 0;
  return { sessionId, keys, next, runs, resumed: next > 0 || runs > 0 };
}

// --- the hooks

/**
 * Hooks that save a jsPsych experiment's data to the collector: spread them into `initJsPsych`.
 *
 * - `on_data_update(trialData)` queues the finished trial (persistently, before any network) and
 *   returns at once; it never awaits the network and never throws.
 * - `on_finish(data)` uploads the whole dataset (`data.values()`, or `jsPsych.data.get()` when
 *   called without data) as the participant's submission, with `sessionId` at its top level.
 * - `flush(timeoutMs)` resolves to `{stored, remaining}` once everything queued is stored or the
 *   time is up; call it before redirecting (e.g. to Prolific). Never rejects.
 *
 * The stored trial index is the session-wide sequence number of the trial: jsPsych's `trial_index`
 * plus the number of trials recorded before this page load (0 on the first load), never reused.
 *
 * @param {Object} options
 * @param {string} options.participantId 1 to 64 letters, digits, `_` or `-` (e.g. Prolific's PROLIFIC_PID)
 * @param {string} [options.collectorUrl] the collector's origin (default: the page's own origin)
 * @param {string} [options.sessionId] a session id of the study's own (1 to 64 of `[A-Za-z0-9_-]`);
 *   default: one made here and kept across reloads of the run (see the module comment)
 * @param {Object<string, *>} [options.extra] fields added to every trial and to the submission
 *   (a trial's own field of the same name wins), e.g. `{study: 'stroop-v2'}`
 * @param {Object} [options.uploader] an instance from `createUploader` (default: one made here)
 * @param {Object} [options.uploaderOptions] more options for `createUploader` (retry, timeouts, onEvent, …)
 * @param {Object} [options.jsPsych] the jsPsych instance, for `on_finish()` called without data
 * @returns {{on_data_update: function(Object): void, on_finish: function(Object=): void,
 *   flush: function(number=): Promise<{stored: number, remaining: number, error?: string}>,
 *   session: {id: string, completedTrials: number, resumed: boolean, run: number}}}
 */
export function collectorHooks(options = {}) {
  const opts = options && typeof options === 'object' ? options : {};
  const participantId =
    opts.participantId === undefined || opts.participantId === null ? '' : String(opts.participantId);
  const extra =
    opts.extra && typeof opts.extra === 'object' && !Array.isArray(opts.extra) ? { ...opts.extra } : {};
  const local = store('localStorage');
  const tab = store('sessionStorage');
  let problem = null;
  if (!ID.test(participantId)) problem = 'participantId must be 1 to 64 letters, digits, _ or -';
  if (opts.sessionId !== undefined && opts.sessionId !== null && !ID.test(String(opts.sessionId))) {
    problem = 'sessionId must be 1 to 64 letters, digits, _ or -';
  }

  let opened;
  try {
    opened = openSession(participantId, problem ? null : opts.sessionId, local, tab);
  } catch {
    opened = {
      sessionId: randomId(),
      keys: sessionKeys(participantId, 'unknown'),
      next: 0,
      runs: 0,
      resumed: false,
    };
  }
  const { sessionId, keys } = opened;
  const base = opened.next; // trials recorded before this page load
  const run = opened.runs; // 0 on the session's first page load, then 1, 2, … per resume
  let next = base; // the next free index of the session
  let finished = false;

  const saveState = () => {
    const text = JSON.stringify({ next, finished, runs: run + 1 });
    // localStorage survives a closed tab; sessionStorage is the fallback when it is blocked or full.
    if (!write(local, keys.state, text)) write(tab, keys.state, text);
  };
  const mark = (state) => {
    if (finished && state !== 'finished') return;
    try {
      markRun(local, keys.runs, sessionId, state);
    } catch {
      /* storage trouble: a new session next time */
    }
  };
  if (!problem) {
    if (opts.sessionId === undefined || opts.sessionId === null) write(tab, keys.tab, sessionId);
    saveState();
    mark('open');
    try {
      const w = globalThis.window;
      if (w && typeof w.addEventListener === 'function') {
        w.addEventListener('pagehide', () => mark('closed')); // closed, reloaded or navigated away: resumable
        w.addEventListener('pageshow', (event) => {
          if (event && event.persisted) mark('open');
        });
      }
    } catch {
      /* no page */
    }
  }

  let uploader = opts.uploader || null;
  if (!uploader && !problem) {
    try {
      if (typeof uploaderModule.createUploader === 'function') {
        // No participantId here: the study's status keys (periodic and page-hide status uploads) are
        // not a jsPsych study's business; pass it in uploaderOptions to have them.
        uploader = uploaderModule.createUploader({
          ...(opts.uploaderOptions || {}),
          collectorUrl: opts.collectorUrl,
        });
      } else {
        problem = 'this data-uploader.js has no createUploader: update the collector';
      }
    } catch (err) {
      problem = `the uploader could not be created: ${errorText(err)}`;
    }
  }
  if (problem) {
    try {
      console.warn(`jspsych-collector: ${problem}; nothing will be uploaded`);
    } catch {
      /* no console */
    }
  }

  const pending = new Set(); // this page's upload calls not answered yet
  const track = (promise) => {
    const settled = Promise.resolve(promise).then(
      (answer) => answer,
      (err) => ({ status: 'error', error: errorText(err) }),
    );
    pending.add(settled);
    settled.then(() => pending.delete(settled));
    return settled;
  };

  /** Queue one finished trial; returns at once (never awaits the network, never throws). */
  function on_data_update(trialData) {
    try {
      if (problem || !uploader) return;
      const data =
        trialData && typeof trialData === 'object' && !Array.isArray(trialData)
          ? trialData
          : { value: trialData };
      const own =
        Number.isInteger(data.trial_index) && data.trial_index >= 0 ? base + data.trial_index : next;
      const index = Math.max(own, next); // an index is never reused within a session
      if (index > MAX_TRIAL_INDEX) return;
      next = index + 1;
      saveState(); // before the upload call: a reload right after must not reuse the index
      const record = { ...extra, ...data, session_run: run };
      track(uploader.uploadTrialData(participantId, sessionId, index, record));
    } catch {
      /* never into the experiment */
    }
  }

  /** Upload the whole dataset as the participant's submission (queued first; does not wait). */
  function on_finish(data) {
    try {
      if (problem || !uploader) return;
      let source = data;
      if (source === undefined && opts.jsPsych) source = opts.jsPsych.data.get();
      const trials = trialsOf(source);
      finished = true;
      saveState(); // a reload after the end starts a new session
      mark('finished');
      const submission = {
        ...extra,
        sessionId,
        sessionRun: run,
        resumedFromTrial: base,
        trialCount: trials.length,
        trials,
      };
      track(uploader.uploadSubmissionData(participantId, submission));
    } catch {
      /* never into the experiment */
    }
  }

  /**
   * Wait until this page's uploads are answered and the uploader's queue is sent, or `timeoutMs`.
   * @param {number} [timeoutMs=5000]
   * @returns {Promise<{stored: number, remaining: number, error?: string}>} never rejects
   */
  function flush(timeoutMs = 5000) {
    const limit = Math.max(0, Number(timeoutMs) || 0);
    const queueLength = () => {
      try {
        const state =
          uploader && typeof uploader.getQueueState === 'function' ? uploader.getQueueState() : null;
        if (state && Array.isArray(state.items)) return state.items.length;
      } catch {
        /* fall back to what this page knows */
      }
      return pending.size;
    };
    const work = (async () => {
      if (problem || !uploader) return { stored: 0, remaining: 0, error: problem || 'no uploader' };
      if (typeof uploader.flush === 'function') {
        // The uploader's flush waits for calls still in flight too, and counts what they stored.
        const summary = await uploader.flush(limit);
        const remaining =
          summary && Number.isFinite(Number(summary.remaining)) ? Number(summary.remaining) : queueLength();
        return { stored: Number(summary && summary.stored) || 0, remaining };
      }
      const answers = await Promise.all([...pending]); // an uploader without flush: this page's calls
      return {
        stored: answers.filter((answer) => answer && answer.status === 'success').length,
        remaining: queueLength(),
      };
    })().catch((err) => ({ stored: 0, remaining: queueLength(), error: errorText(err) }));
    let timer = null;
    // A guard only: the uploader's flush keeps to the time itself; this one ends a flush that hangs.
    const timeout = new Promise((resolve) => {
      try {
        timer = setTimeout(
          () => resolve({ stored: 0, remaining: queueLength(), error: `not all sent within ${limit} ms` }),
          limit + GUARD_MS,
        );
      } catch {
        resolve({ stored: 0, remaining: queueLength() });
      }
    });
    return Promise.race([work, timeout]).finally(() => {
      try {
        clearTimeout(timer);
      } catch {
        /* ignore */
      }
    });
  }

  return {
    on_data_update,
    on_finish,
    flush,
    session: { id: sessionId, completedTrials: base, resumed: opened.resumed, run },
  };
}
