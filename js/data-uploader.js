/**
 * data-uploader.js: backs a browser study's participant data up to the collector (DESIGN §4).
 *
 * A plain ES module with no dependencies and no build step:
 *
 *   import { configureUploader, uploadSubmissionData } from 'https://collector.example/js/data-uploader.js';
 *   configureUploader({ collectorUrl: 'https://collector.example' });
 *   await uploadSubmissionData(participantId, jsonDump);  // never rejects, never throws
 *
 * Every upload is written to a persistent queue in localStorage *before* it is sent (so a closed
 * tab loses nothing) and leaves the queue only when the collector answered 200 (stored) or a 4xx
 * other than 429 (never storable). Each upload carries its own `uploadId` and `timestamp`, fixed
 * when it is created, so the collector recognises a retry and stores it once.
 *
 * The study's own localStorage keys are only read (and, by `restoreUserStatus`, filled in when
 * missing); the module's state lives under keys starting with `dataUploader.v1.`.
 */

const NS = 'dataUploader.v1.';
const ITEM_PREFIX = NS + 'item.';
const BODY_PREFIX = NS + 'body.';
const RETRY_KEY = NS + 'retry';
const LEASE_KEY = NS + 'lease';
const LOCK_NAME = NS + 'flush';
const PARTICIPANT_ID = /^[A-Za-z0-9_-]{1,64}$/;
const COLLECTOR_BATCH_LIMIT = 50; // the collector's settings.max_batch_items
const KEEPALIVE_MAX_BYTES = 60000; // browsers refuse keepalive bodies over 64 KiB in flight
const UPLOAD_PATH = '/api/upload-user-data';

/** The DESIGN §4 table: [localStorage key, request field]; `participant_response_{id}` is added per participant. */
export const STUDY_KEYS = Object.freeze([
  ['study_has_seen_participant_setup', 'hasSeenParticipantSetup'],
  ['study_has_seen_welcome', 'hasSeenWelcome'],
  ['study_has_seen_tutorial', 'hasSeenTutorial'],
  ['study_tutorial_completed', 'tutorialCompleted'],
  ['study_weekly_session_count', 'weeklySessionCount'],
  ['study_week_start_date', 'weekStartDate'],
  ['study_last_awesf_date', 'lastAwesfDate'],
  ['study_total_sessions_started', 'totalSessionsStarted'],
  ['study_total_sessions_completed', 'totalSessionsCompleted'],
  ['study_total_session_time', 'totalSessionTime'],
  ['study_session_history', 'sessionHistory'],
  ['study_current_session_start', 'currentSessionStart'],
  ['selectedVolcano', 'selectedVolcano'],
  ['selectedMode', 'selectedMode'],
].map((row) => Object.freeze(row)));

const DEFAULTS = {
  collectorUrl: null, // null: the page's own origin
  timeoutMs: 15000,
  statusIntervalMs: 5 * 60 * 1000, // 0 switches periodic status uploads off
  retryBaseMs: 2000,
  retryMaxMs: 5 * 60 * 1000,
  maxBatchItems: COLLECTOR_BATCH_LIMIT,
  maxBatchBytes: 1024 * 1024, // well under the collector's MAX_UPLOAD_BYTES (4 MiB)
  maxQueueItems: 200,
  leaseMs: 30000,
  crossTabLock: true,
  lockGraceMs: 50,
  participantId: null,
  onEvent: null,
  // Injections for tests and unusual hosts; undefined means "the global one, looked up lazily".
  storage: undefined, fetch: undefined, locks: undefined,
  now: undefined, random: undefined, setTimeout: undefined, clearTimeout: undefined,
};

let config = { ...DEFAULTS };
const memoryQueue = new Map(); // uploadId -> item localStorage could not hold (kept for this page's life)
const rt = { flushing: null, flushAgain: false, timer: null, timerAt: 0, statusTimer: null,
  hidden: false, started: false, seq: 0, participantId: null, tabId: null, retryMemory: null };

// --- environment, looked up lazily so the module loads anywhere (Node tests, workers, sandboxes)

const now = () => (config.now ? config.now() : Date.now());
const random = () => (config.random ? config.random() : Math.random());
const later = (fn, ms) => {
  const set = config.setTimeout || globalThis.setTimeout;
  const id = set(() => { try { fn(); } catch { /* a timer must never throw into the page */ } }, ms);
  if (id && typeof id.unref === 'function') id.unref(); // never keep a Node test process alive
  return id;
};
const cancel = (id) => { try { (config.clearTimeout || globalThis.clearTimeout)(id); } catch { /* ignore */ } };

