/**
 * data-uploader.js: backs a browser study's participant data up to the collector.
 * How it works and what it promises: docs/browser-module.md. No call throws or rejects.
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
  errorText,
  globalStorage,
  isPlainObject,
  newId,
  readJson,
  readRaw,
  removeRaw,
  writeRaw,
} from './collector-common.js';
import * as seedStudy from './seed-study.js';

export { STUDY_KEYS, parseStoredValue } from './seed-study.js';

const NS = 'dataUploader.v1.';
const ITEM = NS + 'item.';
const BODY = NS + 'body.';
const KEY = NS + 'key.';
const ERASED = NS + 'erased.';
const RETRY = NS + 'retry';
const LEASE = NS + 'lease';
const LOCK = NS + 'flush';

const UPLOAD_PATH = '/api/upload-user-data/batch';
const RESTORE_PATH = '/api/user-status';
const DESCRIPTION_PATH = '/openapi.json';

const KEEPALIVE_BYTES = 60000; // browsers refuse keepalive bodies past 64 KiB in flight
const WRAPPER_BYTES = 300; // the batch wrapper and the participant key added at send time
const CHECK_LIMIT_FROM = 65536; // smaller uploads are sent without asking the collector's limit
const ORPHAN_MS = 60000; // a queue entry without its body this old was never completed
const MARGIN_MS = 1000;
const FLUSH_PAUSE_MS = 100;
const LEARN_LIMIT = 'learn-limit';

// A copy served by the study's own site has the page's origin; a module imported from the collector,
// the collector's.
let moduleOrigin = '';
try {
  const url = new URL(import.meta.url);
  if (url.protocol.startsWith('http')) moduleOrigin = url.origin;
} catch {
  // not loaded from a URL
}

const DEFAULTS = Object.freeze({
  collectorUrl: null,
  participantId: null,
  studyId: null,
  timeoutMs: 15000,
  statusIntervalMs: 300000,
  retryBaseMs: 2000,
  retryMaxMs: 300000,
  maxBatchItems: MAX_BATCH_ITEMS,
  maxBatchBytes: 1048576,
  maxUploadBytes: null, // null: learnt from the collector
  batchDelayMs: 100,
  maxQueueItems: 1000,
  crossTabLock: true,
  lockGraceMs: 50,
  collectFields: seedStudy.collectStudyFields,
  restoreFields: seedStudy.restoreStudyFields,
  onEvent: null,
  storage: undefined,
  fetch: undefined,
  locks: undefined,
  crypto: undefined,
  now: undefined,
  random: undefined,
  setTimeout: undefined,
  clearTimeout: undefined,
});

const TRIAL_RESERVED = new Set([
  'participantId',
  'participantKey',
  'timestamp',
  'uploadId',
  'uploadType',
  'sessionId',
  'trialIndex',
  'trialData',
  'studyId',
]);

const validId = (id) => (typeof id === 'string' || Number.isInteger(id)) && ID_PATTERN.test(String(id));

let encoder = null;
// JSON of ASCII data is ASCII: its length is its size, without encoding 30 KB per call.
function byteLength(text) {
  // eslint-disable-next-line no-control-regex
  if (!/[^\x00-\x7f]/.test(text)) return text.length;
  encoder = encoder || new TextEncoder();
  return encoder.encode(text).length;
}

/** What an event or answer says about an upload: never its body, never the key. */
function describe(item) {
  const about = { uploadId: item.uploadId, participantId: item.participantId, uploadType: item.uploadType };
  if (item.uploadType === 'trial') {
    about.sessionId = item.sessionId;
    about.trialIndex = item.trialIndex;
  }
  if (item.studyId) about.studyId = item.studyId;
  return about;
}

/**
 * Split items ({bodyText}) into batches of at most `maxItems` (and 50) items and about `maxBytes`
 * bytes; an item larger than `maxBytes` travels alone; order is kept.
 */
export function splitBatches(items, { maxItems, maxBytes }) {
  const batches = [];
  let batch = [];
  let bytes = 0;
  const limit = Math.max(1, Math.min(maxItems, MAX_BATCH_ITEMS));
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

/**
 * Milliseconds before try `attempt + 1`: uniform in [0, min(maxMs, baseMs·2^attempt)], never sooner
 * than `retryAfterMs` (itself capped at `maxMs`).
 */
export function backoffDelay(attempt, { baseMs, maxMs, random = Math.random, retryAfterMs = 0 }) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(attempt, 0), 40));
  return Math.max(random() * ceiling, Math.min(retryAfterMs || 0, maxMs));
}

function parseRetryAfter(header, nowMs) {
  if (!header) return 0;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const when = Date.parse(header);
  return Number.isFinite(when) ? Math.max(0, when - nowMs) : 0;
}

const HOLD = new Set(['unknown-study', 'study-closed', 'study-full']);

/**
 * What an answer means for its upload: ok, retry, reject (final), erased (the participant),
 * archived (the study), hold (the study does not take uploads now: kept) or too-large (kept).
 */
function classify(httpStatus, json, retryAfterMs) {
  const error = typeof json?.error === 'string' ? json.error : `HTTP ${httpStatus}`;
  const reason = typeof json?.reason === 'string' ? json.reason : undefined;
  const outcome = { kind: 'retry', httpStatus, json, error, reason, retryAfterMs };
  if (httpStatus >= 200 && httpStatus < 300) {
    // Only the collector's own success answer counts: a captive portal's 200 stored nothing.
    if (json?.status === 'success') outcome.kind = 'ok';
    else outcome.error = "the answer was not the collector's";
  } else if (HOLD.has(reason)) outcome.kind = 'hold';
  else if (httpStatus === 410) outcome.kind = reason === 'study-archived' ? 'archived' : 'erased';
  else if (httpStatus === 413) outcome.kind = 'too-large';
  else if (httpStatus >= 400 && httpStatus < 500 && httpStatus !== 429) outcome.kind = 'reject';
  return outcome;
}

const newCounts = () => ({ stored: 0, rejected: 0, remaining: 0 });

function erasedAnswer(participantId, extra = {}) {
  const error = "this participant's data was erased at the research team's request; nothing more is sent";
  return { status: 'error', reason: 'erased', participantId, ...extra, error };
}

const invalidId = (participantId, extra = {}) => ({
  status: 'error',
  participantId,
  ...extra,
  error: `participantId must be ${ID_RULE}`,
});

// --- the host: configuration, clock, timers, storage, events and requests of one instance

class Host {
  config = { ...DEFAULTS };

  now() {
    return this.config.now ? this.config.now() : Date.now();
  }

  random() {
    return this.config.random ? this.config.random() : Math.random();
  }

