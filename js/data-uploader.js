/**
 * data-uploader.js: backs a browser study's participant data up to the collector.
 * How it works, its options, events and guarantees: docs/browser-module.md. No call throws or rejects.
 *
 *   import { uploadSubmissionData } from 'https://collector.example/js/data-uploader.js';
 *   await uploadSubmissionData(participantId, jsonDump); // to the collector the module came from
 */

import {
  ID_PATTERN,
  ID_RULE,
  KEY_PATTERN,
  MAX_BATCH_ITEMS,
  MAX_TRIAL_INDEX,
  MAX_UPLOAD_BYTES,
  attempt,
  errorText,
  globalStorage,
  isPlainObject,
  newId,
  readJson,
  readRaw,
  removeRaw,
  writeRaw,
} from './collector-common.js';
import * as seed from './seed-study.js';

export { STUDY_KEYS, parseStoredValue } from './seed-study.js';

const NS = 'dataUploader.v1.';
const ITEM = NS + 'item.';
const BODY = NS + 'body.';
const KEY = NS + 'key.';
const ERASED = NS + 'erased.';
const RETRY = NS + 'retry';
const LEASE = NS + 'lease';
const KEEPALIVE_BYTES = 60000; // browsers refuse keepalive bodies past 64 KiB in flight
const WRAPPER_BYTES = 300; // the batch wrapper and the participant key added at send time
const ASK_LIMIT_FROM = 65536; // any collector takes this much; larger uploads need its limit
const WAITING = 'waiting before the next try';
const BUSY = 'another tab is sending the queue';

let moduleOrigin = '';
try {
  const url = new URL(import.meta.url);
  if (url.protocol.startsWith('http')) moduleOrigin = url.origin;
} catch {
  // not loaded from a URL
}

const DEFAULTS = {
  collectorUrl: null,
  participantId: null,
  studyId: null,
  timeoutMs: 15000,
  statusIntervalMs: 300000,
  retryBaseMs: 2000,
  retryMaxMs: 300000,
  maxBatchItems: MAX_BATCH_ITEMS,
  maxBatchBytes: 1048576,
  maxUploadBytes: null,
  batchDelayMs: 100,
  maxQueueItems: 1000,
  crossTabLock: true,
  lockGraceMs: 50,
  collectFields: seed.collectStudyFields,
  restoreFields: seed.restoreStudyFields,
  onEvent: null,
};
// Injections for tests and unusual hosts; unset, the page's own.
const INJECTED = ['storage', 'fetch', 'locks', 'crypto', 'now', 'random', 'setTimeout', 'clearTimeout'];
const RESERVED =
  'participantId participantKey timestamp uploadId uploadType sessionId trialIndex trialData studyId';
const HOLD = ['unknown-study', 'study-closed', 'study-full'];

const validId = (id) => (typeof id === 'string' || Number.isInteger(id)) && ID_PATTERN.test(String(id));
const newCounts = () => ({ stored: 0, rejected: 0, remaining: 0 });

let encoder;
// JSON of ASCII data is ASCII: its length is its size, without encoding 30 KB per call.
const NON_ASCII = /[^\x00-\x7f]/; // eslint-disable-line no-control-regex
const byteLength = (text) =>
  NON_ASCII.test(text) ? (encoder ||= new TextEncoder()).encode(text).length : text.length;

/** What an event or answer says about an upload: never its body, never the key. */
function describe({ uploadId, participantId, uploadType, sessionId, trialIndex, studyId }) {
  const about = { uploadId, participantId, uploadType };
  if (uploadType === 'trial') Object.assign(about, { sessionId, trialIndex });
  if (studyId) about.studyId = studyId;
  return about;
}

/** Items ({bodyText}) in order, in batches of at most `maxItems` (and 50) and about `maxBytes`. */
export function splitBatches(items, { maxItems, maxBytes }) {
  const batches = [];
  const limit = Math.max(1, Math.min(maxItems, MAX_BATCH_ITEMS));
  let bytes = 0;
  for (const item of items) {
    const size = byteLength(item.bodyText) + 1;
    const last = batches.at(-1);
    if (last && last.length < limit && bytes + size <= maxBytes) last.push(item);
    else {
      batches.push([item]);
      bytes = 0;
    }
    bytes += size;
  }
  return batches;
}

/** Milliseconds before try `attempt + 1`: full jitter under min(maxMs, baseMs·2^attempt), never
 *  sooner than `retryAfterMs` (capped at `maxMs`). */
export function backoffDelay(attempt, { baseMs, maxMs, random = Math.random, retryAfterMs = 0 }) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt, 0), 40));
  return Math.max(random() * ceiling, Math.min(retryAfterMs || 0, maxMs));
}

/** What an answer means for its upload (docs/browser-module.md §5): ok, retry, hold (kept),
 *  too-large (kept), reject, erased or archived. */
function classify(httpStatus, json, retryAfterMs) {
  const reason = typeof json?.reason === 'string' ? json.reason : undefined;
  const error = typeof json?.error === 'string' ? json.error : `HTTP ${httpStatus}`;
  const outcome = { kind: 'retry', httpStatus, json, error, reason, retryAfterMs };
  if (httpStatus >= 200 && httpStatus < 300) {
    // A captive portal's 200 stored nothing.
    if (json?.status === 'success') outcome.kind = 'ok';
    else outcome.error = "the answer was not the collector's";
  } else if (HOLD.includes(reason)) outcome.kind = 'hold';
  else if (httpStatus === 410) outcome.kind = reason === 'study-archived' ? 'archived' : 'erased';
  else if (httpStatus === 413) outcome.kind = 'too-large';
  else if (httpStatus >= 400 && httpStatus < 500 && httpStatus !== 429) outcome.kind = 'reject';
  return outcome;
}