function storage() {
  if (config.storage !== undefined) return config.storage;
  try { return globalThis.localStorage || null; } catch { return null; } // sandboxed iframes throw here
}

/** The raw string under `key`, null when absent, undefined when storage cannot be read. */
function readRaw(key) {
  try {
    const s = storage();
    if (!s) return undefined;
    const value = s.getItem(key);
    return value === null || value === undefined ? null : String(value);
  } catch {
    return undefined;
  }
}

function writeRaw(key, text) {
  try { const s = storage(); if (!s) return false; s.setItem(key, text); return true; } catch { return false; }
}

function removeRaw(key) {
  try { const s = storage(); if (s) s.removeItem(key); } catch { /* ignore */ }
}

function readJson(key) {
  try { const text = readRaw(key); return text ? JSON.parse(text) : null; } catch { return null; }
}

function emit(type, detail) {
  try { if (typeof config.onEvent === 'function') config.onEvent({ type, ...detail }); } catch { /* the study's handler */ }
}

function newId() {
  const c = globalThis.crypto;
  try { if (c && typeof c.randomUUID === 'function') return c.randomUUID(); } catch { /* insecure context */ }
  let id = '';
  for (let i = 0; i < 4; i += 1) id += Math.floor(random() * 2 ** 32).toString(16).padStart(8, '0');
  return `${id.slice(0, 8)}-${id.slice(8, 12)}-${id.slice(12, 16)}-${id.slice(16, 20)}-${id.slice(20)}`;
}

function byteLength(text) {
  try { return new TextEncoder().encode(text).length; } catch { return text.length * 3; }
}

function validParticipant(id) {
  return (typeof id === 'string' || Number.isInteger(id)) && PARTICIPANT_ID.test(String(id));
}

function errorText(err) {
  try { return err && err.message ? String(err.message) : String(err); } catch { return 'unknown error'; }
}

// --- gathering the study's keys

/**
 * Parse one localStorage string back to its type: booleans, numbers, null, JSON arrays and
 * objects (and JSON-quoted strings); anything that does not parse is returned as the string.
 * @param {string} raw
 * @returns {*}
 */
export function parseStoredValue(raw) {
  if (typeof raw !== 'string') return raw;
  try {
    const value = JSON.parse(raw);
    if (typeof value === 'number' && !Number.isFinite(value)) return raw;
    return value;
  } catch {
    return raw;
  }
}

/**
 * The request fields gathered from the study's localStorage keys (DESIGN §4), types restored,
 * `totalSessionTimeHours` derived. Absent keys are left out; unreadable storage gives `{}`.
 * @param {string} participantId
 * @returns {Object<string, *>}
 */
export function collectStudyFields(participantId) {
  const fields = {};
  const rows = [...STUDY_KEYS, [`participant_response_${participantId}`, 'participantResponses']];
  for (const [key, field] of rows) {
    const raw = readRaw(key);
    if (typeof raw === 'string') fields[field] = parseStoredValue(raw);
  }
  const ms = fields.totalSessionTime;
  if (typeof ms === 'number') fields.totalSessionTimeHours = ms / 3600000;
  return fields;
}

function createItem(participantId, uploadType, submissionData) {
  const createdAt = now();
  const uploadId = newId();
  const body = {
    participantId, timestamp: new Date(createdAt).toISOString(), uploadId, uploadType,
    ...collectStudyFields(participantId),
  };
  if (uploadType === 'submission') {
    const isObject = submissionData && typeof submissionData === 'object' && !Array.isArray(submissionData);
    // The collector needs an object; anything else is kept, wrapped, rather than refused.
    body.submissionData = isObject ? submissionData : { value: submissionData === undefined ? null : submissionData };
    if (!isObject) body.submissionDataWrapped = true;
  }
  rt.seq += 1; // orders uploads made within one millisecond
  return { uploadId, participantId, uploadType, createdAt, timestamp: body.timestamp, seq: rt.seq, tries: 0, inflightUntil: 0,
    bodyText: JSON.stringify(body) }; // serialised once: a circular jsonDump throws here, not later
}

// --- the persistent queue: per upload a small meta key and a body key, so tabs appending and removing
// never overwrite each other, and looking at the queue never parses the (large) bodies.