  later(fn, ms) {
    const run = () => {
      try {
        fn();
      } catch {
        // the module's own callbacks report through events
      }
    };
    const id = (this.config.setTimeout || globalThis.setTimeout)(run, Math.max(0, ms));
    id?.unref?.(); // never keeps a Node process alive
    return id;
  }

  cancel(id) {
    try {
      (this.config.clearTimeout || globalThis.clearTimeout)(id);
    } catch {
      // nothing to cancel
    }
  }

  storage() {
    return this.config.storage !== undefined ? this.config.storage : globalStorage('localStorage');
  }

  read(key) {
    return readRaw(this.storage(), key);
  }

  write(key, text) {
    return writeRaw(this.storage(), key, text);
  }

  remove(key) {
    removeRaw(this.storage(), key);
  }

  readJson(key) {
    return readJson(this.storage(), key);
  }

  keysStartingWith(prefixes) {
    const found = [];
    try {
      const s = this.storage();
      const n = s ? Number(s.length) || 0 : 0;
      for (let i = 0; i < n; i += 1) {
        const key = s.key(i);
        if (typeof key === 'string' && prefixes.some((prefix) => key.startsWith(prefix))) found.push(key);
      }
    } catch {
      // unusable storage lists nothing
    }
    return found;
  }

  emit(type, detail) {
    try {
      if (typeof this.config.onEvent === 'function') this.config.onEvent({ type, ...detail });
    } catch {
      // the study's handler threw: not the upload's problem
    }
  }

  newId() {
    return newId(this.config.crypto || globalThis.crypto, () => this.random());
  }

  /** A new participant key (32 random bytes, base64url), or null without cryptographic randomness. */
  newKey() {
    try {
      const bytes = (this.config.crypto || globalThis.crypto).getRandomValues(new Uint8Array(32));
      return btoa(String.fromCharCode(...bytes))
        .replace(/\+/g, '-')
        .replace(/\//g, '_')
        .replace(/=+$/, '');
    } catch {
      return null;
    }
  }

  url(path) {
    let base = this.config.collectorUrl || moduleOrigin;
    try {
      base = base || globalThis.location.origin;
    } catch {
      // no page
    }
    return String(base || '').replace(/\/+$/, '') + path;
  }

  /** One request; resolves to its `classify` outcome (`retry` on a network error or a timeout). */
  async request(path, body, { keepalive = false, contentType = 'application/json', method = 'POST' } = {}) {
    const fetchFn = this.config.fetch || globalThis.fetch;
    if (typeof fetchFn !== 'function') return classify(0, { error: 'fetch is unavailable' });
    const controller = typeof AbortController === 'function' ? new AbortController() : null;
    const ms = this.config.timeoutMs;
    let timer;
    const timeout = new Promise((resolve) => {
      timer = this.later(() => {
        controller?.abort();
        resolve(classify(0, { error: `no answer within ${ms} ms` }));
      }, ms);
    });
    const init = { method, mode: 'cors', credentials: 'omit', keepalive, signal: controller?.signal };
    if (body !== undefined) {
      init.body = body;
      init.headers = { 'Content-Type': contentType };
    }
    const answer = (async () => {
      const response = await fetchFn.call(globalThis, this.url(path), init);
      const json = await response.json().catch(() => null);
      let retryAfter = null;
      try {
        retryAfter = response.headers.get('Retry-After');
      } catch {
        // no headers
      }
      return classify(Number(response.status) || 0, json, parseRetryAfter(retryAfter, this.now()));
    })().catch((err) => classify(0, { error: `network error: ${errorText(err)}` }));
    try {
      return await Promise.race([answer, timeout]);
    } finally {
      this.cancel(timer);
    }
  }
}

// --- the persistent queue: per upload a small meta key and a body key, so tabs appending and
// removing never overwrite each other, and listing the queue never parses a body.

const metaText = ({ bodyText: _body, ...meta }) => JSON.stringify(meta);

function byQueueOrder(a, b) {
  return a.createdAt - b.createdAt || (a.seq || 0) - (b.seq || 0) || (a.uploadId < b.uploadId ? -1 : 1);
}

class Queue {
  memory = new Map(); // uploads localStorage could not hold, kept for this page's life
  recent = new Map(); // bodies this page wrote, so sending does not read them back
  estimate = null; // an upper bound on the length, so a trial need not list localStorage

  constructor(host) {
    this.host = host;
  }

  /** The queue, oldest first, and its debris; reading changes nothing. */
  read(withBodies = false) {
    const { host } = this;
    const found = new Map();
    const debris = [];
    const keys = host.keysStartingWith([ITEM, BODY]);
    const bodies = new Set(keys.filter((k) => k.startsWith(BODY)).map((k) => k.slice(BODY.length)));
    for (const key of keys) {
      if (!key.startsWith(ITEM)) continue;
      const id = key.slice(ITEM.length);
      const text = host.read(key);
      if (typeof text !== 'string') continue;
      let meta = null;
      try {
        meta = JSON.parse(text);
      } catch {
        // reported as debris below
      }
      const hasBody = bodies.delete(id);
      if (typeof meta?.uploadId !== 'string') debris.push({ key, reason: 'unreadable queue entry' });
      else if (!hasBody && host.now() - meta.createdAt > ORPHAN_MS) {
        debris.push({ key, reason: 'queue entry without its body' });
      } else {
        const item = { ...meta, uploadId: id };
        if (withBodies) item.bodyText = this.body(item);
        // A body still being written (by another tab) is not sent yet.
        if (!withBodies || item.bodyText) found.set(id, item);
      }
    }
    for (const id of bodies) debris.push({ key: BODY + id, reason: 'body without its queue entry' });
    for (const [id, item] of this.memory) if (!found.has(id)) found.set(id, { ...item });
    return { items: [...found.values()].sort(byQueueOrder), debris };
  }

  count() {
    const stored = new Set(this.host.keysStartingWith([ITEM]).map((key) => key.slice(ITEM.length)));
    let extra = 0;
    for (const id of this.memory.keys()) if (!stored.has(id)) extra += 1;
    this.estimate = stored.size + extra;
    return this.estimate;
  }

  has(uploadId) {
    return this.memory.has(uploadId) || typeof this.host.read(ITEM + uploadId) === 'string';
  }

  clean() {
    const { debris } = this.read();
    for (const { key, reason } of debris) {
      if (key.startsWith(ITEM)) {
        this.drop(key.slice(ITEM.length));
        this.host.emit('dropped', { key, reason });
      } else this.host.remove(key);
    }
    return debris.length;
  }

  /** Meta first, body second (removal too), so a body without its meta is always debris. */
  save(item) {
    const id = item.uploadId;
    if (this.host.write(ITEM + id, metaText(item)) && this.host.write(BODY + id, item.bodyText)) {
      this.memory.delete(id);
      if (this.recent.size < 100) this.recent.set(id, item.bodyText);
      return true;
    }
    this.drop(id);
    this.memory.set(id, item);
    return false;
  }

