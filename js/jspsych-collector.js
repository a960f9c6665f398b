/**
 * jspsych-collector.js: saves every jsPsych trial as it finishes, and the whole dataset at the end,
 * through the uploader beside it. Sessions, resume and options: docs/jspsych.md.
 *
 *   const hooks = collectorHooks({ participantId });
 *   const jsPsych = initJsPsych({ ...hooks });
 *   await jsPsych.run(timeline.slice(hooks.session.completedTrials));
 *   await hooks.flush(5000); // then redirect
 */

import {
  ID_PATTERN,
  ID_RULE,
  MAX_TRIAL_INDEX,
  errorText,
  globalStorage,
  isPlainObject,
  newId,
  readJson,
  readRaw,
  writeRaw,
} from './collector-common.js';
import { createUploader } from './data-uploader.js';

const NS = 'jspsychCollector.v1.';
const KEPT_RUNS = 10; // unfinished sessions remembered per participant
const GUARD_MS = 250; // flush ends this long after the uploader's own deadline, whatever it does

const trialsOf = (data) =>
  typeof data?.values === 'function'
    ? [...data.values()]
    : Array.isArray(data)
      ? [...data]
      : isPlainObject(data)
        ? [data]
        : [];

/** The trials a jsPsych timeline will run (each node once per repetition and timeline variable). */
export function countTrials(timeline) {
  let count = 0;
  for (const node of Array.isArray(timeline) ? timeline : [timeline]) {
    const inner = Array.isArray(node?.timeline) ? countTrials(node.timeline) : 1;
    const variables = Array.isArray(node?.timeline_variables) ? node.timeline_variables.length || 1 : 1;
    count += inner * variables * (Number.isInteger(node?.repetitions) ? node.repetitions : 1);
  }
  return count;
}

/** `{sessionId: {open, at}}`: the participant's unfinished sessions, and whether a page runs each. */
function readRuns(local, key) {
  const runs = readJson(local, key);
  const clean = {};
  for (const [id, run] of Object.entries(isPlainObject(runs) ? runs : {})) {
    if (isPlainObject(run)) clean[id] = { open: Boolean(run.open), at: Number(run.at) || 0 };
  }
  return clean;
}

/** Mark a session open (a page runs it), closed (resumable) or finished (forgotten). */
function markRun(local, key, sessionId, state) {
  const runs = readRuns(local, key);
  if (state === 'finished') delete runs[sessionId];
  else {
    // Strictly after every other mark: "most recently closed" is defined within a millisecond.
    const latest = Math.max(0, ...Object.values(runs).map((run) => run.at));
    runs[sessionId] = { open: state === 'open', at: Math.max(Date.now(), latest + 1) };
  }
  const kept = Object.entries(runs).sort((a, b) => b[1].at - a[1].at);
  writeRaw(local, key, JSON.stringify(Object.fromEntries(kept.slice(0, KEPT_RUNS))));
}

function openSession(participantId, requested, local, tab) {
  const stateKey = (id) => `${NS}session.${participantId}.${id}`;
  const stateOf = (id) => readJson(local, stateKey(id)) || readJson(tab, stateKey(id));
  const unfinished = (id) => ID_PATTERN.test(id) && stateOf(id) && !stateOf(id).finished;
  const tabKey = `${NS}tab.${participantId}`;
  const runsKey = `${NS}runs.${participantId}`;
  let sessionId = requested;
  if (!sessionId) {
    const mine = readRaw(tab, tabKey);
    // The most recently closed unfinished session: what a participant reopening the link left.
    const closed = Object.entries(readRuns(local, runsKey))
      .filter(([id, run]) => !run.open && unfinished(id))
      .sort((a, b) => b[1].at - a[1].at);
    if (mine && unfinished(mine))
      sessionId = mine; // this tab reloaded
    else if (!mine && closed.length)
      sessionId = closed[0][0]; // closed, then reopened
    else sessionId = newId();
  }
  const state = stateOf(sessionId) || {};
  const next = Number.isInteger(state.next) && state.next >= 0 ? state.next : 0;
  const runs = Number.isInteger(state.runs) && state.runs >= 0 ? state.runs : 0;
  return { sessionId, stateKey: stateKey(sessionId), tabKey, runsKey, next, runs };
}

/**
 * Hooks that save a jsPsych experiment's data to the collector: spread them into `initJsPsych`.
 * `on_data_update` queues the trial and returns at once; `on_finish` uploads the dataset as the
 * submission; `flush(timeoutMs)` resolves to `{stored, remaining}`. None throws.
 * @param {Object} options
 * @param {string} options.participantId 1 to 64 letters, digits, `_` or `-`
 * @param {string} [options.collectorUrl] default: where the uploader module was loaded from
 * @param {string} [options.sessionId] default: made here and kept across reloads
 * @param {string} [options.studyId] sent with every upload
 * @param {number} [options.expectedTrials] sent with every trial (default: counted from `timeline`)
 * @param {Array} [options.timeline] the jsPsych timeline, to count `expectedTrials`
 * @param {Object<string, *>} [options.extra] fields added to every trial and to the submission
 * @param {Object} [options.uploader] an instance from `createUploader` (default: one made here)
 * @param {Object} [options.uploaderOptions] more options for `createUploader`
 * @param {Object} [options.jsPsych] the jsPsych instance, for `on_finish()` called without data
 * @returns {{on_data_update: Function, on_finish: Function, flush: Function,
 *   session: {id: string, completedTrials: number, resumed: boolean, run: number}}}
 */