const metaText = ({ bodyText, ...meta }) => JSON.stringify(meta);
const ORPHAN_AFTER_MS = 60000; // a meta key without its body for this long was never completed

function parseMeta(text) {
  try {
    const meta = JSON.parse(text);
    return meta && typeof meta.uploadId === 'string' ? meta : null;
  } catch {
    return null;
  }
}

/** The queue, oldest first; with `withBodies` each item also carries its request body. */
function queuedItems(withBodies = false) {
  const found = new Map();
  try {
    const s = storage();
    const metas = [];
    const bodies = new Set();
    const n = s ? Number(s.length) || 0 : 0;
    for (let i = 0; i < n; i += 1) {
      const key = s.key(i);
      if (typeof key !== 'string') continue;
      if (key.startsWith(ITEM_PREFIX)) metas.push(key);
      else if (key.startsWith(BODY_PREFIX)) bodies.add(key.slice(BODY_PREFIX.length));
    }
    for (const key of metas) {
      const id = key.slice(ITEM_PREFIX.length);
      const text = readRaw(key);
      if (typeof text !== 'string') continue;
      const meta = parseMeta(text);
      const hasBody = bodies.delete(id);
      if (!meta || (!hasBody && now() - meta.createdAt > ORPHAN_AFTER_MS)) {
        dropItem(id);
        emit('dropped', { key, reason: 'unreadable queue entry' });
        continue;
      }
      const item = { ...meta, uploadId: id };
      if (withBodies) {
        item.bodyText = readRaw(BODY_PREFIX + id);
        if (typeof item.bodyText !== 'string' || !item.bodyText) continue; // being written by another tab
      }
      found.set(id, item);
    }
    for (const id of bodies) removeRaw(BODY_PREFIX + id); // its meta was removed: a removal cut short
  } catch { /* storage unusable: the memory queue below still works */ }
  for (const [id, item] of memoryQueue) if (!found.has(id)) found.set(id, item);
  return [...found.values()].sort((a, b) => a.createdAt - b.createdAt || (a.seq || 0) - (b.seq || 0)
    || (a.uploadId < b.uploadId ? -1 : 1));
}

function saveItem(item) {
  // Meta first, body second; removal in the same order, so a body without its meta is always debris.
  if (writeRaw(ITEM_PREFIX + item.uploadId, metaText(item)) && writeRaw(BODY_PREFIX + item.uploadId, item.bodyText)) {
    memoryQueue.delete(item.uploadId);
    return true;
  }
  dropItem(item.uploadId);
  memoryQueue.set(item.uploadId, item);
  return false;
}

/** After a failed try: record it, unless the item left the queue meanwhile (superseded, or sent by another tab). */
function updateItem(item) {
  if (memoryQueue.has(item.uploadId)) memoryQueue.set(item.uploadId, item);
  else if (typeof readRaw(ITEM_PREFIX + item.uploadId) === 'string') writeRaw(ITEM_PREFIX + item.uploadId, metaText(item));
}

function dropItem(uploadId) {
  memoryQueue.delete(uploadId);
  removeRaw(ITEM_PREFIX + uploadId);
  removeRaw(BODY_PREFIX + uploadId);
}

/** Add an item under the bound: newer status supersedes older; submissions are never evicted. */
function enqueue(item) {
  const items = queuedItems();
  const kept = [];
  for (const old of items) {
    if (item.uploadType === 'status' && old.uploadType === 'status' && old.participantId === item.participantId) {
      dropItem(old.uploadId);
      emit('superseded', { uploadId: old.uploadId, by: item.uploadId });
    } else kept.push(old);
  }
  let excess = kept.length + 1 - config.maxQueueItems;
  for (const old of kept) {
    if (excess <= 0) break;
    if (old.uploadType === 'status') {
      dropItem(old.uploadId);
      emit('superseded', { uploadId: old.uploadId, by: item.uploadId });
      excess -= 1;
    }
  }
  if (excess > 0) {
    if (item.uploadType === 'status') return 'full'; // the queue holds only submissions: keep those
    memoryQueue.set(item.uploadId, item); // over the bound: kept for this page's life, loudly
    emit('not-persisted', { uploadId: item.uploadId, reason: 'queue full' });
    return 'memory';
  }
  if (saveItem(item)) return 'stored';
  emit('not-persisted', { uploadId: item.uploadId, reason: 'localStorage refused the write' });
  return 'memory';
}