  /** Record a try, unless the upload left the queue meanwhile (superseded, or sent by another tab). */
  update(item) {
    if (this.memory.has(item.uploadId)) this.memory.set(item.uploadId, item);
    else if (typeof this.host.read(ITEM + item.uploadId) === 'string') {
      this.host.write(ITEM + item.uploadId, metaText(item));
    }
  }

  body(item) {
    return item.bodyText || this.recent.get(item.uploadId) || this.host.read(BODY + item.uploadId);
  }

  drop(uploadId) {
    this.memory.delete(uploadId);
    this.recent.delete(uploadId);
    this.host.remove(ITEM + uploadId);
    this.host.remove(BODY + uploadId);
  }

  /**
   * Add an item under the bound: a newer status upload supersedes older ones of its participant,
   * and older status uploads give way first; submissions and trials are never evicted.
   * @returns {'stored'|'memory'|'full'}
   */
  enqueue(item, maxItems, supersede) {
    const isStatus = item.uploadType === 'status';
    if (!isStatus && (this.estimate ?? this.count()) < maxItems) return this.#persist(item);
    if (!isStatus && this.count() < maxItems) return this.#persist(item);
    const kept = [];
    for (const old of this.read().items) {
      if (isStatus && old.uploadType === 'status' && old.participantId === item.participantId) {
        supersede(old, item);
      } else kept.push(old);
    }
    let excess = kept.length + 1 - maxItems;
    for (const old of kept) {
      if (excess <= 0) break;
      if (old.uploadType === 'status') {
        supersede(old, item);
        excess -= 1;
      }
    }
    if (excess <= 0) return this.#persist(item);
    if (isStatus) return 'full';
    this.memory.set(item.uploadId, item);
    this.host.emit('not-persisted', { ...describe(item), reason: 'queue full' });
    return 'memory';
  }

  #persist(item) {
    if (this.estimate !== null) this.estimate += 1;
    if (this.save(item)) return 'stored';
    this.host.emit('not-persisted', { ...describe(item), reason: 'localStorage refused the write' });
    return 'memory';
  }
}

// --- the retry schedule, shared by the tabs of one origin through localStorage

class RetrySchedule {
  memory = null;

  constructor(host) {
    this.host = host;
  }

  state() {
    const s = this.host.readJson(RETRY) || this.memory || {};
    return {
      attempt: Number(s.attempt) || 0,
      notBefore: Number(s.notBefore) || 0,
      serverAsked: Boolean(s.serverAsked),
    };
  }

  wait() {
    return Math.max(0, this.state().notBefore - this.host.now());
  }

  set(state) {
    this.memory = state.attempt ? state : null;
    if (!state.attempt) this.host.remove(RETRY);
    else if (this.host.write(RETRY, JSON.stringify(state))) this.memory = null;
  }

  reset() {
    if (this.state().attempt) this.set({ attempt: 0 });
  }

  /** One more failure: returns the delay before the next try. */
  fail(retryAfterMs = 0) {
    const { host } = this;
    const { attempt } = this.state();
    const { retryBaseMs: baseMs, retryMaxMs: maxMs } = host.config;
    const delay = backoffDelay(attempt, { baseMs, maxMs, random: () => host.random(), retryAfterMs });
    this.set({ attempt: attempt + 1, notBefore: host.now() + delay, serverAsked: retryAfterMs > 0 });
    return delay;
  }
}

// --- participants: their keys, and whether they were erased

class Participants {
  supplied = new Map();
  pendingKey = null; // a study key given before any participant was named
  erased = new Set(); // when localStorage cannot remember

  constructor(host) {
    this.host = host;
  }

  supplyKey(key, participantId) {
    if (typeof key !== 'string' || !KEY_PATTERN.test(key)) {
      const error = 'participantKey must be 16 to 256 letters, digits, _ or -; it was ignored';
      this.host.emit('invalid-option', { option: 'participantKey', error });
    } else if (participantId) this.bind(participantId, key);
    else this.pendingKey = key;
  }

  bind(participantId, key = this.pendingKey) {
    if (!key) return;
    this.supplied.set(participantId, key);
    this.pendingKey = null;
    this.host.write(KEY + participantId, key);
  }

  /** The study's key, else the kept one, else a new one if it can be kept: a key this browser would
   *  lose at the next page load must not claim the participant (null: send none). */
  keyFor(participantId) {
    this.bind(participantId);
    if (this.supplied.has(participantId)) return this.supplied.get(participantId);
    const stored = this.host.read(KEY + participantId);
    if (KEY_PATTERN.test(stored)) return stored;
    if (stored === undefined) return null;
    const fresh = this.host.newKey();
    if (!fresh || !this.host.write(KEY + participantId, fresh)) return null;
    const kept = this.host.read(KEY + participantId); // another tab may have written at once
    return KEY_PATTERN.test(kept) ? kept : null;
  }

  isErased(participantId) {
    return this.erased.has(participantId) || typeof this.host.read(ERASED + participantId) === 'string';
  }

  markErased(participantId) {
    this.erased.add(participantId);
    this.host.write(ERASED + participantId, JSON.stringify({ erasedAt: new Date(this.host.now()) }));
  }
}

// --- the uploader

/** One uploader and its state; make one with `createUploader`. */
class Uploader {
  #host = new Host();
  #queue = new Queue(this.#host);
  #retry = new RetrySchedule(this.#host);
  #people = new Participants(this.#host);
  #waiters = new Map(); // uploadId -> resolvers of this page's calls
  #ready = []; // answers to give once the pump's round is over
  #inRound = false;
  #inflight = new Set(); // uploadIds in a request of this instance
  #keepaliveBytes = 0;
  #pump = null; // the running pump's promise
  #dueAt = Infinity; // when the pump should next send
  #rearm = null;
  #dueTimer = null;
  #force = false; // flushQueue: send now, backoff or not
  #fromTimer = false;
  #timer = null; // a later pump: backoff, or another tab's lease ending
  #timerAt = 0;
  #statusTimer = null;
  #started = false;
  #closed = false;
  #hidden = false;
  #seq = 0;
  #pid = null; // whom periodic and page-hide status uploads are for
  #tab = null;
  #listeners = [];
  #stored = 0;
  #changeWaiters = [];
  #limit = null; // the collector's MAX_UPLOAD_BYTES, once learnt
  #limitUnknown = true; // not asked yet

  constructor(options = {}) {
    this.configure(options);
  }