const failed = (error) => classify(0, { error });
const keptFor = (outcome) => outcome.kind === 'retry' || outcome.kind === 'hold';

function erasedAnswer(participantId, extra = {}) {
  const error = "this participant's data was erased at the research team's request; nothing more is sent";
  return { status: 'error', reason: 'erased', participantId, ...extra, error };
}

/** `value` as the collector needs it, an object; anything else is kept, wrapped, and marked. */
function wrap(body, field, value) {
  if (isPlainObject(value)) return value;
  body[`${field}Wrapped`] = true;
  return { value: value === undefined ? null : value };
}

const metaText = ({ bodyText: _body, ...meta }) => JSON.stringify(meta);
const byQueueOrder = (a, b) =>
  a.createdAt - b.createdAt || (a.seq || 0) - (b.seq || 0) || (a.uploadId < b.uploadId ? -1 : 1);

/**
 * An uploader that owns its state (configuration, timers, callers); instances over one localStorage
 * share its queue. Options, all optional: docs/browser-module.md §1.
 * @param {Object} [options]
 */
export function createUploader(options = {}) {
  explicitInstances += 1;
  return makeUploader(options);
}

function makeUploader(options) {
  let config = { ...DEFAULTS };
  const memory = new Map(); // uploads localStorage could not hold, kept for this page's life
  const recent = new Map(); // bodies this page wrote, so sending does not read them back
  const waiters = new Map(); // uploadId -> resolvers of this page's calls
  const inflight = new Set(); // uploadIds in a request of this instance
  const supplied = new Map(); // participantId -> the study's key
  const erased = new Set(); // when localStorage cannot remember
  const listeners = [];
  let ready = []; // answers given once the pump's round is over
  const changeWaiters = [];
  let estimate = null; // an upper bound on the queue length, so a trial need not list localStorage
  let backoffMemory = null;
  let pendingKey = null; // a study key given before any participant was named
  let inRound = false;
  let keepaliveBytes = 0;
  let pump = null;
  let dueAt = Infinity; // when the pump should next send
  let rearm = null;
  let wake = null; // ends the lock's grace moment early
  let dueTimer = null;
  let force = false; // flushQueue: now, backoff or not
  let fromTimer = false;
  let timer = null; // a later pump: after the backoff, or another tab's lease
  let timerAt = 0;
  let statusTimer = null;
  let started = false;
  let closed = false;
  let hidden = false;
  let seq = 0;
  let pid = null; // whom periodic and page-hide status uploads are for
  let tab = null;
  let storedCount = 0;
  let limit = null; // the collector's MAX_UPLOAD_BYTES, once asked

  // --- host: clock, timers, storage, events, requests

  const now = () => (config.now || Date.now)();
  const random = () => (config.random || Math.random)();
  const later = (fn, ms) => {
    const id = (config.setTimeout || globalThis.setTimeout)(() => attempt(fn), Math.max(0, ms));
    id?.unref?.(); // never keeps a Node process alive
    return id;
  };
  const cancel = (id) => attempt(() => (config.clearTimeout || globalThis.clearTimeout)(id));
  let pageStorage; // looked up once: the getter costs more than a small read
  const store = () =>
    config.storage !== undefined ? config.storage : (pageStorage ??= globalStorage('localStorage'));
  const get = (key) => readRaw(store(), key);
  const set = (key, text) => writeRaw(store(), key, text);
  const del = (key) => removeRaw(store(), key);
  const keys = (prefix) =>
    attempt(() => {
      const s = store();
      return Array.from({ length: +s?.length || 0 }, (_, i) => s.key(i)).filter((k) =>
        k?.startsWith?.(prefix),
      );
    }, []);
  const emit = (type, detail) => attempt(() => config.onEvent?.({ type, ...detail }));
  const crypto = () => config.crypto || globalThis.crypto;
  const makeId = () => newId(crypto(), random);

  /** One request; resolves to its `classify` outcome (`retry` on a network error or a timeout). */
  async function request(path, body, { keepalive = false, contentType = 'application/json' } = {}) {
    const fetchFn = config.fetch || globalThis.fetch;
    if (typeof fetchFn !== 'function') return failed('fetch is unavailable');
    const base = config.collectorUrl || moduleOrigin || attempt(() => globalThis.location.origin, '');
    const controller = globalThis.AbortController ? new AbortController() : null;
    const ms = config.timeoutMs;
    let clock;
    const timeout = new Promise((resolve) => {
      clock = later(() => {
        controller?.abort();
        resolve(failed(`no answer within ${ms} ms`));
      }, ms);
    });
    const init = { method: body ? 'POST' : 'GET', mode: 'cors', credentials: 'omit', keepalive };
    init.signal = controller?.signal;
    if (body) Object.assign(init, { body, headers: { 'Content-Type': contentType } });
    const answer = (async () => {
      const response = await fetchFn.call(globalThis, String(base || '').replace(/\/+$/, '') + path, init);
      const json = await response.json().catch(() => null);
      const header = attempt(() => response.headers.get('Retry-After'));
      const wait = header ? (Number.isFinite(+header) ? +header * 1000 : Date.parse(header) - now()) : 0;
      return classify(+response.status || 0, json, Math.max(0, wait) || 0);
    })().catch((err) => failed(`network error: ${errorText(err)}`));
    try {
      return await Promise.race([answer, timeout]);
    } finally {
      cancel(clock);
    }
  }

  // --- the queue: per upload a meta key and a body key (docs/browser-module.md §3)

  /** The queue, oldest first, and its debris; reading changes nothing. */
  function readQueue(withBodies = false) {
    const found = new Map();
    const debris = [];
    const bodies = new Set(keys(BODY).map((k) => k.slice(BODY.length)));
    for (const key of keys(ITEM)) {
      const id = key.slice(ITEM.length);
      const meta = attempt(() => JSON.parse(get(key)));
      const hasBody = bodies.delete(id);
      if (typeof meta?.uploadId !== 'string') debris.push({ key, reason: 'unreadable queue entry' });
      else if (!hasBody && now() - meta.createdAt > 60000)
        debris.push({ key, reason: 'queue entry without its body' });
      else {
        const item = { ...meta, uploadId: id };
        if (withBodies) item.bodyText = bodyOf(item);
        if (!withBodies || item.bodyText) found.set(id, item); // a body still being written waits
      }
    }
    for (const id of bodies) debris.push({ key: BODY + id, reason: 'body without its queue entry' });
    for (const [id, item] of memory) if (!found.has(id)) found.set(id, { ...item });
    return { items: [...found.values()].sort(byQueueOrder), debris };
  }

  const queued = () => readQueue().items;
  const bodyOf = (item) => item.bodyText || recent.get(item.uploadId) || get(BODY + item.uploadId);
  const inQueue = (uploadId) => memory.has(uploadId) || typeof get(ITEM + uploadId) === 'string';

  function count() {
    const stored = new Set(keys(ITEM).map((key) => key.slice(ITEM.length)));
    estimate = stored.size + [...memory.keys()].filter((id) => !stored.has(id)).length;
    return estimate;
  }

  /** Meta first, body second (removal too): a body without its meta is always debris. */
  function save(item) {
    const id = item.uploadId;
    if (set(ITEM + id, metaText(item)) && set(BODY + id, item.bodyText)) {
      memory.delete(id);
      if (recent.size < 100) recent.set(id, item.bodyText);
      return true;
    }
    drop(id);
    memory.set(id, item);
    emit('not-persisted', { ...describe(item), reason: 'localStorage refused the write' });
    return false;
  }

  /** Record a try, unless the upload left the queue meanwhile (superseded, or sent by another tab). */
  function update(item) {
    if (memory.has(item.uploadId)) memory.set(item.uploadId, item);
    else if (inQueue(item.uploadId)) set(ITEM + item.uploadId, metaText(item));
  }

  function drop(uploadId) {
    memory.delete(uploadId);
    recent.delete(uploadId);
    del(ITEM + uploadId);
    del(BODY + uploadId);
  }

  /** Add an item under the bound: a newer status supersedes older ones of its participant, older
   *  statuses give way first; submissions and trials are never evicted. */
  function enqueue(item) {
    const max = config.maxQueueItems;
    const isStatus = item.uploadType === 'status';
    if (isStatus || ((estimate ?? count()) >= max && count() >= max)) {
      const kept = [];
      for (const old of queued()) {
        if (isStatus && old.uploadType === 'status' && old.participantId === item.participantId)
          supersede(old, item);
        else kept.push(old);
      }
      let excess = kept.length + 1 - max;
      for (const old of kept) {
        if (excess > 0 && old.uploadType === 'status') {
          supersede(old, item);
          excess -= 1;
        }
      }
      if (excess > 0 && isStatus) return 'full';
      if (excess > 0) {
        memory.set(item.uploadId, item);
        emit('not-persisted', { ...describe(item), reason: 'queue full' });
        return 'memory';
      }
    }
    if (estimate !== null) estimate += 1;
    return save(item) ? 'stored' : 'memory';
  }

  /** An older status gives way to a newer one; its callers get the newer one's answer. */
  function supersede(old, by) {
    drop(old.uploadId);
    emit('superseded', { ...describe(old), by: by.uploadId });
    for (const resolve of waiters.get(old.uploadId) || []) wait(by.uploadId, resolve);
    waiters.delete(old.uploadId);
  }

  function cleanQueue() {
    return attempt(() => {
      const { debris } = readQueue();
      for (const { key, reason } of debris) {
        if (!key.startsWith(ITEM)) del(key);
        else {
          drop(key.slice(ITEM.length));
          emit('dropped', { key, reason });
        }
      }
      return debris.length;
    }, 0);
  }

  // --- the backoff, shared by the tabs of an origin through localStorage

  function backoff() {
    const s = readJson(store(), RETRY) || backoffMemory || {};
    return { attempt: +s.attempt || 0, notBefore: +s.notBefore || 0, serverAsked: Boolean(s.serverAsked) };
  }

  const backoffWait = () => Math.max(0, backoff().notBefore - now());

  function setBackoff(state) {
    backoffMemory = state.attempt ? state : null;
    if (!state.attempt) del(RETRY);
    else if (set(RETRY, JSON.stringify(state))) backoffMemory = null;
  }

  const resetBackoff = () => backoff().attempt && setBackoff({ attempt: 0 });

  /** One more failure: the delay before the next try. */
  function fail(retryAfterMs = 0) {
    const { attempt: tries } = backoff();
    const { retryBaseMs: baseMs, retryMaxMs: maxMs } = config;
    const delay = backoffDelay(tries, { baseMs, maxMs, random, retryAfterMs });
    setBackoff({ attempt: tries + 1, notBefore: now() + delay, serverAsked: retryAfterMs > 0 });
    return delay;
  }

  // --- participants: their keys (docs/trust-model.md §2), and whether they were erased

  function bindKey(participantId, key = pendingKey) {
    if (!key) return;
    supplied.set(participantId, key);
    pendingKey = null;
    set(KEY + participantId, key);
  }

  /** The study's key, else the kept one, else a new one if it can be kept (null: send none, as a
   *  key lost at the next page load must not claim the participant). */
  function keyFor(participantId) {
    bindKey(participantId);
    if (supplied.has(participantId)) return supplied.get(participantId);
    const stored = get(KEY + participantId);
    if (KEY_PATTERN.test(stored)) return stored;
    const bytes = stored !== undefined && attempt(() => crypto().getRandomValues(new Uint8Array(32)));
    if (!bytes) return null;
    const fresh = btoa(String.fromCharCode(...bytes)).replace(
      /[+/=]/g,
      (c) => ({ '+': '-', '/': '_' })[c] || '',
    );
    const kept = set(KEY + participantId, fresh) && get(KEY + participantId); // another tab may write at once
    return KEY_PATTERN.test(kept) ? kept : null;
  }

  const isErased = (participantId) =>
    erased.has(participantId) || typeof get(ERASED + participantId) === 'string';

  /** The participant was erased: remember it, drop their queue, stop their status uploads. */
  function forget(participantId) {
    erased.add(participantId);
    set(ERASED + participantId, JSON.stringify({ erasedAt: new Date(now()) }));
    const dropped = dropWhere(
      (i) => i.participantId === participantId,
      'participant erased',
      (item) => erasedAnswer(participantId, describe(item)),
    );
    emit('erased', { participantId });
    if (pid === participantId) restartStatusTimer();
    return dropped;
  }

  function dropWhere(matches, reason, answer) {
    const items = queued().filter(matches);
    for (const item of items) {
      drop(item.uploadId);
      emit('dropped', { ...describe(item), reason });
      resolve(item.uploadId, answer(item));
    }
    return items.length;
  }

  // --- uploads

  function configure(given = {}) {
    attempt(() => {
      const picked = {};
      for (const key of [...Object.keys(DEFAULTS), ...INJECTED]) {
        if (given?.[key] !== undefined) picked[key] = given[key];
      }
      const { studyId } = config;
      config = { ...config, ...picked };
      if (picked.studyId && !validId(picked.studyId)) {
        config.studyId = studyId;
        emit('invalid-option', { option: 'studyId', error: `studyId must be ${ID_RULE}; it was ignored` });
      }
      config.maxBatchItems = Math.max(1, Math.min(+config.maxBatchItems || 50, MAX_BATCH_ITEMS));
      const participant = config.participantId ? String(config.participantId) : null;
      const key = given?.participantKey;
      if (key !== undefined && !KEY_PATTERN.test(key)) {
        const error = 'participantKey must be 16 to 256 letters, digits, _ or -; it was ignored';
        emit('invalid-option', { option: 'participantKey', error });
      } else if (key !== undefined && !participant) pendingKey = key;
      else if (key !== undefined || picked.participantId) bindKey(participant, key);
      if (picked.participantId) remember(participant);
      if (picked.statusIntervalMs !== undefined) restartStatusTimer();
      start();
    });
    return { ...config };
  }

  /** The request fields `collectFields` gathers (by default the seed study's keys). */
  function collectStudyFields(participantId) {
    const fields = attempt(() => config.collectFields(participantId, store()));
    return isPlainObject(fields) ? fields : {};
  }

  async function upload(participantId, uploadType, build, meta = {}) {
    try {
      if (!validId(participantId))
        return { status: 'error', participantId, error: `participantId must be ${ID_RULE}` };
      const id = String(participantId);
      if (isErased(id)) return erasedAnswer(id);
      start();
      if (uploadType !== 'trial') remember(id);
      let item;
      try {
        item = createItem(id, uploadType, build, meta);
      } catch (err) {
        return {
          status: 'error',
          participantId,
          error: `the upload cannot be serialised: ${errorText(err)}`,
        };
      }
      return await submit(item);
    } catch (err) {
      return { status: 'error', participantId, error: `uploader failure: ${errorText(err)}` };
    }
  }

  function createItem(participantId, uploadType, build, meta) {
    const createdAt = now();
    const base = {
      participantId,
      timestamp: new Date(createdAt).toISOString(),
      uploadId: makeId(),
      uploadType,
    };
    if (config.studyId) base.studyId = String(config.studyId);
    const fields = uploadType === 'trial' ? base : { ...base, ...collectStudyFields(participantId), ...base };
    const item = { ...base, createdAt, seq: ++seq, tries: 0, ...meta };
    item.bodyText = JSON.stringify(build(fields)); // a circular jsonDump throws here, not later
    return item;
  }

  /** Persist the item, then nudge the pump; resolves to the answer about this item. */
  function submit(item) {
    if (enqueue(item) === 'full') {
      const error = 'the queue is full of submissions; this status upload was not kept';
      return { status: 'error', reason: 'queue-full', ...describe(item), persisted: false, error };
    }
    const answer = new Promise((done) => wait(item.uploadId, done));
    const waitMs = backoffWait();
    if (waitMs > 0) {
      schedule(waitMs);
      answerFor(item, failed(WAITING));
    } else if (item.uploadType !== 'trial' || waiters.size >= config.maxBatchItems) nudge(0);
    else nudge(+config.batchDelayMs || 0);
    // Every call is answered in time, even while another tab holds the lock: queued, sent later.
    later(
      () => {
        if (waiters.has(item.uploadId) && !inflight.has(item.uploadId) && inQueue(item.uploadId)) {
          answerFor(item, failed(BUSY));
        }
      },
      +config.batchDelayMs + config.timeoutMs + 1000,
    );
    return answer;
  }

  const wait = (uploadId, done) => waiters.set(uploadId, [...(waiters.get(uploadId) || []), done]);

  /** Answer an upload's callers; during a pump round, once it is over (queue, backoff and lease
   *  then say what the answer says). */
  function resolve(uploadId, answer) {
    for (const done of waiters.get(uploadId) || []) ready.push(() => done(answer));
    waiters.delete(uploadId);
    if (!inRound) deliver();
  }

  function deliver() {
    inRound = false;
    const answers = ready;
    ready = [];
    for (const answer of answers) answer();
  }

  /** The one place that decides what an answer means for an upload: queue, counts, events, callers. */
  function answerFor(item, outcome, counts = newCounts()) {
    const about = describe(item);
    const { kind, httpStatus, error, reason } = outcome;
    let answer;
    for (const done of changeWaiters.splice(0)) done();
    if (kind === 'ok') {
      drop(item.uploadId);
      counts.stored += 1;
      storedCount += 1;
      const keyVerified = outcome.json.keyVerified !== false;
      emit('stored', { ...about, keyVerified });
      if (!keyVerified) emit('key-mismatch', { ...about, httpStatus });
      answer = outcome.json;
    } else if (keptFor(outcome) || kind === 'too-large') {
      item.tooLarge ||= kind === 'too-large';
      if (error !== WAITING && error !== BUSY) item.tries += 1;
      update(item);
      answer = { ...about, persisted: !memory.has(item.uploadId), httpStatus, error };
      if (reason) answer.reason = reason;
      if (item.tooLarge) emit('too-large', (answer.reason = kind) && answer);
      else {
        if (kind === 'hold') emit('study-unavailable', answer);
        emit('queued', answer);
      }
      answer = { status: item.tooLarge ? 'error' : 'queued', ...answer };
    } else {
      answer = { status: 'error', ...about, persisted: false, httpStatus, error };
      if (reason) answer.reason = reason;
      // Dropped already, with its participant's or its study's other uploads: told once.
      if (kind !== 'reject' && !inQueue(item.uploadId)) return resolve(item.uploadId, answer);
      drop(item.uploadId);
      counts.rejected += 1;
      emit('rejected', { ...about, httpStatus, error, reason });
      if (reason === 'participant-key') emit('key-mismatch', { ...about, httpStatus });
      if (kind === 'erased') counts.rejected += forget(item.participantId);
      if (kind === 'archived' && item.studyId) {
        const archived = (other) => ({ status: 'error', reason: 'study-archived', ...describe(other) });
        counts.rejected += dropWhere((i) => i.studyId === item.studyId, 'study archived', archived);
      }
    }
    resolve(item.uploadId, answer);
  }

  // --- the pump: the one sender of the queue (docs/browser-module.md §4)

  /** Have the pump send within `ms` (an earlier nudge wins); returns the running pump. */
  function nudge(ms) {
    const at = now() + Math.max(0, ms);
    if (at < dueAt) {
      dueAt = at;
      rearm?.();
      wake?.();
    }
    if (!pump) {
      let done;
      pump = new Promise((r) => {
        done = r;
      });
      pumpRounds(done); // it runs synchronously up to its first request
    }
    return pump;
  }

  /** A later nudge, from a timer. */
  function schedule(ms) {
    const at = now() + Math.max(0, ms);
    if (closed || (timer && timerAt <= at)) return;
    cancel(timer);
    timerAt = at;
    timer = later(() => {
      timer = null;
      fromTimer = true;
      nudge(0);
    }, ms);
  }

  async function pumpRounds(done) {
    const total = newCounts();
    try {
      while (dueAt < Infinity) await crossTab(total);
    } catch (err) {
      total.error = errorText(err);
      dueAt = Infinity;
      attempt(() => settleWaiters(true));
    }
    pump = null; // in the same step as the loop's last look at dueAt: no nudge is missed
    done(total);
  }

  /** Wait until the pump is due (a batch delay), holding the cross-tab lock meanwhile. */
  const untilDue = () =>
    new Promise((done) => {
      const arm = () => {
        cancel(dueTimer);
        if (dueAt > now()) dueTimer = later(arm, dueAt - now());
        else {
          rearm = null;
          done();
        }
      };
      (rearm = arm)();
    });

  async function drain() {
    if (dueAt > now()) await untilDue();
    const forced = force;
    const announce = force || fromTimer;
    dueAt = Infinity;
    force = fromTimer = false;
    const counts = newCounts();
    const waitMs = backoffWait();
    if (!forced && waitMs > 0) {
      schedule(waitMs);
      counts.error = WAITING;
    } else {
      if (announce) cleanQueue(); // as at start: on flushes and retries, not on every upload
      let single = false;
      for (;;) {
        const batch = nextBatch(single, counts);
        if (batch?.length === 0) break;
        lease(); // renewed before each request
        const result = batch ? await send(batch, counts) : await askLimit();
        single ||= result === 'split';
        if (result?.error) {
          counts.error = result.error;
          schedule(fail(result.retryAfterMs));
          break;
        }
      }
      if (!counts.error) resetBackoff();
    }
    settleWaiters(Boolean(counts.error));
    counts.remaining = count();
    if (announce) emit('flushed', counts);
    return counts;
  }

  /** After a round: on a failure this page's calls still waiting learn their upload is queued; else
   *  those whose upload left the queue without this page (another tab sent it) learn that. */
  function settleWaiters(failure) {
    let items;
    for (const uploadId of waiters.keys()) {
      if (inflight.has(uploadId)) continue;
      items ||= queued();
      const item = items.find((i) => i.uploadId === uploadId);
      if (failure && item) answerFor(item, failed(WAITING));
      else if (!failure && !item) resolve(uploadId, { status: 'success', uploadId, sentBy: 'another tab' });
    }
  }

  /** The next batch: due, not in flight, not too large; null to ask the collector's limit first. */
  function nextBatch(single, counts) {
    const maxItems = single ? 1 : config.maxBatchItems;
    const max = +config.maxUploadBytes || limit;
    const batch = [];
    for (const item of queued()) {
      if (batch.length >= maxItems) break;
      if (item.tooLarge || inflight.has(item.uploadId)) continue;
      if (isErased(item.participantId)) {
        drop(item.uploadId);
        resolve(item.uploadId, erasedAnswer(item.participantId, describe(item)));
        continue;
      }
      const text = bodyOf(item);
      if (!text) continue; // still being written by another tab
      item.bodyText = withKey(item, text);
      const size = byteLength(item.bodyText) + WRAPPER_BYTES;
      if (size <= ASK_LIMIT_FROM || size <= max) batch.push(item);
      else if (!max) return null;
      else
        answerFor(
          item,
          { kind: 'too-large', httpStatus: 0, error: 'larger than the collector accepts' },
          counts,
        );
    }
    const maxBytes = Math.min(config.maxBatchBytes, (max || MAX_UPLOAD_BYTES) - WRAPPER_BYTES);
    return splitBatches(batch, { maxItems, maxBytes })[0] || [];
  }

  /** The collector's body limit, from its OpenAPI description (an older collector's: the default).
   *  Unanswered, it is a failure like any other: an upload is never judged too large on a guess. */
  async function askLimit() {
    const outcome = await request('/openapi.json');
    if (outcome.json?.info || outcome.httpStatus === 404) {
      limit = +outcome.json?.info?.['x-max-upload-bytes'] || MAX_UPLOAD_BYTES;
      return null;
    }
    return outcome;
  }

  /** The body as sent: the participant key first, added now, so a key supplied later is used. */
  function withKey(item, text) {
    const key = keyFor(item.participantId);
    return key
      ? `{"participantKey":${JSON.stringify(key)}${text.trim() === '{}' ? '}' : ',' + text.slice(1)}`
      : text;
  }

  /**
   * Send a batch and answer each upload in it. Returns null, the failure that delays what follows,
   * or 'split' when the request as a whole was refused (its uploads then go one per batch).
   */
  async function send(batch, counts, requestOptions = {}) {
    for (const item of batch) inflight.add(item.uploadId);
    const body = `{"uploads":[${batch.map((i) => i.bodyText).join(',')}]}`;
    let outcome = await request('/api/upload-user-data/batch', body, requestOptions);
    for (const item of batch) inflight.delete(item.uploadId);
    const results = outcome.kind === 'ok' && outcome.json.results;
    if (!Array.isArray(results)) {
      if (outcome.kind === 'ok') outcome = failed('bad batch answer');
      if (!keptFor(outcome) && batch.length > 1) return 'split';
      for (const item of batch) answerFor(item, outcome, counts);
      return keptFor(outcome) ? outcome : null;
    }
    let failure = null;
    const answered = new Set();
    for (const result of results) {
      const item = batch[result?.index];
      if (!item || result.uploadId !== item.uploadId || answered.has(item)) continue;
      answered.add(item);
      const itemOutcome = classify(+result.httpStatus || 0, result, (+result.retryAfter || 0) * 1000);
      answerFor(item, itemOutcome, counts);
      if (keptFor(itemOutcome)) failure ||= itemOutcome;
    }
    for (const item of batch.filter((i) => !answered.has(i))) {
      failure ||= failed('not answered');
      answerFor(item, failure, counts);
    }
    return failure;
  }

  // --- one sender across the tabs of an origin: Web Locks where present, else a lease

  const locks = () => attempt(() => (config.locks !== undefined ? config.locks : globalThis.navigator.locks));
  const useLease = () => config.crossTabLock && typeof locks()?.request !== 'function';

  /** Run pump rounds as the origin's one sender, adding their counts to `total`; or none, another
   *  tab being the sender. */
  async function crossTab(total) {
    const run = async () => {
      inRound = true;
      try {
        const counts = await drain();
        total.stored += counts.stored;
        total.rejected += counts.rejected;
        total.remaining = counts.remaining;
        if (counts.error) total.error = counts.error;
        return counts;
      } finally {
        if (readJson(store(), LEASE)?.owner === tab) del(LEASE);
        deliver();
      }
    };
    if (!config.crossTabLock) return run();
    if (!useLease()) {
      return locks().request(NS + 'flush', async () => {
        // After a round that changed the queue the lock is kept a moment, as other tabs see
        // localStorage changes a little later; this tab's own next round (its writes need no time)
        // ends that moment and runs at once, a few rounds at most.
        for (let rounds = 0; rounds < 10 && dueAt < Infinity; rounds += 1) {
          const counts = await run();
          const grace = +config.lockGraceMs || 0;
          if (counts.error) break;
          if (!grace || counts.stored + counts.rejected === 0) continue;
          await new Promise((done) => {
            const id = later(done, grace);
            wake = () => done(cancel(id));
          });
          wake = null;
        }
      });
    }
    const held = () => {
      const other = readJson(store(), LEASE);
      return other?.owner !== tab && +other?.until > now() ? other : null;
    };
    let other = held();
    if (!other) {
      lease(dueAt);
      other = held(); // another tab wrote its lease at the same moment
    }
    if (!other) return run();
    dueAt = Infinity;
    schedule(other.until - now() + 50);
    settleWaiters(true);
    Object.assign(total, { remaining: count(), skipped: true });
  }

  /** Without Web Locks: hold the lease until a request sent at `from` must have ended. */
  function lease(from = now()) {
    if (useLease())
      set(LEASE, JSON.stringify({ owner: tab, until: Math.max(from, now()) + config.timeoutMs + 1000 }));
  }

  // --- flushing, state, backup, restore

  function flushQueue() {
    try {
      start();
      force = true;
      return nudge(0);
    } catch (err) {
      return Promise.resolve({ ...newCounts(), error: errorText(err) });
    }
  }

  async function flush(timeoutMs = 10000) {
    const before = storedCount;
    const budget = Math.max(0, +timeoutMs || 0);
    const deadline = now() + budget;
    let clock;
    const timeUp = new Promise((done) => {
      clock = later(done, budget);
    });
    const drained = (async () => {
      for (;;) {
        const { remaining } = await flushQueue();
        const left = deadline - now();
        if (!remaining || left <= 0) return;
        const due = timer ? timerAt - now() : 0;
        await new Promise((done) => {
          changeWaiters.push(done);
          later(done, Math.min(left, Math.max(100, due)));
        });
      }
    })().catch(() => {});
    await Promise.race([drained, timeUp]);
    cancel(clock);
    return { stored: storedCount - before, remaining: getQueueState().items.length };
  }

  function getQueueState() {
    return attempt(
      () => {
        const items = queued().map((item) => {
          const row = { ...describe(item), timestamp: item.timestamp, tries: item.tries };
          row.persisted = !memory.has(item.uploadId);
          if (item.tooLarge) row.tooLarge = true;
          return row;
        });
        const { attempt: tries, notBefore } = backoff();
        return { items, attempt: tries, nextAttemptAt: notBefore, flushing: Boolean(pump) };
      },
      { items: [], attempt: 0, nextAttemptAt: 0, flushing: false },
    );
  }

  function downloadBackup(participantId = undefined) {
    const uploads = [];
    for (const item of attempt(() => readQueue(true).items, [])) {
      if (participantId === undefined || item.participantId === String(participantId)) {
        uploads.push(
          attempt(() => JSON.parse(item.bodyText), { ...describe(item), unreadable: item.bodyText }),
        );
      }
    }
    const stamp = new Date(now()).toISOString().replace(/[:.]/g, '-');
    const filename = `backup-${participantId ?? 'all'}-${stamp}.json`;
    const text = JSON.stringify({ uploads }, null, 1);
    attempt(() => {
      const link = globalThis.document.createElement('a');
      link.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
      link.download = filename;
      link.click();
      later(() => URL.revokeObjectURL(link.href), 60000);
    });
    return { filename, text, count: uploads.length };
  }

  async function restoreUserStatus(participantId) {
    const restored = {};
    try {
      if (!validId(participantId)) {
        return { status: 'error', participantId, restored, error: `participantId must be ${ID_RULE}` };
      }
      const id = String(participantId);
      if (isErased(id)) return erasedAnswer(id, { restored });
      start();
      const body = {
        participantId: id,
        participantKey: keyFor(id) || undefined,
        studyId: config.studyId || undefined,
      };
      // text/plain: no CORS preflight, one round trip fewer while the study page loads.
      const outcome = await request('/api/user-status', JSON.stringify(body), { contentType: 'text/plain' });
      if (outcome.kind === 'erased') {
        forget(id);
        return erasedAnswer(id, { restored });
      }
      if (outcome.httpStatus === 404 && !outcome.reason)
        return { status: 'not-found', participantId: id, restored };
      const status = outcome.kind === 'ok' && outcome.json.userStatus;
      if (!isPlainObject(status)) {
        return { status: 'error', participantId: id, restored, error: outcome.error, reason: outcome.reason };
      }
      Object.assign(restored, config.restoreFields(id, status, store()));
      return { status: 'success', participantId: id, restored };
    } catch (err) {
      return { status: 'error', participantId, restored, error: errorText(err) };
    }
  }

  // --- the page: periodic and last-moment status uploads, coming back online

  function start() {
    if (started || closed) return;
    started = true;
    tab = makeId();
    listen();
    restartStatusTimer();
    cleanQueue();
    if (count()) schedule(backoffWait());
  }

  function close() {
    closed = true;
    for (const [target, type, handler] of listeners.splice(0))
      attempt(() => target.removeEventListener(type, handler));
    cancel(timer);
    cancel(statusTimer);
    timer = statusTimer = null;
  }

  function remember(participantId) {
    if (pid === participantId) return;
    pid = participantId;
    restartStatusTimer();
  }

  function restartStatusTimer() {
    cancel(statusTimer);
    statusTimer = null;
    const every = +config.statusIntervalMs || 0;
    if (every <= 0 || !pid || !started || closed || isErased(pid)) return;
    statusTimer = later(() => {
      if (!hidden) uploadUserStatus(pid);
      restartStatusTimer();
    }, every);
  }

  /** Hidden or going away: queue a last status, then send the queue in keepalive mode. */
  function onHidden() {
    if (!hidden && pid && !isErased(pid))
      attempt(() => enqueue(createItem(pid, 'status', (body) => body, {})));
    hidden = true;
    let budget = KEEPALIVE_BYTES - keepaliveBytes;
    const items = readQueue(true).items.filter((i) => !i.tooLarge && !inflight.has(i.uploadId));
    for (const item of items) item.bodyText = withKey(item, item.bodyText);
    for (const batch of splitBatches(items, { maxItems: config.maxBatchItems, maxBytes: budget })) {
      const size = batch.reduce((sum, i) => sum + byteLength(i.bodyText) + 1, 16);
      if (size > budget) continue;
      budget -= size;
      keepaliveBytes += size;
      send(batch, newCounts(), { keepalive: true, contentType: 'text/plain' })
        .then((failure) => failure?.error && schedule(fail(failure.retryAfterMs)))
        .catch(() => {})
        .finally(() => {
          keepaliveBytes -= size;
        });
    }
  }

  function onVisible() {
    hidden = false;
    if (backoffWait() > 0) schedule(backoffWait());
    else flushQueue();
  }

  function listen() {
    const on = (target, type, handler) => {
      if (!target?.addEventListener) return;
      target.addEventListener(type, handler);
      listeners.push([target, type, handler]);
    };
    attempt(() => {
      const d = globalThis.document;
      on(globalThis.window, 'online', () => {
        // A network failure's backoff no longer applies (a server's Retry-After still does).
        if (!backoff().serverAsked) resetBackoff();
        onVisible();
      });
      on(globalThis.window, 'pagehide', onHidden);
      on(globalThis.window, 'pageshow', onVisible);
      on(d, 'visibilitychange', () => (d.visibilityState === 'hidden' ? onHidden() : onVisible()));
    });
  }

  const uploadUserStatus = (participantId) => upload(participantId, 'status', (body) => body);

  const uploader = {
    configure,
    start,
    close,
    collectStudyFields,
    uploadUserStatus,
    /** A submission (the jsonDump; anything else is sent wrapped) with the study's fields. */
    uploadSubmissionData(participantId, submissionData) {
      return upload(participantId, 'submission', (body) => {
        body.submissionData = wrap(body, 'submissionData', submissionData);
        return body;
      });
    },
    /** One trial, stored once per (sessionId, trialIndex); `extraFields` cannot replace its own. */
    uploadTrialData(participantId, sessionId, trialIndex, trialData, extraFields = undefined) {
      let error = validId(sessionId) ? null : `sessionId must be ${ID_RULE}`;
      if (!Number.isInteger(trialIndex) || trialIndex < 0 || trialIndex > MAX_TRIAL_INDEX) {
        error = `trialIndex must be an integer from 0 to ${MAX_TRIAL_INDEX}`;
      }
      if (error) return Promise.resolve({ status: 'error', participantId, error });
      const trial = { sessionId: String(sessionId), trialIndex };
      const build = (base) => {
        const body = {};
        for (const [name, value] of Object.entries(isPlainObject(extraFields) ? extraFields : {})) {
          if (!RESERVED.split(' ').includes(name)) body[name] = value;
        }
        Object.assign(body, base, trial);
        body.trialData = wrap(body, 'trialData', trialData);
        return body;
      };
      return upload(participantId, 'trial', build, trial);
    },
    restoreUserStatus,
    flushQueue,
    flush,
    getQueueState,
    cleanQueue,
    downloadBackup,
  };
  configure(options);
  return uploader;
}