/**
 * Split queued items into batches of at most `maxItems` items and about `maxBytes` bytes of
 * body each (an item larger than `maxBytes` travels alone), keeping their order.
 * @template {{bodyText: string}} T
 * @param {T[]} items
 * @param {{maxItems: number, maxBytes: number}} limits
 * @returns {T[][]}
 */
export function splitBatches(items, { maxItems, maxBytes }) {
  const batches = [];
  let batch = [];
  let bytes = 0;
  const limit = Math.max(1, Math.min(maxItems, COLLECTOR_BATCH_LIMIT));
  for (const item of items) {
    const size = byteLength(item.bodyText) + 1;
    if (batch.length && (batch.length >= limit || bytes + size > maxBytes)) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(item);
    bytes += size;
  }
  if (batch.length) batches.push(batch);
  return batches;
}

// --- retry schedule, shared by the tabs of one study through localStorage

/**
 * Milliseconds to wait before try number `attempt + 1`: full jitter (uniform in
 * [0, min(maxMs, baseMs·2^attempt)]), never sooner than the server's `Retry-After` (itself capped at `maxMs`).
 * @param {number} attempt failures so far, 0 for the first retry
 * @param {{baseMs: number, maxMs: number, random?: () => number, retryAfterMs?: number}} options
 * @returns {number}
 */
export function backoffDelay(attempt, { baseMs, maxMs, random: rand = Math.random, retryAfterMs = 0 }) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt, 0), 40));
  const jittered = rand() * ceiling;
  return Math.max(jittered, Math.min(retryAfterMs || 0, maxMs));
}

function parseRetryAfter(header) {
  if (!header) return 0;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const when = Date.parse(header);
  return Number.isFinite(when) ? Math.max(0, when - Date.now()) : 0;
}

function retryState() {
  const stored = readJson(RETRY_KEY) || rt.retryMemory;
  if (!stored || typeof stored !== 'object') return { attempt: 0, notBefore: 0, serverAsked: false };
  return { attempt: Number(stored.attempt) || 0, notBefore: Number(stored.notBefore) || 0, serverAsked: Boolean(stored.serverAsked) };
}

function setRetryState(state) {
  rt.retryMemory = state.attempt ? state : null;
  if (!state.attempt) removeRaw(RETRY_KEY); // nothing owed: leave no key behind
  else if (writeRaw(RETRY_KEY, JSON.stringify(state))) rt.retryMemory = null;
}

function noteFailure(retryAfterMs) {
  const { attempt } = retryState();
  const delay = backoffDelay(attempt, { baseMs: config.retryBaseMs, maxMs: config.retryMaxMs, random, retryAfterMs });
  setRetryState({ attempt: attempt + 1, notBefore: now() + delay, serverAsked: retryAfterMs > 0 });
  scheduleFlush(delay);
}

function noteContact() {
  if (retryState().attempt) setRetryState({ attempt: 0, notBefore: 0, serverAsked: false });
  if (queuedItems().length) scheduleFlush(0);
}

function scheduleFlush(delayMs) {
  const at = now() + Math.max(0, delayMs);
  if (rt.timer && rt.timerAt <= at) return; // an earlier flush is already due
  if (rt.timer) cancel(rt.timer);
  rt.timerAt = at;
  rt.timer = later(() => { rt.timer = null; flushQueue(); }, Math.max(0, delayMs));
}

// --- HTTP

function collectorUrl() {
  let base = config.collectorUrl;
  if (!base) { try { base = globalThis.location.origin; } catch { base = ''; } }
  return String(base || '').replace(/\/+$/, '');
}

