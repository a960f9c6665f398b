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
const INJECTED = ['storage', 'fetch', 'locks', 'crypto', 'now', 'random', 'setTimeout', 'clearTimeout'];
const TRIAL_RESERVED = new Set(
  'participantId participantKey timestamp uploadId uploadType sessionId trialIndex trialData studyId'.split(
    ' ',
  ),
);
const HOLD = new Set(['unknown-study', 'study-closed', 'study-full']);

const validId = (id) => (typeof id === 'string' || Number.isInteger(id)) && ID_PATTERN.test(String(id));
const newCounts = () => ({ stored: 0, rejected: 0, remaining: 0 });

let encoder;
// JSON of ASCII data is ASCII: its length is its size, without encoding 30 KB per call.
// eslint-disable-next-line no-control-regex
const byteLength = (text) =>
  /[^\x00-\x7f]/.test(text) ? (encoder ||= new TextEncoder()).encode(text).length : text.length;

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
  } else if (HOLD.has(reason)) outcome.kind = 'hold';
  else if (httpStatus === 410) outcome.kind = reason === 'study-archived' ? 'archived' : 'erased';
  else if (httpStatus === 413) outcome.kind = 'too-large';
  else if (httpStatus >= 400 && httpStatus < 500 && httpStatus !== 429) outcome.kind = 'reject';
  return outcome;
}

const failed = (error) => classify(0, { error });

function erasedAnswer(participantId, extra = {}) {
  const error = "this participant's data was erased at the research team's request; nothing more is sent";
  return { status: 'error', reason: 'erased', participantId, ...extra, error };
}

/** An instance's configuration, clock, timers, storage, events and requests. */
class Host {
  config = { ...DEFAULTS };

  now() {
    return (this.config.now || Date.now)();
  }