  /**
   * Change the configuration (see createUploader); returns it, without the participant key.
   * @param {Object} options
   */
  configure(options = {}) {
    try {
      const host = this.#host;
      const given = {};
      for (const key of Object.keys(DEFAULTS)) if (options?.[key] !== undefined) given[key] = options[key];
      const { studyId } = host.config;
      host.config = { ...host.config, ...given };
      if (given.studyId && !validId(given.studyId)) {
        host.config.studyId = studyId;
        host.emit('invalid-option', {
          option: 'studyId',
          error: `studyId must be ${ID_RULE}; it was ignored`,
        });
      }
      const items = Number(host.config.maxBatchItems) || MAX_BATCH_ITEMS;
      host.config.maxBatchItems = Math.max(1, Math.min(items, MAX_BATCH_ITEMS));
      const pid = host.config.participantId ? String(host.config.participantId) : null;
      if (options?.participantKey !== undefined) this.#people.supplyKey(options.participantKey, pid);
      else if (given.participantId) this.#people.bind(pid);
      if (given.participantId) this.#remember(pid);
      if (given.statusIntervalMs !== undefined) this.#restartStatusTimer();
      this.start();
    } catch {
      // a bad option keeps the previous configuration
    }
    return { ...this.#host.config };
  }

  /** Begin the background work (page listeners, periodic status, sending what earlier page loads
   *  left queued); every method calls it. */
  start() {
    if (this.#started || this.#closed) return;
    this.#started = true;
    this.#tab = this.#host.newId();
    this.#listen();
    this.#restartStatusTimer();
    this.cleanQueue();
    if (this.#queue.count()) this.#schedule(this.#retry.wait());
  }

  /** Stop the listeners and timers; calls made afterwards still upload. */
  close() {
    this.#closed = true;
    for (const [target, type, handler] of this.#listeners) {
      try {
        target.removeEventListener(type, handler);
      } catch {
        // the page is gone
      }
    }
    this.#listeners = [];
    this.#host.cancel(this.#timer);
    this.#host.cancel(this.#statusTimer);
    this.#timer = this.#statusTimer = null;
  }

  /** The request fields the configured `collectFields` gathers (by default the seed study's keys). */
  collectStudyFields(participantId) {
    try {
      const fields = this.#host.config.collectFields(participantId, this.#host.storage());
      return isPlainObject(fields) ? fields : {};
    } catch {
      return {};
    }
  }

  // --- uploads

  /**
   * Upload the participant's status (the study's fields) to `status.json`.
   * @param {string} participantId
   * @returns {Promise<Object>} `{status: 'success', …}`, `{status: 'queued', …}` (kept, sent later)
   *   or `{status: 'error', error, reason?, …}`
   */
  uploadUserStatus(participantId) {
    return this.#upload(participantId, 'status', (body) => body);
  }

  /**
   * Upload one submission (the study's jsonDump) with the study's fields.
   * @param {string} participantId
   * @param {Object} submissionData anything else is sent wrapped as `{value}`
   * @returns {Promise<Object>} as for `uploadUserStatus`
   */
  uploadSubmissionData(participantId, submissionData) {
    return this.#upload(participantId, 'submission', (body) => {
      body.submissionData = wrap(body, 'submissionData', submissionData);
      return body;
    });
  }

  /**
   * Upload one trial, stored once per (sessionId, trialIndex); no study fields.
   * @param {string} participantId
   * @param {string} sessionId 1 to 64 letters, digits, _ or -
   * @param {number} trialIndex an integer 0..100000
   * @param {Object} trialData anything else is sent wrapped as `{value}`
   * @param {Object} [extraFields] more request fields (they cannot replace the ones above)
   * @returns {Promise<Object>} as for `uploadUserStatus`
   */
  uploadTrialData(participantId, sessionId, trialIndex, trialData, extraFields = undefined) {
    if (!validId(sessionId)) {
      return Promise.resolve({ status: 'error', participantId, error: `sessionId must be ${ID_RULE}` });
    }
    if (!Number.isInteger(trialIndex) || trialIndex < 0 || trialIndex > MAX_TRIAL_INDEX) {
      const error = `trialIndex must be an integer from 0 to ${MAX_TRIAL_INDEX}`;
      return Promise.resolve({ status: 'error', participantId, error });
    }
    const trial = { sessionId: String(sessionId), trialIndex };
    return this.#upload(
      participantId,
      'trial',
      (base) => {
        const body = {};
        if (isPlainObject(extraFields)) {
          for (const [name, value] of Object.entries(extraFields))
            if (!TRIAL_RESERVED.has(name)) body[name] = value;
        }
        Object.assign(body, base, trial);
        body.trialData = wrap(body, 'trialData', trialData);
        return body;
      },
      trial,
    );
  }

  async #upload(participantId, uploadType, build, meta = {}) {
    try {
      if (!validId(participantId)) return invalidId(participantId);
      const pid = String(participantId);
      if (this.#people.isErased(pid)) return erasedAnswer(pid);
      this.start();
      if (uploadType !== 'trial') this.#remember(pid);
      let item;
      try {
        item = this.#createItem(pid, uploadType, build, meta);
      } catch (err) {
        return {
          status: 'error',
          participantId,
          error: `the upload cannot be serialised: ${errorText(err)}`,
        };
      }
      return await this.#submit(item);
    } catch (err) {
      return { status: 'error', participantId, error: `uploader failure: ${errorText(err)}` };
    }
  }