let defaultInstance = null;
let explicitInstances = 0;

/** The default instance, behind the functions below. */
export const getUploader = () => (defaultInstance ||= makeUploader({}));
export const configureUploader = (options = {}) => getUploader().configure(options);
export const uploadUserStatus = (participantId) => getUploader().uploadUserStatus(participantId);
export const uploadSubmissionData = (participantId, submissionData) =>
  getUploader().uploadSubmissionData(participantId, submissionData);
export const uploadTrialData = (participantId, sessionId, trialIndex, trialData, extraFields = undefined) =>
  getUploader().uploadTrialData(participantId, sessionId, trialIndex, trialData, extraFields);
export const restoreUserStatus = (participantId) => getUploader().restoreUserStatus(participantId);
export const flushQueue = () => getUploader().flushQueue();
export const flushUntilEmpty = (timeoutMs = 10000) => getUploader().flush(timeoutMs);
export const getQueueState = () => getUploader().getQueueState();
export const collectStudyFields = (participantId) => getUploader().collectStudyFields(participantId);
export const downloadBackup = (participantId = undefined) => getUploader().downloadBackup(participantId);

// In a page, the default instance starts after the importing module's top level ran (its
// configureUploader applies first), unless the page made instances of its own and never used it.
if (globalThis.window) {
  globalThis.setTimeout(() => (defaultInstance || !explicitInstances) && getUploader().start(), 0);
}