/** One request; resolves to {kind: 'ok' | 'retry' | 'reject', httpStatus, json, retryAfterMs, error}. */
async function request(method, path, bodyText, { keepalive = false, contentType = 'application/json' } = {}) {
  const fetchFn = config.fetch || globalThis.fetch;
  if (typeof fetchFn !== 'function') return { kind: 'retry', httpStatus: 0, error: 'fetch is unavailable' };
  let controller = null;
  try { controller = new AbortController(); } catch { /* very old browser */ }
  let timer = null;
  const timeout = new Promise((resolve) => {
    timer = later(() => {
      try { controller && controller.abort(); } catch { /* ignore */ }
      resolve({ kind: 'retry', httpStatus: 0, error: `no answer within ${config.timeoutMs} ms` });
    }, config.timeoutMs);
  });
  const attempt = (async () => {
    const init = { method, mode: 'cors', credentials: 'omit', keepalive };
    if (controller) init.signal = controller.signal;
    if (bodyText !== undefined) { init.body = bodyText; init.headers = { 'Content-Type': contentType }; }
    const response = await fetchFn.call(globalThis, collectorUrl() + path, init);
    const httpStatus = Number(response.status) || 0;
    let json = null;
    try { json = await response.json(); } catch { /* not JSON: a proxy or captive portal answered */ }
    let retryAfter = null;
    try { retryAfter = response.headers.get('Retry-After'); } catch { /* no headers */ }
    return classify(httpStatus, json, parseRetryAfter(retryAfter));
  })().catch((err) => ({ kind: 'retry', httpStatus: 0, error: `network error: ${errorText(err)}` }));
  try {
    return await Promise.race([attempt, timeout]);
  } finally {
    cancel(timer);
  }
}

function classify(httpStatus, json, retryAfterMs) {
  const error = json && typeof json.error === 'string' ? json.error : `HTTP ${httpStatus}`;
  if (httpStatus >= 200 && httpStatus < 300) {
    // Only the collector's own success answer counts: a captive portal's 200 stored nothing.
    if (json && json.status === 'success') return { kind: 'ok', httpStatus, json };
    return { kind: 'retry', httpStatus, error: 'the answer was not the collector\'s' };
  }
  if (httpStatus >= 400 && httpStatus < 500 && httpStatus !== 429) return { kind: 'reject', httpStatus, json, error };
  return { kind: 'retry', httpStatus, json, error, retryAfterMs };
}

// --- uploads

async function upload(participantId, uploadType, submissionData) {
  try {
    if (!validParticipant(participantId)) {
      return { status: 'error', participantId, error: 'participantId must be 1 to 64 letters, digits, _ or -' };
    }
    const id = String(participantId);
    start();
    rememberParticipant(id);
    let item;
    try {
      item = createItem(id, uploadType, submissionData);
    } catch (err) {
      return { status: 'error', participantId, error: `the upload cannot be serialised: ${errorText(err)}` };
    }
    return await deliver(item);
  } catch (err) {
    return { status: 'error', participantId, error: `uploader failure: ${errorText(err)}` };
  }
}

async function deliver(item) {
  const waiting = retryState().notBefore > now(); // honour Retry-After/backoff: queue, do not send
  item.inflightUntil = waiting ? 0 : now() + config.timeoutMs + 1000; // other tabs' flushes skip it meanwhile
  const queued = enqueue(item);
  const base = { participantId: item.participantId, uploadId: item.uploadId, persisted: queued === 'stored' };
  if (queued === 'full') base.error = 'the queue is full of submissions; this status upload was not kept';
  if (waiting) {
    scheduleFlush(retryState().notBefore - now());
    emit('queued', base);
    return { status: 'queued', ...base, error: 'waiting before the next try' };
  }
  const answer = await request('POST', UPLOAD_PATH, item.bodyText);
  if (answer.kind === 'ok') {
    dropItem(item.uploadId);
    emit('stored', { uploadId: item.uploadId });
    noteContact();
    return answer.json;
  }
  if (answer.kind === 'reject') {
    dropItem(item.uploadId);
    emit('rejected', { ...base, httpStatus: answer.httpStatus, error: answer.error });
    return { status: 'error', ...base, persisted: false, httpStatus: answer.httpStatus, error: answer.error };
  }
  item.tries += 1;
  item.inflightUntil = 0;
  updateItem(item);
  noteFailure(answer.retryAfterMs);
  emit('queued', { ...base, httpStatus: answer.httpStatus, error: answer.error });
  return { status: 'queued', ...base, httpStatus: answer.httpStatus, error: answer.error };
}

/**
 * Upload the participant's status (every DESIGN §4 localStorage key) to `status.json`.
 * @param {string} participantId
 * @returns {Promise<Object>} the collector's answer `{status: 'success', …}`, or
 *   `{status: 'queued', uploadId, error, …}` (kept and retried), or `{status: 'error', error, …}`; never rejects
 */
export function uploadUserStatus(participantId) {
  return upload(participantId, 'status');
}

/**
 * Upload one submission (the study's jsonDump) with the participant's status; call it after a
 * Qualtrics submission and after a timeout submission.
 * @param {string} participantId
 * @param {Object} submissionData the jsonDump
 * @returns {Promise<Object>} as for `uploadUserStatus`; never rejects
 */