export function collectorHooks(options = {}) {
  const opts = isPlainObject(options) ? options : {};
  const participantId = String(opts.participantId ?? '');
  const extra = isPlainObject(opts.extra) ? { ...opts.extra } : {};
  const local = globalStorage('localStorage');
  const tab = globalStorage('sessionStorage');
  const given = opts.sessionId ?? null;
  let problem = null;
  if (!ID_PATTERN.test(participantId)) problem = `participantId must be ${ID_RULE}`;
  if (given !== null && !ID_PATTERN.test(String(given))) problem = `sessionId must be ${ID_RULE}`;
  const expected = Number.isInteger(opts.expectedTrials)
    ? opts.expectedTrials
    : opts.timeline
      ? countTrials(opts.timeline)
      : null;
  const trialExtras = expected === null ? undefined : { expectedTrials: expected };

  let opened;
  try {
    opened = openSession(participantId, problem ? null : given && String(given), local, tab);
  } catch {
    opened = { sessionId: newId(), stateKey: `${NS}session.unknown`, next: 0, runs: 0 };
  }
  const { sessionId, runsKey } = opened;
  const base = opened.next; // trials recorded before this page load
  const run = opened.runs; // the session's page loads before this one
  let next = base;
  let finished = false;

  const saveState = () => {
    const text = JSON.stringify({ next, finished, runs: run + 1 });
    // localStorage survives a closed tab; sessionStorage is the fallback when it is blocked or full.
    if (!writeRaw(local, opened.stateKey, text)) writeRaw(tab, opened.stateKey, text);
  };
  const mark = (state) => {
    try {
      if (!finished || state === 'finished') markRun(local, runsKey, sessionId, state);
    } catch {
      // storage trouble: a new session next time
    }
  };

  let uploader = opts.uploader || null;
  if (!problem) {
    if (given === null) writeRaw(tab, opened.tabKey, sessionId);
    saveState();
    mark('open');
    try {
      const w = globalThis.window;
      w.addEventListener('pagehide', () => mark('closed'));
      w.addEventListener('pageshow', (event) => event?.persisted && mark('open'));
    } catch {
      // no page
    }
    try {
      // No participantId: the seed study's status uploads are not a jsPsych study's business.
      uploader =
        uploader ||
        createUploader({ ...opts.uploaderOptions, collectorUrl: opts.collectorUrl, studyId: opts.studyId });
    } catch (err) {
      problem = `the uploader could not be created: ${errorText(err)}`;
    }
  }
  if (problem) {
    try {
      console.warn(`jspsych-collector: ${problem}; nothing will be uploaded`);
    } catch {
      // no console
    }
  }

  const pending = new Set(); // this page's calls not answered yet
  const track = (call) => {
    const settled = Promise.resolve(call).catch((err) => ({ status: 'error', error: errorText(err) }));
    pending.add(settled);
    settled.then(() => pending.delete(settled));
  };

  function on_data_update(trialData) {
    try {
      if (problem) return;
      const data = isPlainObject(trialData) ? trialData : { value: trialData };
      const own =
        Number.isInteger(data.trial_index) && data.trial_index >= 0 ? base + data.trial_index : next;
      const index = Math.max(own, next); // never reused within a session
      if (index > MAX_TRIAL_INDEX) return;
      next = index + 1;
      saveState(); // before the upload: a reload right after must not reuse the index
      track(
        uploader.uploadTrialData(
          participantId,
          sessionId,
          index,
          { ...extra, ...data, session_run: run },
          trialExtras,
        ),
      );
    } catch {
      // never into the experiment
    }
  }

  function on_finish(data) {
    try {
      if (problem) return;
      const trials = trialsOf(data === undefined && opts.jsPsych ? opts.jsPsych.data.get() : data);
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
      // never into the experiment
    }
  }

  /** Wait until this page's uploads are stored, or `timeoutMs`; resolves `{stored, remaining}`. */
  function flush(timeoutMs = 5000) {
    const limit = Math.max(0, Number(timeoutMs) || 0);
    const remaining = () => {
      try {
        return uploader.getQueueState().items.length;
      } catch {
        return pending.size;
      }
    };
    const work = (async () => {
      if (problem) return { stored: 0, remaining: 0, error: problem };
      if (typeof uploader.flush !== 'function') {
        const answers = await Promise.all(pending);
        return { stored: answers.filter((a) => a?.status === 'success').length, remaining: remaining() };
      }
      const summary = await uploader.flush(limit);
      const left = Number(summary?.remaining);
      return { stored: Number(summary?.stored) || 0, remaining: Number.isFinite(left) ? left : remaining() };
    })().catch((err) => ({ stored: 0, remaining: remaining(), error: errorText(err) }));
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(
        () => resolve({ stored: 0, remaining: remaining(), error: `not all sent within ${limit} ms` }),
        limit + GUARD_MS,
      );
    });
    return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
  }

  return {
    on_data_update,
    on_finish,
    flush,
    session: { id: sessionId, completedTrials: base, resumed: base > 0 || run > 0, run },
  };
}