  #createItem(participantId, uploadType, build, meta) {
    const host = this.#host;
    const createdAt = host.now();
    const timestamp = new Date(createdAt).toISOString();
    const uploadId = host.newId();
    const { studyId } = host.config;
    const base = { participantId, timestamp, uploadId, uploadType };
    if (studyId) base.studyId = String(studyId);
    const fields = uploadType === 'trial' ? base : { ...base, ...this.collectStudyFields(participantId) };
    Object.assign(fields, base); // the study's fields cannot replace these
    const item = {
      uploadId,
      participantId,
      uploadType,
      createdAt,
      timestamp,
      seq: ++this.#seq,
      tries: 0,
      ...meta,
    };
    if (studyId) item.studyId = base.studyId;
    item.bodyText = JSON.stringify(build(fields)); // a circular jsonDump throws here, not later
    return item;
  }

  /** Persist the item, then nudge the pump; resolves to the answer about this item. */
  #submit(item) {
    const host = this.#host;
    const kept = this.#queue.enqueue(item, host.config.maxQueueItems, (old, by) => this.#supersede(old, by));
    if (kept === 'full') {
      const error = 'the queue is full of submissions; this status upload was not kept';
      return { status: 'error', reason: 'queue-full', ...describe(item), persisted: false, error };
    }
    const answer = new Promise((resolve) => this.#wait(item.uploadId, resolve));
    const wait = this.#retry.wait();
    if (wait > 0) {
      this.#schedule(wait);
      this.#answer(item, { kind: 'retry', httpStatus: 0, error: 'waiting before the next try' });
    } else if (item.uploadType === 'trial') {
      const delay = Number(host.config.batchDelayMs) || 0;
      this.#nudge(this.#waiters.size >= host.config.maxBatchItems ? 0 : delay);
    } else this.#nudge(0);
    return answer;
  }

  #wait(uploadId, resolve) {
    const list = this.#waiters.get(uploadId) || [];
    list.push(resolve);
    this.#waiters.set(uploadId, list);
  }

  /** Answer an upload's callers; during a pump round, once the round is over (queue, retry state
   *  and lease as the answer says). */
  #resolve(uploadId, answer) {
    const list = this.#waiters.get(uploadId) || [];
    this.#waiters.delete(uploadId);
    for (const resolve of list) this.#ready.push(() => resolve(answer));
    if (!this.#inRound) this.#deliver();
  }

  #deliver() {
    this.#inRound = false;
    const ready = this.#ready;
    this.#ready = [];
    for (const answer of ready) answer();
  }

  /** An older status upload gives way to a newer one; its callers get the newer one's answer. */
  #supersede(old, by) {
    this.#queue.drop(old.uploadId);
    this.#host.emit('superseded', { ...describe(old), by: by.uploadId });
    for (const resolve of this.#waiters.get(old.uploadId) || []) this.#wait(by.uploadId, resolve);
    this.#waiters.delete(old.uploadId);
  }

  /** The body as sent: the participant key (added at send time) first. */
  #bodyOf(item) {
    const key = this.#people.keyFor(item.participantId);
    if (!key) return item.bodyText;
    const rest = item.bodyText.trim() === '{}' ? '}' : ',' + item.bodyText.slice(1);
    return `{"participantKey":${JSON.stringify(key)}${rest}`;
  }

  /**
   * The one place that decides what an answer means for an upload: the queue, the counts, the
   * events, and what the upload's callers get.
   */
  #answer(item, outcome, counts = newCounts()) {
    const host = this.#host;
    const about = describe(item);
    const { kind, httpStatus, error, reason } = outcome;
    let answer;
    this.#signalChange();
    if (kind === 'ok') {
      this.#queue.drop(item.uploadId);
      counts.stored += 1;
      this.#stored += 1;
      const keyVerified = outcome.json.keyVerified !== false;
      host.emit('stored', { ...about, keyVerified });
      if (!keyVerified) host.emit('key-mismatch', { ...about, httpStatus });
      answer = outcome.json;
    } else if (kind === 'retry' || kind === 'hold' || kind === 'too-large') {
      // Kept: tried again later, or (too large) kept for downloadBackup.
      if (kind === 'too-large') item.tooLarge = true;
      else if (httpStatus || error !== 'waiting before the next try') item.tries += 1;
      this.#queue.update(item);
      const persisted = !this.#queue.memory.has(item.uploadId);
      const detail = { ...about, persisted, httpStatus, error };
      if (reason) detail.reason = reason;
      if (kind === 'too-large') {
        detail.reason = 'too-large';
        host.emit('too-large', detail);
        answer = { status: 'error', ...detail };
      } else {
        if (kind === 'hold') host.emit('study-unavailable', detail);
        host.emit('queued', detail);
        answer = { status: 'queued', ...detail };
      }
    } else {
      answer = { status: 'error', ...about, persisted: false, httpStatus, error };
      if (reason) answer.reason = reason;
      if ((kind === 'erased' || kind === 'archived') && !this.#queue.has(item.uploadId)) {
        this.#resolve(item.uploadId, answer); // dropped already with its participant's queue
        return answer;
      }
      this.#queue.drop(item.uploadId);
      counts.rejected += 1;
      host.emit('rejected', { ...about, httpStatus, error, reason });
      if (reason === 'participant-key') host.emit('key-mismatch', { ...about, httpStatus });
      if (kind === 'erased') {
        this.#people.markErased(item.participantId);
        counts.rejected += this.#dropWhere(
          (i) => i.participantId === item.participantId,
          'participant erased',
        );
        host.emit('erased', { participantId: item.participantId });
        if (this.#pid === item.participantId) this.#restartStatusTimer();
      } else if (kind === 'archived' && item.studyId) {
        counts.rejected += this.#dropWhere((i) => i.studyId === item.studyId, 'study archived');
      }
    }
    this.#resolve(item.uploadId, answer);
    return answer;
  }

  /** Drop every queued upload `matches` picks, each with a `dropped` event. */
  #dropWhere(matches, reason) {
    let dropped = 0;
    for (const item of this.#queue.read().items) {
      if (!matches(item)) continue;
      this.#queue.drop(item.uploadId);
      this.#host.emit('dropped', { ...describe(item), reason });
      const answer =
        reason === 'participant erased' ? erasedAnswer(item.participantId, describe(item)) : null;
      this.#resolve(
        item.uploadId,
        answer || { status: 'error', reason: 'study-archived', ...describe(item) },
      );
      dropped += 1;
    }
    return dropped;
  }

  // --- the pump: the one sender of the queue

  /** Have the pump send within `ms` (an earlier request wins). */
  #nudge(ms) {
    const at = this.#host.now() + Math.max(0, ms);
    if (at < this.#dueAt) {
      this.#dueAt = at;
      this.#rearm?.();
    }
    if (!this.#pump) {
      // Set before the pump starts: it runs synchronously up to its first request.
      let done;
      this.#pump = new Promise((resolve) => {
        done = resolve;
      });
      this.#pumpRounds(done);
    }
    return this.#pump;
  }

  /** A later pump, from a timer: after a backoff, or when another tab's lease ends. */
  #schedule(ms) {
    if (this.#closed) return;
    const at = this.#host.now() + Math.max(0, ms);
    if (this.#timer && this.#timerAt <= at) return;
    this.#host.cancel(this.#timer);
    this.#timerAt = at;
    this.#timer = this.#host.later(() => {
      this.#timer = null;
      this.#fromTimer = true;
      this.#nudge(0);
    }, ms);
  }

  async #pumpRounds(done) {
    const total = newCounts();
    try {
      while (this.#dueAt < Infinity) {
        const counts = await this.#crossTab(() => this.#drain());
        total.stored += counts.stored;
        total.rejected += counts.rejected;
        total.remaining = counts.remaining;
        for (const extra of ['error', 'skipped']) if (counts[extra]) total[extra] = counts[extra];
      }
    } catch (err) {
      total.error = errorText(err);
      this.#dueAt = Infinity;
    }
    this.#pump = null; // in the same step as the loop's last look at #dueAt: no nudge is missed
    done(total);
  }

  /** Wait until the pump is due (a batch delay), holding the cross-tab lock meanwhile. */
  #untilDue() {
    return new Promise((resolve) => {
      const arm = () => {
        this.#host.cancel(this.#dueTimer);
        const ms = this.#dueAt - this.#host.now();
        if (ms > 0) this.#dueTimer = this.#host.later(arm, ms);
        else {
          this.#rearm = null;
          resolve();
        }
      };
      this.#rearm = arm;
      arm();
    });
  }

  async #drain() {
    const host = this.#host;
    if (this.#dueAt > host.now()) await this.#untilDue();
    this.#dueAt = Infinity;
    const force = this.#force;
    const announce = force || this.#fromTimer;
    this.#force = this.#fromTimer = false;
    const counts = newCounts();
    const wait = this.#retry.wait();
    if (!force && wait > 0) {
      this.#schedule(wait);
      counts.error = 'waiting before the next try';
    } else {
      this.cleanQueue();
      let single = false;
      for (;;) {
        const batch = this.#nextBatch(single, counts);
        if (batch === LEARN_LIMIT) await this.#learnLimit();
        else if (!batch.length) break;
        else {
          this.#lease(); // renewed before each request
          const result = await this.#send(batch, counts);
          if (result === 'split') single = true;
          else if (result) {
            counts.error = result.error;
            this.#schedule(this.#retry.fail(result.retryAfterMs));
            break;
          }
        }
      }
      if (!counts.error) this.#retry.reset();
    }
    this.#settleWaiters(Boolean(counts.error));
    counts.remaining = this.#queue.count();
    if (announce) host.emit('flushed', counts);
    return counts;
  }

  /**
   * After a round: with a failure, this page's calls still waiting learn that their upload is queued;
   * else those whose upload left the queue without this page (another tab sent it) learn that.
   */
  #settleWaiters(failed) {
    let queued = null;
    for (const uploadId of [...this.#waiters.keys()]) {
      if (this.#inflight.has(uploadId)) continue;
      if (failed) {
        queued = queued || this.#queue.read().items;
        const item = queued.find((i) => i.uploadId === uploadId);
        if (item) this.#answer(item, { kind: 'retry', httpStatus: 0, error: 'waiting before the next try' });
      } else if (!this.#queue.has(uploadId)) {
        this.#resolve(uploadId, { status: 'success', uploadId, sentBy: 'another tab' });
      }
    }
  }

  /** The next batch to send: due, not in flight, not too large; LEARN_LIMIT when an upload is large
   *  enough to need the collector's limit and it is not known yet. */
  #nextBatch(single, counts) {
    const host = this.#host;
    const maxItems = single ? 1 : host.config.maxBatchItems;
    const limit = Number(host.config.maxUploadBytes) || this.#limit;
    const candidates = [];
    for (const item of this.#queue.read().items) {
      if (candidates.length >= maxItems) break;
      if (item.tooLarge || this.#inflight.has(item.uploadId)) continue;
      if (this.#people.isErased(item.participantId)) {
        this.#queue.drop(item.uploadId);
        this.#resolve(item.uploadId, erasedAnswer(item.participantId, describe(item)));
        continue;
      }
      const text = this.#queue.body(item);
      if (!text) continue; // still being written by another tab
      item.bodyText = this.#bodyOf({ ...item, bodyText: text });
      const size = byteLength(item.bodyText) + WRAPPER_BYTES;
      if (size <= CHECK_LIMIT_FROM || (limit && size <= limit)) candidates.push(item);
      else if (!limit && this.#limitUnknown) return LEARN_LIMIT;
      else {
        const error = 'larger than the collector accepts';
        this.#answer(item, { kind: 'too-large', httpStatus: 0, error }, counts);
      }
    }
    const maxBytes = Math.min(host.config.maxBatchBytes, (limit || MAX_UPLOAD_BYTES) - WRAPPER_BYTES);
    return splitBatches(candidates, { maxItems, maxBytes })[0] || [];
  }

  /** The collector's body limit, from its OpenAPI description (else the default is assumed). */
  async #learnLimit() {
    this.#limitUnknown = false;
    const outcome = await this.#host.request(DESCRIPTION_PATH, undefined, { method: 'GET' });
    const learnt = Number(outcome.json?.info?.['x-max-upload-bytes']);
    this.#limit = learnt > 0 ? learnt : MAX_UPLOAD_BYTES;
  }

  /**
   * Send one batch and answer each of its uploads. Returns null, the failure that should delay what
   * follows, or 'split' when the batch as a whole was refused (its uploads then go one by one).
   */
  async #send(batch, counts, options = {}) {
    for (const item of batch) this.#inflight.add(item.uploadId);
    let outcome;
    try {
      outcome = await this.#host.request(
        UPLOAD_PATH,
        `{"uploads":[${batch.map((i) => i.bodyText).join(',')}]}`,
        options,
      );
    } finally {
      for (const item of batch) this.#inflight.delete(item.uploadId);
    }
    const results = outcome.kind === 'ok' ? outcome.json.results : null;
    if (!results) {
      if (outcome.kind === 'ok') outcome = classify(0, { error: 'bad batch answer' });
      if (outcome.kind !== 'retry' && outcome.kind !== 'hold' && batch.length > 1) return 'split';
      for (const item of batch) this.#answer(item, outcome, counts);
      return outcome.kind === 'retry' || outcome.kind === 'hold' ? outcome : null;
    }
    let failure = null;
    const answered = new Set();
    for (const result of Array.isArray(results) ? results : []) {
      const item = batch[result?.index];
      if (!item || result.uploadId !== item.uploadId || answered.has(item)) continue;
      answered.add(item);
      const itemOutcome = classify(
        Number(result.httpStatus) || 0,
        result,
        (Number(result.retryAfter) || 0) * 1000,
      );
      this.#answer(item, itemOutcome, counts);
      if (itemOutcome.kind === 'retry' || itemOutcome.kind === 'hold') failure = failure || itemOutcome;
    }
    for (const item of batch) {
      if (answered.has(item)) continue;
      failure = failure || classify(0, { error: 'not answered' });
      this.#answer(item, failure, counts);
    }
    return failure;
  }

  // --- one sender across the tabs of an origin: Web Locks where the browser has them, else a lease

  #locks() {
    const { locks } = this.#host.config;
    if (locks !== undefined) return locks;
    try {
      return globalThis.navigator.locks;
    } catch {
      return null;
    }
  }

  /** Run a pump round `fn` as the one sender of the origin's tabs (or skip it: another tab is). */
  async #crossTab(fn) {
    const host = this.#host;
    const round = async () => {
      this.#inRound = true;
      try {
        return await fn();
      } finally {
        const lease = host.readJson(LEASE);
        if (lease?.owner === this.#tab) host.remove(LEASE);
        this.#deliver();
      }
    };
    const locks = this.#locks();
    if (!host.config.crossTabLock) return round();
    if (typeof locks?.request === 'function') {
      // The next holder re-reads the queue; localStorage changes reach other tabs a moment later,
      // so the lock is kept that moment after the queue changed.
      return locks.request(LOCK, async () => {
        const counts = await round();
        const grace = Number(host.config.lockGraceMs) || 0;
        if (grace > 0 && (counts.stored || counts.rejected)) await new Promise((r) => host.later(r, grace));
        return counts;
      });
    }
    const held = () => {
      const lease = host.readJson(LEASE);
      return lease && lease.owner !== this.#tab && Number(lease.until) > host.now() ? lease : null;
    };
    let lease = held();
    if (!lease) {
      this.#lease(this.#dueAt);
      lease = held(); // another tab wrote its lease at the same moment
    }
    if (!lease) return round();
    this.#dueAt = Infinity;
    this.#schedule(Number(lease.until) - host.now() + 50);
    this.#settleWaiters(true);
    return { ...newCounts(), remaining: this.#queue.count(), skipped: true };
  }

  /** Hold the lease (without Web Locks) until a request sent at `from` must have ended. */
  #lease(from = this.#host.now()) {
    const host = this.#host;
    if (!host.config.crossTabLock || typeof this.#locks()?.request === 'function') return;
    const until = Math.max(from, host.now()) + host.config.timeoutMs + MARGIN_MS;
    host.write(LEASE, JSON.stringify({ owner: this.#tab, until }));
  }

  // --- flushing

  /**
   * Send the queue now, backoff or not (another tab sending it: `skipped`).
   * @returns {Promise<{stored: number, rejected: number, remaining: number, error?: string,
   *   skipped?: boolean}>}
   */
  flushQueue() {
    try {
      this.start();
      this.#force = true;
      return this.#nudge(0);
    } catch (err) {
      return Promise.resolve({ ...newCounts(), error: errorText(err) });
    }
  }

  /**
   * Send until the queue is empty or `timeoutMs` passed; for a page about to navigate away.
   * @param {number} [timeoutMs=10000]
   * @returns {Promise<{stored: number, remaining: number}>} `stored`: uploads this instance saw
   *   stored meanwhile; `remaining`: still queued
   */
  async flush(timeoutMs = 10000) {
    const host = this.#host;
    const before = this.#stored;
    const budget = Math.max(0, Number(timeoutMs) || 0);
    const deadline = host.now() + budget;
    let timer;
    const timeUp = new Promise((resolve) => {
      timer = host.later(resolve, budget);
    });
    const drained = (async () => {
      for (;;) {
        const summary = await this.flushQueue();
        const left = deadline - host.now();
        if (!summary.remaining || left <= 0) return;
        const due = this.#timer ? this.#timerAt - host.now() : 0;
        await this.#waitForChange(Math.min(left, Math.max(FLUSH_PAUSE_MS, due)));
      }
    })().catch(() => {});
    await Promise.race([drained, timeUp]);
    host.cancel(timer);
    return { stored: this.#stored - before, remaining: this.#remaining() };
  }

  #remaining() {
    try {
      return this.#queue.read().items.length;
    } catch {
      return 0;
    }
  }

  #signalChange() {
    const waiters = this.#changeWaiters;
    this.#changeWaiters = [];
    for (const resolve of waiters) resolve();
  }

  #waitForChange(ms) {
    return new Promise((resolve) => {
      this.#changeWaiters.push(resolve);
      this.#host.later(resolve, ms);
    });
  }

  /**
   * What is queued, for a status display or a test; reading changes nothing.
   * @returns {{items: Object[], attempt: number, nextAttemptAt: number, flushing: boolean}}
   */
  getQueueState() {
    try {
      const items = this.#queue.read().items.map((item) => {
        const row = { ...describe(item), timestamp: item.timestamp, tries: item.tries };
        row.persisted = !this.#queue.memory.has(item.uploadId);
        if (item.tooLarge) row.tooLarge = true;
        return row;
      });
      const { attempt, notBefore } = this.#retry.state();
      return { items, attempt, nextAttemptAt: notBefore, flushing: Boolean(this.#pump) };
    } catch {
      return { items: [], attempt: 0, nextAttemptAt: 0, flushing: false };
    }
  }

  /** Remove what interrupted writes left in the queue (a `dropped` event per upload entry). */
  cleanQueue() {
    try {
      return this.#queue.clean();
    } catch {
      return 0;
    }
  }

  /**
   * A file of everything still queued (for the participant, or all), for the participant to send
   * the research team when uploads cannot get through; downloads it in a page.
   * @param {string} [participantId]
   * @returns {{filename: string, text: string, count: number}}
   */
  downloadBackup(participantId = undefined) {
    const host = this.#host;
    const uploads = [];
    try {
      for (const item of this.#queue.read(true).items) {
        if (participantId !== undefined && item.participantId !== String(participantId)) continue;
        try {
          uploads.push(JSON.parse(item.bodyText));
        } catch {
          uploads.push({ ...describe(item), unreadable: item.bodyText });
        }
      }
    } catch {
      // nothing readable
    }
    const stamp = new Date(host.now()).toISOString().replace(/[:.]/g, '-');
    const filename = `backup-${participantId === undefined ? 'all' : participantId}-${stamp}.json`;
    const text = JSON.stringify({ uploads }, null, 1);
    try {
      const link = globalThis.document.createElement('a');
      link.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
      link.download = filename;
      link.click();
      host.later(() => URL.revokeObjectURL(link.href), 60000);
    } catch {
      // no page: the caller has the text
    }
    return { filename, text, count: uploads.length };
  }

  // --- restore

  /**
   * Read the participant's status back (with their key) and fill in the study's missing keys; a
   * value already there is never overwritten.
   * @param {string} participantId
   * @returns {Promise<{status: 'success'|'not-found'|'error', restored: Object<string, string>,
   *   error?: string, reason?: string}>} a wrong key answers `not-found`, like an unknown participant
   */
  async restoreUserStatus(participantId) {
    const restored = {};
    try {
      if (!validId(participantId)) return invalidId(participantId, { restored });
      const pid = String(participantId);
      if (this.#people.isErased(pid)) return erasedAnswer(pid, { restored });
      this.start();
      const host = this.#host;
      const body = { participantId: pid };
      const key = this.#people.keyFor(pid);
      if (key) body.participantKey = key;
      if (host.config.studyId) body.studyId = String(host.config.studyId);
      // text/plain: no CORS preflight, one round trip fewer while the study page loads.
      const outcome = await host.request(RESTORE_PATH, JSON.stringify(body), { contentType: 'text/plain' });
      if (outcome.kind === 'erased') {
        this.#people.markErased(pid);
        this.#dropWhere((i) => i.participantId === pid, 'participant erased');
        host.emit('erased', { participantId: pid });
        return erasedAnswer(pid, { restored });
      }
      if (outcome.httpStatus === 404 && !outcome.reason)
        return { status: 'not-found', participantId: pid, restored };
      const status = outcome.kind === 'ok' ? outcome.json.userStatus : null;
      if (!isPlainObject(status)) {
        const answer = {
          status: 'error',
          participantId: pid,
          restored,
          error: outcome.error || 'no userStatus',
        };
        if (outcome.reason) answer.reason = outcome.reason;
        return answer;
      }
      Object.assign(restored, host.config.restoreFields(pid, status, host.storage()));
      return { status: 'success', participantId: pid, restored };
    } catch (err) {
      return { status: 'error', participantId, restored, error: errorText(err) };
    }
  }

  // --- periodic and last-moment status uploads

  #remember(participantId) {
    const changed = this.#pid !== participantId;
    this.#pid = participantId;
    if (changed) this.#restartStatusTimer();
  }

  #restartStatusTimer() {
    const host = this.#host;
    host.cancel(this.#statusTimer);
    this.#statusTimer = null;
    const every = Number(host.config.statusIntervalMs) || 0;
    const pid = this.#pid;
    if (every <= 0 || !pid || !this.#started || this.#closed || this.#people.isErased(pid)) return;
    this.#statusTimer = host.later(() => {
      if (!this.#hidden) this.uploadUserStatus(this.#pid);
      this.#restartStatusTimer();
    }, every);
  }

  /**
   * The page is hidden or going away: queue a last status upload, then send what is queued with
   * keepalive requests of at most 60 000 bytes in all in flight, text/plain (a page being unloaded
   * may not live through a CORS preflight, nor wait for the cross-tab lock: the collector stores a
   * repeat once). What does not fit is sent by the next page load.
   */
  #onHidden() {
    const host = this.#host;
    const pid = this.#pid;
    if (!this.#hidden && pid && !this.#people.isErased(pid)) {
      try {
        const item = this.#createItem(pid, 'status', (body) => body, {});
        this.#queue.enqueue(item, host.config.maxQueueItems, (old, by) => this.#supersede(old, by));
      } catch {
        // nothing to add
      }
    }
    this.#hidden = true;
    let budget = KEEPALIVE_BYTES - this.#keepaliveBytes;
    const items = this.#queue
      .read(true)
      .items.filter(
        (i) => !i.tooLarge && !this.#inflight.has(i.uploadId) && !this.#people.isErased(i.participantId),
      );
    for (const item of items) item.bodyText = this.#bodyOf(item);
    for (const batch of splitBatches(items, { maxItems: host.config.maxBatchItems, maxBytes: budget })) {
      const size = batch.reduce((sum, i) => sum + byteLength(i.bodyText) + 1, 16);
      if (size > budget) continue;
      budget -= size;
      this.#keepaliveBytes += size;
      this.#send(batch, newCounts(), { keepalive: true, contentType: 'text/plain' })
        .then((failure) => {
          if (failure && failure !== 'split') this.#schedule(this.#retry.fail(failure.retryAfterMs));
        })
        .catch(() => {})
        .finally(() => {
          this.#keepaliveBytes -= size;
        });
    }
  }

  #onVisible() {
    this.#hidden = false;
    const wait = this.#retry.wait();
    if (wait > 0) this.#schedule(wait);
    else this.flushQueue();
  }

  #listen() {
    const on = (target, type, handler) => {
      if (typeof target?.addEventListener !== 'function') return;
      target.addEventListener(type, handler);
      this.#listeners.push([target, type, handler]);
    };
    try {
      const w = globalThis.window;
      const d = globalThis.document;
      on(w, 'online', () => {
        // Back online: a network failure's backoff no longer applies (a server's Retry-After does).
        if (!this.#retry.state().serverAsked) this.#retry.reset();
        this.#onVisible();
      });
      on(w, 'pagehide', () => this.#onHidden());
      on(w, 'pageshow', () => this.#onVisible());
      on(d, 'visibilitychange', () =>
        d.visibilityState === 'hidden' ? this.#onHidden() : this.#onVisible(),
      );
    } catch {
      // no page: uploads still work
    }
  }
}

/** `value` as the collector needs it (an object); anything else is kept, wrapped, and marked. */
function wrap(body, field, value) {
  if (isPlainObject(value)) return value;
  body[`${field}Wrapped`] = true;
  return { value: value === undefined ? null : value };
}

// --- the public API

/**
 * Make an uploader that owns its state; every option is optional.
 * @param {Object} [options]
 * @param {string} [options.collectorUrl] the collector's origin (default: where this module was
 *   loaded from)
 * @param {string} [options.participantId] whom periodic and page-hide status uploads are for
 * @param {string} [options.participantKey] the study's own secret for the participant (16 to 256 of
 *   A-Z a-z 0-9 _ -), instead of a key made in this browser
 * @param {string} [options.studyId] sent as `studyId` with every upload and restore
 * @param {number} [options.statusIntervalMs=300000] periodic status uploads; 0: none
 * @param {number} [options.timeoutMs=15000] @param {number} [options.retryBaseMs=2000]
 * @param {number} [options.retryMaxMs=300000] @param {number} [options.maxBatchItems=50]
 * @param {number} [options.maxBatchBytes=1048576] @param {number} [options.batchDelayMs=100]
 * @param {number} [options.maxQueueItems=1000] @param {number} [options.maxUploadBytes] (default:
 *   asked of the collector when an upload is large)
 * @param {boolean} [options.crossTabLock=true] @param {number} [options.lockGraceMs=50]
 * @param {function(string, Storage): Object} [options.collectFields] the study's fields for a
 *   status or submission upload (default: the seed study's keys)
 * @param {function(string, Object, Storage): Object} [options.restoreFields] writes back what
 *   restore read; returns `{key: written}`
 * @param {function(Object): void} [options.onEvent] told of every event (docs/browser-module.md)
 * @param {Storage} [options.storage] @param {Function} [options.fetch] @param {Object} [options.locks]
 * @param {Crypto} [options.crypto] @param {Function} [options.now] @param {Function} [options.random]
 * @param {Function} [options.setTimeout] @param {Function} [options.clearTimeout] injections for tests
 * @returns {Uploader}
 */
export function createUploader(options = {}) {
  explicitInstances += 1;
  return new Uploader(options);
}

let defaultInstance = null;
let explicitInstances = 0;

/** The default instance, behind the functions below. */
export function getUploader() {
  defaultInstance = defaultInstance || new Uploader();
  return defaultInstance;
}

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
if (typeof globalThis.window === 'object' && globalThis.window) {
  globalThis.setTimeout(() => {
    if (defaultInstance || !explicitInstances) getUploader().start();
  }, 0);
}