export function uploadSubmissionData(participantId, submissionData) {
  return upload(participantId, 'submission', submissionData);
}

// --- flushing the queue, one tab at a time

/**
 * Send the queue now (batched), unless another tab is sending it. Normally not needed: the
 * queue is flushed on `online`, after any successful contact and on a timer.
 * @returns {Promise<{stored: number, rejected: number, remaining: number, error?: string}>} never rejects
 */
export function flushQueue() {
  try {
    start();
    if (rt.flushing) { rt.flushAgain = true; return rt.flushing; }
    rt.flushing = (async () => {
      let summary;
      do {
        rt.flushAgain = false;
        summary = await underCrossTabLock(flushLocked);
      } while (rt.flushAgain && !summary.error);
      return summary;
    })().catch((err) => ({ stored: 0, rejected: 0, remaining: queuedItems().length, error: errorText(err) }))
      .finally(() => { rt.flushing = null; });
    return rt.flushing;
  } catch (err) {
    return Promise.resolve({ stored: 0, rejected: 0, remaining: 0, error: errorText(err) });
  }
}

async function underCrossTabLock(fn) {
  let locks = config.locks;
  if (locks === undefined) { try { locks = globalThis.navigator.locks; } catch { locks = null; } }
  if (!config.crossTabLock) return fn();
  if (locks && typeof locks.request === 'function') {
    // Waiting (not ifAvailable): the next holder re-reads the queue, so it does not resend what the last
    // one stored. localStorage changes reach other tabs asynchronously (measured in Chromium: the next
    // holder often read the old queue), so the lock is kept a moment after the queue changed.
    return locks.request(LOCK_NAME, async () => {
      const summary = await fn();
      const grace = Number(config.lockGraceMs) || 0;
      if (grace > 0 && (summary.stored || summary.rejected)) await new Promise((resolve) => later(resolve, grace));
      return summary;
    });
  }
  // No Web Locks: a lease in localStorage, checked after writing it (the collector's idempotency is the net).
  const me = rt.tabId || (rt.tabId = newId());
  const lease = readJson(LEASE_KEY);
  if (lease && lease.owner !== me && Number(lease.until) > now()) {
    scheduleFlush(Number(lease.until) - now() + 50);
    return { stored: 0, rejected: 0, remaining: queuedItems().length, skipped: true };
  }
  writeRaw(LEASE_KEY, JSON.stringify({ owner: me, until: now() + config.leaseMs }));
  const mine = readJson(LEASE_KEY);
  if (mine && mine.owner !== me) return { stored: 0, rejected: 0, remaining: queuedItems().length, skipped: true };
  try {
    return await fn();
  } finally {
    const current = readJson(LEASE_KEY);
    if (!current || current.owner === me) removeRaw(LEASE_KEY);
  }
}

async function flushLocked() {
  const summary = { stored: 0, rejected: 0, remaining: 0 };
  const all = queuedItems(true);
  const due = all.filter((item) => !(item.inflightUntil > now()));
  // An item another send has in flight is looked at again once that send must have ended.
  const busyUntil = Math.min(...all.filter((item) => !due.includes(item)).map((item) => item.inflightUntil));
  if (Number.isFinite(busyUntil)) scheduleFlush(busyUntil - now() + 50);
  for (const batch of splitBatches(due, { maxItems: config.maxBatchItems, maxBytes: config.maxBatchBytes })) {
    const answer = await sendBatch(batch, summary);
    if (answer) { summary.error = answer.error; noteFailure(answer.retryAfterMs); break; }
  }
  if (!summary.error && summary.stored) noteContact();
  summary.remaining = queuedItems().length;
  emit('flushed', summary);
  return summary;
}

/** Send one batch; returns the failure that should delay the rest, or null. */
async function sendBatch(batch, summary) {
  const text = `{"uploads":[${batch.map((item) => item.bodyText).join(',')}]}`;
  const answer = await request('POST', `${UPLOAD_PATH}/batch`, text);
  if (answer.kind === 'reject') return sendOneByOne(batch, summary); // too large, or an older collector
  if (answer.kind !== 'ok' || !Array.isArray(answer.json.results)) return answer.kind === 'ok' ? { error: 'bad batch answer' } : answer;
  let failure = null;
  const answered = new Set();
  for (const result of answer.json.results) {
    const item = result && batch[result.index];
    if (!item || result.uploadId !== item.uploadId || answered.has(item)) continue;
    answered.add(item);
    const httpStatus = Number(result.httpStatus) || 0;
    failure = settle(item, classify(httpStatus, result, 0), summary) || failure;
  }
  return failure || (answered.size < batch.length ? { error: 'some uploads were not answered' } : null);
}