  random() {
    return (this.config.random || Math.random)();
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

  store() {
    return this.config.storage !== undefined ? this.config.storage : globalStorage('localStorage');
  }

  get(key) {
    return readRaw(this.store(), key);
  }

  set(key, text) {
    return writeRaw(this.store(), key, text);
  }

  del(key) {
    removeRaw(this.store(), key);
  }

  json(key) {
    return readJson(this.store(), key);
  }

  keys(prefix) {
    const found = [];
    try {
      const s = this.store();
      for (let i = 0; i < (Number(s?.length) || 0); i += 1) {
        const key = s.key(i);
        if (key?.startsWith?.(prefix)) found.push(key);
      }
    } catch {
      // unusable storage lists nothing
    }
    return found;
  }

  emit(type, detail) {
    try {
      this.config.onEvent?.({ type, ...detail });
    } catch {
      // the study's handler threw: not the upload's problem
    }
  }

  newId() {
    return newId(this.config.crypto || globalThis.crypto, () => this.random());
  }

  /** A participant key: 32 random bytes, base64url; null without cryptographic randomness. */
  newKey() {
    try {
      const bytes = (this.config.crypto || globalThis.crypto).getRandomValues(new Uint8Array(32));
      return btoa(String.fromCharCode(...bytes)).replace(/[+/=]/g, (c) => ({ '+': '-', '/': '_' })[c] || '');
    } catch {
      return null;
    }
  }

  /** One request; resolves to its `classify` outcome (`retry` on a network error or a timeout). */
  async request(path, body, { keepalive = false, contentType = 'application/json' } = {}) {
    const fetchFn = this.config.fetch || globalThis.fetch;
    if (typeof fetchFn !== 'function') return failed('fetch is unavailable');
    let base = this.config.collectorUrl || moduleOrigin;
    try {
      base ||= globalThis.location.origin;
    } catch {
      // no page
    }
    const controller = globalThis.AbortController ? new AbortController() : null;
    const ms = this.config.timeoutMs;
    let timer;
    const timeout = new Promise((resolve) => {
      timer = this.later(() => {
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
      let wait = 0;
      try {
        const header = response.headers.get('Retry-After');
        wait = header ? (Number.isFinite(+header) ? +header * 1000 : Date.parse(header) - this.now()) : 0;
      } catch {
        // no headers
      }
      return classify(Number(response.status) || 0, json, Math.max(0, wait) || 0);
    })().catch((err) => failed(`network error: ${errorText(err)}`));
    try {
      return await Promise.race([answer, timeout]);
    } finally {
      this.cancel(timer);
    }
  }
}

const metaText = ({ bodyText: _body, ...meta }) => JSON.stringify(meta);
const byQueueOrder = (a, b) =>
  a.createdAt - b.createdAt || (a.seq || 0) - (b.seq || 0) || (a.uploadId < b.uploadId ? -1 : 1);

/** The persistent queue: per upload a meta key and a body key (docs/browser-module.md §3). */
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
    const bodies = new Set(host.keys(BODY).map((k) => k.slice(BODY.length)));
    for (const key of host.keys(ITEM)) {
      const id = key.slice(ITEM.length);
      const text = host.get(key);
      if (typeof text !== 'string') continue;
      let meta;
      try {
        meta = JSON.parse(text);
      } catch {
        // debris, below
      }
      const hasBody = bodies.delete(id);
      if (typeof meta?.uploadId !== 'string') debris.push({ key, reason: 'unreadable queue entry' });
      else if (!hasBody && host.now() - meta.createdAt > 60000) {
        debris.push({ key, reason: 'queue entry without its body' });
      } else {
        const item = { ...meta, uploadId: id };
        if (withBodies) item.bodyText = this.body(item);
        if (!withBodies || item.bodyText) found.set(id, item); // a body still being written waits
      }
    }
    for (const id of bodies) debris.push({ key: BODY + id, reason: 'body without its queue entry' });
    for (const [id, item] of this.memory) if (!found.has(id)) found.set(id, { ...item });
    return { items: [...found.values()].sort(byQueueOrder), debris };
  }

  count() {
    const stored = new Set(this.host.keys(ITEM).map((key) => key.slice(ITEM.length)));
    this.estimate = stored.size + [...this.memory.keys()].filter((id) => !stored.has(id)).length;
    return this.estimate;
  }

  has(uploadId) {
    return this.memory.has(uploadId) || typeof this.host.get(ITEM + uploadId) === 'string';
  }

  body(item) {
    return item.bodyText || this.recent.get(item.uploadId) || this.host.get(BODY + item.uploadId);
  }

  clean() {
    const { debris } = this.read();
    for (const { key, reason } of debris) {
      if (!key.startsWith(ITEM)) this.host.del(key);
      else {
        this.drop(key.slice(ITEM.length));
        this.host.emit('dropped', { key, reason });
      }
    }
    return debris.length;
  }

  /** Meta first, body second (removal too): a body without its meta is always debris. */
  save(item) {
    const id = item.uploadId;
    if (this.host.set(ITEM + id, metaText(item)) && this.host.set(BODY + id, item.bodyText)) {
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
    else if (this.has(item.uploadId)) this.host.set(ITEM + item.uploadId, metaText(item));
  }

  drop(uploadId) {
    this.memory.delete(uploadId);
    this.recent.delete(uploadId);
    this.host.del(ITEM + uploadId);
    this.host.del(BODY + uploadId);
  }

  /**
   * Add an item under the bound: a newer status supersedes older ones of its participant, older
   * statuses give way first; submissions and trials are never evicted. 'stored', 'memory' or 'full'.
   */
  enqueue(item, maxItems, supersede) {
    const isStatus = item.uploadType === 'status';
    if (!isStatus && ((this.estimate ?? this.count()) < maxItems || this.count() < maxItems)) {
      return this.#persist(item);
    }
    const kept = [];
    for (const old of this.read().items) {
      if (isStatus && old.uploadType === 'status' && old.participantId === item.participantId)
        supersede(old, item);
      else kept.push(old);
    }
    let excess = kept.length + 1 - maxItems;
    for (const old of kept) {
      if (excess > 0 && old.uploadType === 'status') {
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

/** The backoff, shared by the tabs of an origin through localStorage. */
class Backoff {
  memory = null;

  constructor(host) {
    this.host = host;
  }

  state() {
    const s = this.host.json(RETRY) || this.memory || {};
    return { attempt: +s.attempt || 0, notBefore: +s.notBefore || 0, serverAsked: Boolean(s.serverAsked) };
  }

  wait() {
    return Math.max(0, this.state().notBefore - this.host.now());
  }

  set(state) {
    this.memory = state.attempt ? state : null;
    if (!state.attempt) this.host.del(RETRY);
    else if (this.host.set(RETRY, JSON.stringify(state))) this.memory = null;
  }

  reset() {
    if (this.state().attempt) this.set({ attempt: 0 });
  }

  /** One more failure: the delay before the next try. */
  fail(retryAfterMs = 0) {
    const { host } = this;
    const { attempt } = this.state();
    const { retryBaseMs: baseMs, retryMaxMs: maxMs } = host.config;
    const delay = backoffDelay(attempt, { baseMs, maxMs, random: () => host.random(), retryAfterMs });
    this.set({ attempt: attempt + 1, notBefore: host.now() + delay, serverAsked: retryAfterMs > 0 });
    return delay;
  }
}

/** Participants: their keys (docs/trust-model.md §2), and whether they were erased. */
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
    this.host.set(KEY + participantId, key);
  }

  /** The study's key, else the kept one, else a new one if it can be kept (null: send none, as a
   *  key lost at the next page load must not claim the participant). */
  keyFor(participantId) {
    this.bind(participantId);
    if (this.supplied.has(participantId)) return this.supplied.get(participantId);
    const stored = this.host.get(KEY + participantId);
    if (KEY_PATTERN.test(stored)) return stored;
    const fresh = stored !== undefined && this.host.newKey();
    if (!fresh || !this.host.set(KEY + participantId, fresh)) return null;
    const kept = this.host.get(KEY + participantId); // another tab may have written at once
    return KEY_PATTERN.test(kept) ? kept : null;
  }

  isErased(participantId) {
    return this.erased.has(participantId) || typeof this.host.get(ERASED + participantId) === 'string';
  }

  markErased(participantId) {
    this.erased.add(participantId);
    this.host.set(ERASED + participantId, JSON.stringify({ erasedAt: new Date(this.host.now()) }));
  }
}

/** `value` as the collector needs it, an object; anything else is kept, wrapped, and marked. */
function wrap(body, field, value) {
  if (isPlainObject(value)) return value;
  body[`${field}Wrapped`] = true;
  return { value: value === undefined ? null : value };
}

/** One uploader and its state; make one with `createUploader`. */
class Uploader {
  #host = new Host();
  #queue = new Queue(this.#host);
  #backoff = new Backoff(this.#host);
  #people = new Participants(this.#host);
  #waiters = new Map(); // uploadId -> resolvers of this page's calls
  #ready = []; // answers given once the pump's round is over
  #inRound = false;
  #inflight = new Set(); // uploadIds in a request of this instance
  #keepaliveBytes = 0;
  #pump = null;
  #dueAt = Infinity; // when the pump should next send
  #rearm = null;
  #dueTimer = null;
  #force = false; // flushQueue: now, backoff or not
  #fromTimer = false;
  #timer = null; // a later pump: after the backoff, or another tab's lease
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
  #limit = null; // the collector's MAX_UPLOAD_BYTES, once asked

  constructor(options = {}) {
    this.configure(options);
  }

  /** Change the configuration (see createUploader); returns it, without the participant key. */
  configure(options = {}) {
    try {
      const host = this.#host;
      const given = {};
      for (const key of [...Object.keys(DEFAULTS), ...INJECTED]) {
        if (options?.[key] !== undefined) given[key] = options[key];
      }
      const { studyId } = host.config;
      host.config = { ...host.config, ...given };
      if (given.studyId && !validId(given.studyId)) {
        host.config.studyId = studyId;
        host.emit('invalid-option', {
          option: 'studyId',
          error: `studyId must be ${ID_RULE}; it was ignored`,
        });
      }
      host.config.maxBatchItems = Math.max(1, Math.min(+host.config.maxBatchItems || 50, MAX_BATCH_ITEMS));
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

  /** Begin the background work (listeners, periodic status, sending what earlier page loads left);
   *  every method calls it. */
  start() {
    if (this.#started || this.#closed) return;
    this.#started = true;
    this.#tab = this.#host.newId();
    this.#listen();
    this.#restartStatusTimer();
    this.cleanQueue();
    if (this.#queue.count()) this.#schedule(this.#backoff.wait());
  }

  /** Stop the listeners and timers; calls made afterwards still upload. */
  close() {
    this.#closed = true;
    for (const [target, type, handler] of this.#listeners.splice(0))
      target.removeEventListener(type, handler);
    this.#host.cancel(this.#timer);
    this.#host.cancel(this.#statusTimer);
    this.#timer = this.#statusTimer = null;
  }

  /** The request fields `collectFields` gathers (by default the seed study's keys). */
  collectStudyFields(participantId) {
    try {
      const fields = this.#host.config.collectFields(participantId, this.#host.store());
      return isPlainObject(fields) ? fields : {};
    } catch {
      return {};
    }
  }

  /** Upload the participant's status (the study's fields); resolves to the answer about it. */
  uploadUserStatus(participantId) {
    return this.#upload(participantId, 'status', (body) => body);
  }

  /** Upload a submission (the study's jsonDump; anything else is sent wrapped) with the study's fields. */
  uploadSubmissionData(participantId, submissionData) {
    return this.#upload(participantId, 'submission', (body) => {
      body.submissionData = wrap(body, 'submissionData', submissionData);
      return body;
    });
  }

  /** Upload one trial, stored once per (sessionId, trialIndex); `extraFields` cannot replace the
   *  upload's own fields. */
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
        if (!TRIAL_RESERVED.has(name)) body[name] = value;
      }
      Object.assign(body, base, trial);
      body.trialData = wrap(body, 'trialData', trialData);
      return body;
    };
    return this.#upload(participantId, 'trial', build, trial);
  }

  async #upload(participantId, uploadType, build, meta = {}) {
    try {
      if (!validId(participantId))
        return { status: 'error', participantId, error: `participantId must be ${ID_RULE}` };
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
    const base = {
      participantId,
      timestamp: new Date(createdAt).toISOString(),
      uploadId: host.newId(),
      uploadType,
    };
    if (host.config.studyId) base.studyId = String(host.config.studyId);
    const fields =
      uploadType === 'trial' ? base : { ...base, ...this.collectStudyFields(participantId), ...base };
    const item = { ...base, createdAt, seq: ++this.#seq, tries: 0, ...meta };
    item.bodyText = JSON.stringify(build(fields)); // a circular jsonDump throws here, not later
    return item;
  }

  /** Persist the item, then nudge the pump; resolves to the answer about this item. */
  #submit(item) {
    const { config } = this.#host;
    const kept = this.#queue.enqueue(item, config.maxQueueItems, (old, by) => this.#supersede(old, by));
    if (kept === 'full') {
      const error = 'the queue is full of submissions; this status upload was not kept';
      return { status: 'error', reason: 'queue-full', ...describe(item), persisted: false, error };
    }
    const answer = new Promise((resolve) => this.#wait(item.uploadId, resolve));
    const wait = this.#backoff.wait();
    if (wait > 0) {
      this.#schedule(wait);
      this.#answer(item, failed(WAITING));
    } else if (item.uploadType !== 'trial' || this.#waiters.size >= config.maxBatchItems) this.#nudge(0);
    else this.#nudge(+config.batchDelayMs || 0);
    return answer;
  }

  #wait(uploadId, resolve) {
    this.#waiters.set(uploadId, [...(this.#waiters.get(uploadId) || []), resolve]);
  }

  /** Answer an upload's callers; during a pump round, once it is over (queue, backoff and lease
   *  then say what the answer says). */
  #resolve(uploadId, answer) {
    for (const resolve of this.#waiters.get(uploadId) || []) this.#ready.push(() => resolve(answer));
    this.#waiters.delete(uploadId);
    if (!this.#inRound) this.#deliver();
  }

  #deliver() {
    this.#inRound = false;
    for (const answer of this.#ready.splice(0)) answer();
  }

  /** An older status gives way to a newer one; its callers get the newer one's answer. */
  #supersede(old, by) {
    this.#queue.drop(old.uploadId);
    this.#host.emit('superseded', { ...describe(old), by: by.uploadId });
    for (const resolve of this.#waiters.get(old.uploadId) || []) this.#wait(by.uploadId, resolve);
    this.#waiters.delete(old.uploadId);
  }

  /** The one place that decides what an answer means for an upload: queue, counts, events, callers. */
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
      item.tooLarge ||= kind === 'too-large';
      if (error !== WAITING) item.tries += 1;
      this.#queue.update(item);
      answer = { ...about, persisted: !this.#queue.memory.has(item.uploadId), httpStatus, error };
      if (reason) answer.reason = reason;
      if (kind === 'too-large') {
        answer.reason = kind;
        host.emit(kind, answer);
      } else {
        if (kind === 'hold') host.emit('study-unavailable', answer);
        host.emit('queued', answer);
      }
      answer = { status: kind === 'too-large' ? 'error' : 'queued', ...answer };
    } else {
      answer = { status: 'error', ...about, persisted: false, httpStatus, error };
      if (reason) answer.reason = reason;
      // Dropped already, with its participant's or its study's other uploads: told once.
      if (kind !== 'reject' && !this.#queue.has(item.uploadId)) return this.#resolve(item.uploadId, answer);
      this.#queue.drop(item.uploadId);
      counts.rejected += 1;
      host.emit('rejected', { ...about, httpStatus, error, reason });
      if (reason === 'participant-key') host.emit('key-mismatch', { ...about, httpStatus });
      if (kind === 'erased') counts.rejected += this.#forget(item.participantId);
      if (kind === 'archived' && item.studyId) {
        const archived = (other) => ({ status: 'error', reason: 'study-archived', ...describe(other) });
        counts.rejected += this.#dropWhere((i) => i.studyId === item.studyId, 'study archived', archived);
      }
    }
    this.#resolve(item.uploadId, answer);
  }

  /** The participant was erased: remember it, drop their queue, stop their status uploads. */
  #forget(participantId) {
    this.#people.markErased(participantId);
    const answer = (item) => erasedAnswer(participantId, describe(item));
    const dropped = this.#dropWhere((i) => i.participantId === participantId, 'participant erased', answer);
    this.#host.emit('erased', { participantId });
    if (this.#pid === participantId) this.#restartStatusTimer();
    return dropped;
  }

  #dropWhere(matches, reason, answer) {
    const items = this.#queue.read().items.filter(matches);
    for (const item of items) {
      this.#queue.drop(item.uploadId);
      this.#host.emit('dropped', { ...describe(item), reason });
      this.#resolve(item.uploadId, answer(item));
    }
    return items.length;
  }

  // --- the pump: the one sender of the queue (docs/browser-module.md §4)

  /** Have the pump send within `ms` (an earlier nudge wins); returns the running pump. */
  #nudge(ms) {
    const at = this.#host.now() + Math.max(0, ms);
    if (at < this.#dueAt) {
      this.#dueAt = at;
      this.#rearm?.();
    }
    if (!this.#pump) {
      let done;
      this.#pump = new Promise((resolve) => {
        done = resolve;
      });
      this.#pumpRounds(done); // it runs synchronously up to its first request
    }
    return this.#pump;
  }

  /** A later nudge, from a timer. */
  #schedule(ms) {
    const at = this.#host.now() + Math.max(0, ms);
    if (this.#closed || (this.#timer && this.#timerAt <= at)) return;
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
      (this.#rearm = arm)();
    });
  }

  async #drain() {
    const host = this.#host;
    if (this.#dueAt > host.now()) await this.#untilDue();
    const force = this.#force;
    const announce = force || this.#fromTimer;
    this.#dueAt = Infinity;
    this.#force = this.#fromTimer = false;
    const counts = newCounts();
    const wait = this.#backoff.wait();
    if (!force && wait > 0) {
      this.#schedule(wait);
      counts.error = WAITING;
    } else {
      this.cleanQueue();
      let single = false;
      for (;;) {
        const batch = this.#nextBatch(single, counts);
        if (!batch) await this.#askLimit();
        else if (!batch.length) break;
        else {
          this.#lease(); // renewed before each request
          const result = await this.#send(batch, counts);
          single ||= result === 'split';
          if (result?.error) {
            counts.error = result.error;
            this.#schedule(this.#backoff.fail(result.retryAfterMs));
            break;
          }
        }
      }
      if (!counts.error) this.#backoff.reset();
    }
    this.#settleWaiters(Boolean(counts.error));
    counts.remaining = this.#queue.count();
    if (announce) host.emit('flushed', counts);
    return counts;
  }

  /** After a round: on a failure this page's calls still waiting learn their upload is queued; else
   *  those whose upload left the queue without this page (another tab sent it) learn that. */
  #settleWaiters(failure) {
    let items;
    for (const uploadId of this.#waiters.keys()) {
      if (this.#inflight.has(uploadId)) continue;
      items ||= this.#queue.read().items;
      const item = items.find((i) => i.uploadId === uploadId);
      if (failure && item) this.#answer(item, failed(WAITING));
      else if (!failure && !item)
        this.#resolve(uploadId, { status: 'success', uploadId, sentBy: 'another tab' });
    }
  }

  /** The next batch: due, not in flight, not too large; null to ask the collector's limit first. */
  #nextBatch(single, counts) {
    const { config } = this.#host;
    const maxItems = single ? 1 : config.maxBatchItems;
    const limit = +config.maxUploadBytes || this.#limit;
    const batch = [];
    for (const item of this.#queue.read().items) {
      if (batch.length >= maxItems) break;
      if (item.tooLarge || this.#inflight.has(item.uploadId)) continue;
      if (this.#people.isErased(item.participantId)) {
        this.#queue.drop(item.uploadId);
        this.#resolve(item.uploadId, erasedAnswer(item.participantId, describe(item)));
        continue;
      }
      const text = this.#queue.body(item);
      if (!text) continue; // still being written by another tab
      item.bodyText = this.#withKey(item, text);
      const size = byteLength(item.bodyText) + WRAPPER_BYTES;
      if (size <= ASK_LIMIT_FROM || size <= limit) batch.push(item);
      else if (!limit) return null;
      else
        this.#answer(
          item,
          { kind: 'too-large', httpStatus: 0, error: 'larger than the collector accepts' },
          counts,
        );
    }
    const maxBytes = Math.min(config.maxBatchBytes, (limit || MAX_UPLOAD_BYTES) - WRAPPER_BYTES);
    return splitBatches(batch, { maxItems, maxBytes })[0] || [];
  }

