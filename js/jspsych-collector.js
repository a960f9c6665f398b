/**
 * jspsych-collector.js: saves every jsPsych trial as it finishes, and the whole dataset at the end,
 * through the uploader beside it. Sessions, resume and options: docs/jspsych.md.
 */

import {
  ID_PATTERN,
  ID_RULE,
  MAX_TRIAL_INDEX,
  attempt,
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
const KEPT_RUNS = 10;
const GUARD_MS = 250; // flush ends this long past the uploader's own deadline, whatever it does

const trialsOf = (data) => (typeof data?.values === 'function' ? [...data.values()] : [data ?? []].flat());

const whole = (n) => (Number.isInteger(n) && n >= 0 ? n : 0);

/** `{sessionId: {open, at}}`: unfinished sessions, and whether a page runs each. */
const readRuns = (local, key) =>
  Object.fromEntries(
    Object.entries(readJson(local, key) || {})
      .filter(([, run]) => isPlainObject(run))
      .map(([id, run]) => [id, { open: Boolean(run.open), at: +run.at || 0 }]),
  );
const newestFirst = (a, b) => b[1].at - a[1].at;

/** Mark a session open (a page runs it), closed (resumable) or finished (forgotten). */
function markRun(local, key, sessionId, state) {
  const runs = readRuns(local, key);
  delete runs[sessionId];
  // Strictly after every other mark: "most recently closed" is well defined.
  const at = Math.max(Date.now(), 1 + Math.max(0, ...Object.values(runs).map((run) => run.at)));
  if (state !== 'finished') runs[sessionId] = { open: state === 'open', at };
  const kept = Object.entries(runs).sort(newestFirst).slice(0, KEPT_RUNS);
  writeRaw(local, key, JSON.stringify(Object.fromEntries(kept)));
}

function openSession(participantId, requested, local, tab) {
  const keys = (id) => ({
    state: `${NS}session.${participantId}.${id}`,
    tab: `${NS}tab.${participantId}`,
    runs: `${NS}runs.${participantId}`,
  });
  const stateOf = (id) => readJson(local, keys(id).state) || readJson(tab, keys(id).state);
  const unfinished = (id) => ID_PATTERN.test(id) && stateOf(id) && !stateOf(id).finished;
  const mine = readRaw(tab, keys().tab);
  // The most recently closed unfinished session: what a participant reopening the link left.
  const [closed] = Object.entries(readRuns(local, keys().runs))
    .filter(([id, run]) => !run.open && unfinished(id))
    .sort(newestFirst);
  let sessionId = requested;
  if (!sessionId && mine && unfinished(mine))
    sessionId = mine; // this tab reloaded
  else if (!sessionId && !mine && closed) sessionId = closed[0]; // closed, then reopened
  sessionId ||= newId();
  const state = stateOf(sessionId) || {};
  return { sessionId, keys: keys(sessionId), next: whole(state.next), runs: whole(state.runs) };
}

/**
 * Hooks that save a jsPsych experiment's data to the collector: spread them into `initJsPsych`.
 * Options and what each hook does: docs/jspsych.md. No hook throws into the experiment.
 * @param {{participantId: string}} options
 */
export function collectorHooks(options = {}) {
  const opts = isPlainObject(options) ? options : {};
  const participantId = String(opts.participantId ?? '');
  const extra = { ...(isPlainObject(opts.extra) && opts.extra) };
  const local = globalStorage('localStorage');
  const tab = globalStorage('sessionStorage');
  const given = opts.sessionId ?? null;
  let problem = null;
  if (!ID_PATTERN.test(participantId)) problem = `participantId must be ${ID_RULE}`;
  if (given !== null && !ID_PATTERN.test(String(given))) problem = `sessionId must be ${ID_RULE}`;
  const { expectedTrials } = opts;
  const trialExtras = Number.isInteger(expectedTrials) ? { expectedTrials } : undefined;

  let opened;
  try {
    opened = openSession(participantId, problem ? null : given && String(given), local, tab);
  } catch {
    opened = { sessionId: newId(), keys: {}, next: 0, runs: 0 };
  }
  const { sessionId, keys } = opened;
  // Trials recorded, and page loads of the session, before this one.
  const { next: base, runs: run } = opened;
  let next = base;
  let finished = false;

  const saveState = () => {
    const text = JSON.stringify({ next, finished, runs: run + 1 });
    // localStorage survives a closed tab; sessionStorage when it is blocked or full.
    if (!writeRaw(local, keys.state, text)) writeRaw(tab, keys.state, text);
  };
  const mark = (state) =>
    attempt(() => (!finished || state === 'finished') && markRun(local, keys.runs, sessionId, state));

  let uploader = opts.uploader || null;
  if (!problem) {
    if (given === null) writeRaw(tab, keys.tab, sessionId);
    saveState();
    mark('open');
    attempt(() => {
      globalThis.window.addEventListener('pagehide', () => mark('closed'));
      globalThis.window.addEventListener('pageshow', (event) => event?.persisted && mark('open'));
    });
    // Without participantId: no status uploads of the seed study's fields.
    const made = { ...opts.uploaderOptions, collectorUrl: opts.collectorUrl, studyId: opts.studyId };
    uploader ||= attempt(() => createUploader(made));
    if (!uploader) problem = 'the uploader could not be created';
  }
  if (problem) attempt(() => console.warn(`jspsych-collector: ${problem}; nothing will be uploaded`));

  const pending = new Set();
  const track = (call) => {
    const settled = Promise.resolve(call).catch((err) => ({ status: 'error', error: errorText(err) }));
    pending.add(settled);
    settled.then(() => pending.delete(settled));
  };

  function on_data_update(trialData) {
    if (problem) return;
    attempt(() => {
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
    });
  }

  function on_finish(data) {
    if (problem) return;
    attempt(() => {
      const trials = trialsOf(data === undefined && opts.jsPsych ? opts.jsPsych.data.get() : data);
      finished = true;
      saveState();
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
    });
  }

  function flush(timeoutMs = 5000) {
    const limit = Math.max(0, +timeoutMs || 0);
    const remaining = () => attempt(() => uploader.getQueueState().items.length, pending.size);
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