async function sendOneByOne(batch, summary) {
  for (const item of batch) {
    const failure = settle(item, await request('POST', UPLOAD_PATH, item.bodyText), summary);
    if (failure) return failure;
  }
  return null;
}

/** Apply one item's answer to the queue; returns it when it means "try again later". */
function settle(item, answer, summary) {
  if (answer.kind === 'ok') {
    dropItem(item.uploadId);
    summary.stored += 1;
    emit('stored', { uploadId: item.uploadId });
    return null;
  }
  if (answer.kind === 'reject') {
    dropItem(item.uploadId);
    summary.rejected += 1;
    emit('rejected', { uploadId: item.uploadId, participantId: item.participantId, httpStatus: answer.httpStatus, error: answer.error });
    return null;
  }
  item.tries += 1;
  updateItem(item);
  return answer;
}

// --- restore

/**
 * Read the participant's status back from the collector and fill in the study's localStorage
 * keys that are missing; a value the browser already has is never overwritten.
 * @param {string} participantId
 * @returns {Promise<{status: 'success' | 'not-found' | 'error', restored: Object<string, string>, error?: string}>}
 *   `restored` maps each key written to the string written; never rejects
 */
export async function restoreUserStatus(participantId) {
  const restored = {};
  try {
    if (!validParticipant(participantId)) {
      return { status: 'error', participantId, restored, error: 'participantId must be 1 to 64 letters, digits, _ or -' };
    }
    const answer = await request('GET', `/api/user-status/${encodeURIComponent(participantId)}`);
    if (answer.httpStatus === 404) return { status: 'not-found', participantId, restored };
    const status = answer.kind === 'ok' ? answer.json.userStatus : null;
    if (!status || typeof status !== 'object') return { status: 'error', participantId, restored, error: answer.error || 'no userStatus' };
    const rows = [...STUDY_KEYS, [`participant_response_${participantId}`, 'participantResponses']];
    for (const [key, field] of rows) {
      const value = status[field];
      if (value === undefined || readRaw(key) !== null) continue; // present, or unreadable: leave it
      const text = typeof value === 'string' ? value : JSON.stringify(value);
      if (writeRaw(key, text)) restored[key] = text;
    }
    return { status: 'success', participantId, restored };
  } catch (err) {
    return { status: 'error', participantId, restored, error: errorText(err) };
  }
}

// --- configuration, periodic and last-moment status uploads

/**
 * Configure the uploader; call it once, right after importing. Every option is optional.
 * @param {Object} options
 * @param {string} [options.collectorUrl] the collector's origin (default: the page's own origin)
 * @param {string} [options.participantId] who periodic and page-hide status uploads are for
 *   (default: the participant of the latest upload call)
 * @param {number} [options.statusIntervalMs=300000] periodic status uploads; 0 switches them off
 * @param {number} [options.timeoutMs=15000] a request without an answer by then is retried later
 * @param {number} [options.retryBaseMs=2000] first backoff ceiling (doubles per failure, full jitter)
 * @param {number} [options.retryMaxMs=300000] backoff cap, also the cap on `Retry-After`
 * @param {number} [options.maxBatchItems=50] uploads per batch request (at most 50)
 * @param {number} [options.maxBatchBytes=1048576] body bytes per batch request
 * @param {number} [options.maxQueueItems=200] queue bound (older status uploads give way first)
 * @param {boolean} [options.crossTabLock=true] one tab flushes at a time (Web Locks, else a lease)
 * @param {number} [options.lockGraceMs=50] how long the flush lock is kept after the queue changed
 * @param {function(Object): void} [options.onEvent] told of `stored`, `queued`, `rejected`,
 *   `superseded`, `not-persisted`, `dropped` and `flushed` events
 * @param {Storage} [options.storage] @param {Function} [options.fetch] @param {Object} [options.locks]
 * @param {function(): number} [options.now] @param {function(): number} [options.random]
 * @param {Function} [options.setTimeout] @param {Function} [options.clearTimeout] injections for tests
 * @returns {Object} the configuration in effect
 */