  /** The collector's body limit, from its OpenAPI description; the default when it does not say. */
  async #askLimit() {
    const outcome = await this.#host.request('/openapi.json');
    this.#limit = +outcome.json?.info?.['x-max-upload-bytes'] || MAX_UPLOAD_BYTES;
  }

  /** The body as sent: the participant key first, added now, so a key supplied later is used. */
  #withKey(item, text) {
    const key = this.#people.keyFor(item.participantId);
    return key
      ? `{"participantKey":${JSON.stringify(key)}${text.trim() === '{}' ? '}' : ',' + text.slice(1)}`
      : text;
  }

  /**
   * Send a batch and answer each upload in it. Returns null, the failure that delays what follows,
   * or 'split' when the request as a whole was refused (its uploads then go one per batch).
   */
  async #send(batch, counts, options = {}) {
    for (const item of batch) this.#inflight.add(item.uploadId);
    const body = `{"uploads":[${batch.map((i) => i.bodyText).join(',')}]}`;
    let outcome = await this.#host.request('/api/upload-user-data/batch', body, options);
    for (const item of batch) this.#inflight.delete(item.uploadId);
    const results = outcome.kind === 'ok' && outcome.json.results;
    const kept = (o) => o.kind === 'retry' || o.kind === 'hold';
    if (!Array.isArray(results)) {
      if (outcome.kind === 'ok') outcome = failed('bad batch answer');
      if (!kept(outcome) && batch.length > 1) return 'split';
      for (const item of batch) this.#answer(item, outcome, counts);
      return kept(outcome) ? outcome : null;
    }
    let failure = null;
    const answered = new Set();
    for (const result of results) {
      const item = batch[result?.index];
      if (!item || result.uploadId !== item.uploadId || answered.has(item)) continue;
      answered.add(item);
      const itemOutcome = classify(+result.httpStatus || 0, result, (+result.retryAfter || 0) * 1000);
      this.#answer(item, itemOutcome, counts);
      if (kept(itemOutcome)) failure ||= itemOutcome;
    }
    for (const item of batch.filter((i) => !answered.has(i))) {
      failure ||= failed('not answered');
      this.#answer(item, failure, counts);
    }
    return failure;
  }

  // --- one sender across the tabs of an origin: Web Locks where present, else a lease

  #locks() {
    const { locks } = this.#host.config;
    try {
      return locks !== undefined ? locks : globalThis.navigator.locks;
    } catch {
      return null;
    }
  }

  /** Run a pump round `fn` as the origin's one sender, or skip it (another tab is). */
  async #crossTab(fn) {
    const host = this.#host;
    const round = async () => {
      this.#inRound = true;
      try {
        return await fn();
      } finally {
        if (host.json(LEASE)?.owner === this.#tab) host.del(LEASE);
        this.#deliver();
      }
    };
    if (!host.config.crossTabLock) return round();
    const locks = this.#locks();
    if (typeof locks?.request === 'function') {
      // The next holder re-reads the queue; localStorage changes reach other tabs a moment later.
      return locks.request(NS + 'flush', async () => {
        const counts = await round();
        const grace = +host.config.lockGraceMs || 0;
        if (grace > 0 && (counts.stored || counts.rejected)) await new Promise((r) => host.later(r, grace));
        return counts;
      });
    }
    const held = () => {
      const lease = host.json(LEASE);
      return lease?.owner !== this.#tab && +lease?.until > host.now() ? lease : null;
    };
    let lease = held();
    if (!lease) {
      this.#lease(this.#dueAt);
      lease = held(); // another tab wrote its lease at the same moment
    }
    if (!lease) return round();
    this.#dueAt = Infinity;
    this.#schedule(lease.until - host.now() + 50);
    this.#settleWaiters(true);
    return { ...newCounts(), remaining: this.#queue.count(), skipped: true };
  }

  /** Without Web Locks: hold the lease until a request sent at `from` must have ended. */
  #lease(from = this.#host.now()) {
    const host = this.#host;
    if (!host.config.crossTabLock || typeof this.#locks()?.request === 'function') return;
    const until = Math.max(from, host.now()) + host.config.timeoutMs + 1000;
    host.set(LEASE, JSON.stringify({ owner: this.#tab, until }));
  }

  // --- flushing

  /** Send the queue now, backoff or not; `skipped` when another tab is sending it.
   *  @returns {Promise<{stored: number, rejected: number, remaining: number, error?: string, skipped?: boolean}>} */
  flushQueue() {
    try {
      this.start();
      this.#force = true;
      return this.#nudge(0);
    } catch (err) {
      return Promise.resolve({ ...newCounts(), error: errorText(err) });
    }
  }

  /** Send until the queue is empty or `timeoutMs` passed (before navigating away).
   *  @returns {Promise<{stored: number, remaining: number}>} stored by this instance meanwhile; still queued */
  async flush(timeoutMs = 10000) {
    const host = this.#host;
    const before = this.#stored;
    const budget = Math.max(0, +timeoutMs || 0);
    const deadline = host.now() + budget;
    let timer;
    const timeUp = new Promise((resolve) => {
      timer = host.later(resolve, budget);
    });
    const drained = (async () => {
      for (;;) {
        const { remaining } = await this.flushQueue();
        const left = deadline - host.now();
        if (!remaining || left <= 0) return;
        const due = this.#timer ? this.#timerAt - host.now() : 0;
        await new Promise((resolve) => {
          this.#changeWaiters.push(resolve);
          host.later(resolve, Math.min(left, Math.max(100, due)));
        });
      }
    })().catch(() => {});
    await Promise.race([drained, timeUp]);
    host.cancel(timer);
    return { stored: this.#stored - before, remaining: this.getQueueState().items.length };
  }

  #signalChange() {
    for (const resolve of this.#changeWaiters.splice(0)) resolve();
  }

  /** What is queued, for a status display or a test; reading changes nothing. */
  getQueueState() {
    try {
      const items = this.#queue.read().items.map((item) => {
        const row = { ...describe(item), timestamp: item.timestamp, tries: item.tries };
        row.persisted = !this.#queue.memory.has(item.uploadId);
        if (item.tooLarge) row.tooLarge = true;
        return row;
      });
      const { attempt, notBefore } = this.#backoff.state();
      return { items, attempt, nextAttemptAt: notBefore, flushing: Boolean(this.#pump) };
    } catch {
      return { items: [], attempt: 0, nextAttemptAt: 0, flushing: false };
    }
  }

  /** Remove what interrupted writes left in the queue; the number of keys removed. */
  cleanQueue() {
    try {
      return this.#queue.clean();
    } catch {
      return 0;
    }
  }

  /** A file of everything still queued (for `participantId`, or all), downloaded in a page.
   *  @returns {{filename: string, text: string, count: number}} */
  downloadBackup(participantId = undefined) {
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
    const stamp = new Date(this.#host.now()).toISOString().replace(/[:.]/g, '-');
    const filename = `backup-${participantId ?? 'all'}-${stamp}.json`;
    const text = JSON.stringify({ uploads }, null, 1);
    try {
      const link = globalThis.document.createElement('a');
      link.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
      link.download = filename;
      link.click();
      this.#host.later(() => URL.revokeObjectURL(link.href), 60000);
    } catch {
      // no page: the caller has the text
    }
    return { filename, text, count: uploads.length };
  }

  /** Read the participant's status back (with their key) and fill in the study's missing keys.
   *  @returns {Promise<{status: 'success'|'not-found'|'error', restored: Object<string, string>}>} */
  async restoreUserStatus(participantId) {
    const restored = {};
    try {
      if (!validId(participantId)) {
        return { status: 'error', participantId, restored, error: `participantId must be ${ID_RULE}` };
      }
      const pid = String(participantId);
      if (this.#people.isErased(pid)) return erasedAnswer(pid, { restored });
      this.start();
      const host = this.#host;
      const key = this.#people.keyFor(pid);
      const body = {
        participantId: pid,
        participantKey: key || undefined,
        studyId: host.config.studyId || undefined,
      };
      // text/plain: no CORS preflight, one round trip fewer while the study page loads.
      const outcome = await host.request('/api/user-status', JSON.stringify(body), {
        contentType: 'text/plain',
      });
      if (outcome.kind === 'erased') {
        this.#forget(pid);
        return erasedAnswer(pid, { restored });
      }
      if (outcome.httpStatus === 404 && !outcome.reason)
        return { status: 'not-found', participantId: pid, restored };
      const status = outcome.kind === 'ok' && outcome.json.userStatus;
      if (!isPlainObject(status)) {
        return {
          status: 'error',
          participantId: pid,
          restored,
          error: outcome.error,
          reason: outcome.reason,
        };
      }
      Object.assign(restored, host.config.restoreFields(pid, status, host.store()));
      return { status: 'success', participantId: pid, restored };
    } catch (err) {
      return { status: 'error', participantId, restored, error: errorText(err) };
    }
  }

  // --- periodic and last-moment status uploads

  #remember(participantId) {
    if (this.#pid === participantId) return;
    this.#pid = participantId;
    this.#restartStatusTimer();
  }

  #restartStatusTimer() {
    const host = this.#host;
    host.cancel(this.#statusTimer);
    this.#statusTimer = null;
    const every = +host.config.statusIntervalMs || 0;
    if (every <= 0 || !this.#pid || !this.#started || this.#closed || this.#people.isErased(this.#pid))
      return;
    this.#statusTimer = host.later(() => {
      if (!this.#hidden) this.uploadUserStatus(this.#pid);
      this.#restartStatusTimer();
    }, every);
  }

  /** Hidden or going away: queue a last status, then send the queue in keepalive mode. */
  #onHidden() {
    const { config } = this.#host;
    if (!this.#hidden && this.#pid && !this.#people.isErased(this.#pid)) {
      try {
        const item = this.#createItem(this.#pid, 'status', (body) => body, {});
        this.#queue.enqueue(item, config.maxQueueItems, (old, by) => this.#supersede(old, by));
      } catch {
        // nothing to add
      }
    }
    this.#hidden = true;
    let budget = KEEPALIVE_BYTES - this.#keepaliveBytes;
    const items = this.#queue.read(true).items.filter((i) => !i.tooLarge && !this.#inflight.has(i.uploadId));
    for (const item of items) item.bodyText = this.#withKey(item, item.bodyText);
    for (const batch of splitBatches(items, { maxItems: config.maxBatchItems, maxBytes: budget })) {
      const size = batch.reduce((sum, i) => sum + byteLength(i.bodyText) + 1, 16);
      if (size > budget) continue;
      budget -= size;
      this.#keepaliveBytes += size;
      this.#send(batch, newCounts(), { keepalive: true, contentType: 'text/plain' })
        .then((failure) => failure?.error && this.#schedule(this.#backoff.fail(failure.retryAfterMs)))
        .catch(() => {})
        .finally(() => {
          this.#keepaliveBytes -= size;
        });
    }
  }

  #onVisible() {
    this.#hidden = false;
    const wait = this.#backoff.wait();
    if (wait > 0) this.#schedule(wait);
    else this.flushQueue();
  }

  #listen() {
    const on = (target, type, handler) => {
      target?.addEventListener?.(type, handler);
      if (target?.addEventListener) this.#listeners.push([target, type, handler]);
    };
    try {
      const w = globalThis.window;
      const d = globalThis.document;
      on(w, 'online', () => {
        // A network failure's backoff no longer applies (a server's Retry-After still does).
        if (!this.#backoff.state().serverAsked) this.#backoff.reset();
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

/**
 * An uploader that owns its state. Options (all optional; docs/browser-module.md §1):
 * collectorUrl, participantId, participantKey, studyId, collectFields, restoreFields,
 * statusIntervalMs, timeoutMs, retryBaseMs, retryMaxMs, batchDelayMs, maxBatchItems, maxBatchBytes,
 * maxUploadBytes, maxQueueItems, crossTabLock, lockGraceMs, onEvent, and injections for tests.
 * @param {Object} [options]
 */
export function createUploader(options = {}) {
  explicitInstances += 1;
  return new Uploader(options);
}

let defaultInstance = null;
let explicitInstances = 0;

/** The default instance, behind the functions below. */
export const getUploader = () => (defaultInstance ||= new Uploader());
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