export function configureUploader(options = {}) {
  try {
    const given = {};
    for (const key of Object.keys(DEFAULTS)) if (options && options[key] !== undefined) given[key] = options[key];
    config = { ...config, ...given };
    config.maxBatchItems = Math.max(1, Math.min(Number(config.maxBatchItems) || COLLECTOR_BATCH_LIMIT, COLLECTOR_BATCH_LIMIT));
    if (given.participantId) rememberParticipant(given.participantId);
    if (given.statusIntervalMs !== undefined) restartStatusTimer();
    start();
  } catch { /* a bad option keeps the previous configuration */ }
  return { ...config };
}

/**
 * What is waiting in the queue, for a status display or a test.
 * @returns {{items: Array<{uploadId: string, uploadType: string, participantId: string, timestamp: string, tries: number, persisted: boolean}>, attempt: number, nextAttemptAt: number, flushing: boolean}}
 */
export function getQueueState() {
  try {
    const items = queuedItems().map((item) => ({ uploadId: item.uploadId, uploadType: item.uploadType,
      participantId: item.participantId, timestamp: item.timestamp, tries: item.tries,
      persisted: !memoryQueue.has(item.uploadId) }));
    const { attempt, notBefore } = retryState();
    return { items, attempt, nextAttemptAt: notBefore, flushing: Boolean(rt.flushing) };
  } catch {
    return { items: [], attempt: 0, nextAttemptAt: 0, flushing: false };
  }
}

function rememberParticipant(participantId) {
  const changed = rt.participantId !== participantId;
  rt.participantId = participantId;
  if (changed) restartStatusTimer();
}

function restartStatusTimer() {
  if (rt.statusTimer) cancel(rt.statusTimer);
  rt.statusTimer = null;
  const every = Number(config.statusIntervalMs) || 0;
  if (every <= 0 || !rt.participantId || !rt.started) return;
  rt.statusTimer = later(() => {
    rt.statusTimer = null;
    if (!rt.hidden) uploadUserStatus(rt.participantId);
    restartStatusTimer();
  }, every);
}

/** The page is going away or out of sight: queue a last status upload and send it with keepalive. */
function onHidden() {
  if (rt.hidden) return;
  rt.hidden = true;
  const participantId = rt.participantId;
  if (!participantId) return;
  let item;
  try { item = createItem(participantId, 'status'); } catch { return; }
  // Queued first: if the page dies before the answer, the next page load sends it (same uploadId).
  const fits = byteLength(item.bodyText) <= KEEPALIVE_MAX_BYTES; // else the next page load sends it
  item.inflightUntil = fits ? now() + config.timeoutMs + 1000 : 0;
  if (enqueue(item) === 'full' || !fits) return;
  // text/plain needs no CORS preflight, which a page being unloaded may not live to finish.
  request('POST', UPLOAD_PATH, item.bodyText, { keepalive: true, contentType: 'text/plain' }).then((answer) => {
    if (answer.kind !== 'retry') dropItem(item.uploadId);
    else { item.inflightUntil = 0; updateItem(item); }
  });
}

function onVisible() {
  rt.hidden = false;
  flushNowOrWhenDue();
}

function flushNowOrWhenDue() {
  const wait = retryState().notBefore - now();
  if (wait > 0) scheduleFlush(wait);
  else flushQueue();
}

function start() {
  if (rt.started) return;
  rt.started = true;
  rt.tabId = rt.tabId || newId();
  try {
    const w = globalThis.window;
    const d = globalThis.document;
    if (w && typeof w.addEventListener === 'function') {
      w.addEventListener('online', () => {
        // Back online: a network-error backoff no longer applies (a server's Retry-After still does).
        if (!retryState().serverAsked) setRetryState({ attempt: 0, notBefore: 0, serverAsked: false });
        flushNowOrWhenDue();
      });
      w.addEventListener('pagehide', onHidden);
      w.addEventListener('pageshow', onVisible);
    }
    if (d && typeof d.addEventListener === 'function') {
      d.addEventListener('visibilitychange', () => (d.visibilityState === 'hidden' ? onHidden() : onVisible()));
    }
  } catch { /* no page: uploads still work */ }
  restartStatusTimer();
  const { notBefore } = retryState();
  if (queuedItems().length) scheduleFlush(Math.max(0, notBefore - now()));
}

// In a page, start after the importing module's top level ran, so its configureUploader applies first.
if (typeof globalThis.window === 'object' && globalThis.window) later(start, 0);
