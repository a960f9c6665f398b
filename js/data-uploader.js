/**
 * data-uploader.js: backs a browser study's participant data up to the collector.
 * The HTTP contract it speaks is docs/api.md; the participant key it keeps is docs/trust-model.md.
 *
 * A plain ES module with no dependencies and no build step. The simplest use is the default instance:
 *
 *   import { configureUploader, uploadSubmissionData } from 'https://collector.example/js/data-uploader.js';
 *   configureUploader({ collectorUrl: 'https://collector.example', participantId });
 *   await uploadSubmissionData(participantId, jsonDump); // never rejects, never throws
 *
 * or an instance of one's own, which owns all of its state (configuration, timers, in-memory queue):
 *
 *   const uploader = createUploader({ collectorUrl: 'https://collector.example' });
 *   uploader.uploadTrialData(participantId, sessionId, trialIndex, trialData); // queued, batched, kept
 *   const { stored, remaining } = await uploader.flush(3000); // before redirecting to Prolific
 *
 * Every upload is written to a persistent queue in localStorage *before* it is sent (so a closed tab
 * loses nothing) and leaves the queue only when the collector answered 200 (stored), or an answer that
 * retrying cannot change (a 4xx other than 429; 410: the participant was erased). Each upload carries
 * its own `uploadId` and `timestamp`, fixed when it is created, so the collector stores a retry once.
 * Instances over the same localStorage share one queue (one per origin, as tabs do) and must therefore
 * point at the same collector.
 *
 * Trials are queued synchronously and sent `batchDelayMs` (100 ms) later, together with the trials
 * that followed, in one batch request (each item answered on its own); `flush`, `flushQueue` and the
 * page being hidden (keepalive, text/plain) send them at once. A trial call thus costs the page a
 * serialisation and two localStorage writes, not a request.
 *
 * Participant key: the first upload for a participant makes a random key (crypto.getRandomValues, 32
 * bytes, base64url), keeps it under `dataUploader.v1.key.{participantId}` and sends it in the body of
 * every upload and restore (never in a URL, an event or a returned object), so only this browser can
 * change or read the participant's status. A study with its own per-participant secret passes it as
 * `participantKey` (restore then works on any device).
 *
 * Events (`onEvent`): each queued upload ends with exactly one of `stored`, `rejected`, `dropped` or
 * `superseded`; each of these carries the upload's `uploadId`, `participantId`, `uploadType` and, for
 * a trial, its `sessionId` and `trialIndex`, so a caller can count what was stored:
 *   - `stored`     {keyVerified}: the collector stored it (`keyVerified: false`: stored but marked not
 *                  verified, because this browser's key is not the participant's; it is not retried)
 *   - `rejected`   {httpStatus, error, reason}: refused for good (`reason` 'participant-key' for a status
 *                  refused for a wrong key, 'erased' for a 410), not retried
 *   - `dropped`    {reason}: removed without an answer (an unreadable or half-written queue entry, or
 *                  the participant was erased); queue debris carries `key` instead of the upload fields
 *   - `superseded` {by}: an older status upload replaced by a newer one
 * and, for information: `queued` (kept for a later try), `not-persisted` (kept in memory only),
 * `key-mismatch` (with `stored` or `rejected`: this browser's key is not the participant's),
 * `erased` {participantId} (the participant was erased; nothing more is sent for them),
 * `flushed` {stored, rejected, remaining}, `invalid-option` {option, error}.
 *
 * The study's own localStorage keys are only read (and, by `restoreUserStatus`, filled in when
 * missing); the module's state lives under keys starting with `dataUploader.v1.`.
 */

const NS = 'dataUploader.v1.';
const ITEM_PREFIX = NS + 'item.';
const BODY_PREFIX = NS + 'body.';
const KEY_PREFIX = NS + 'key.';
const ERASED_PREFIX = NS + 'erased.';
const RETRY_KEY = NS + 'retry';
const LEASE_KEY = NS + 'lease';
const LOCK_NAME = NS + 'flush';

const UPLOAD_PATH = '/api/upload-user-data';
const BATCH_PATH = UPLOAD_PATH + '/batch';
const RESTORE_PATH = '/api/user-status';

const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/; // participant and session IDs
const ID_RULE = '1 to 64 letters, digits, _ or -';
const KEY_PATTERN = /^[A-Za-z0-9_-]{16,256}$/; // the collector's participantKey rule
const KEY_BYTES = 32; // 256 random bits, 43 base64url characters
const MAX_TRIAL_INDEX = 100000;
const COLLECTOR_BATCH_LIMIT = 50; // the collector's settings.max_batch_items
const KEEPALIVE_MAX_BYTES = 60000; // browsers refuse keepalive bodies over 64 KiB in flight
const UTF8_MAX_BYTES_PER_UNIT = 3; // a UTF-16 code unit never takes more than 3 bytes of UTF-8
const MAX_BACKOFF_EXPONENT = 40; // 2^40 times any base is past any cap; keeps the product finite
// An upload ID where crypto.randomUUID is missing (insecure contexts): 4 random 32-bit words as a UUID.
const UUID_WORDS = 4;
const WORD_RANGE = 2 ** 32;
const HEX = 16;
const WORD_HEX_DIGITS = 8;
const UUID_LAYOUT = /^(.{8})(.{4})(.{4})(.{4})(.{12})$/;

const HTTP_OK_MIN = 200;
const HTTP_OK_END = 300;
const HTTP_CLIENT_ERROR_MIN = 400;
const HTTP_SERVER_ERROR_MIN = 500;
const HTTP_NOT_FOUND = 404;
const HTTP_GONE = 410; // the participant was erased
const HTTP_TOO_MANY_REQUESTS = 429;

const SECOND_MS = 1000;
const MINUTE_MS = 60 * SECOND_MS;
const HOUR_MS = 60 * MINUTE_MS;
const ORPHAN_AFTER_MS = MINUTE_MS; // a meta key without its body for this long was never completed
const INFLIGHT_MARGIN_MS = SECOND_MS; // an upload counts as in flight for its timeout plus this
const RECHECK_MARGIN_MS = 50; // look again this long after another tab's send or lease must have ended
const DEFAULT_FLUSH_TIMEOUT_MS = 10 * SECOND_MS;
const FLUSH_MIN_PAUSE_MS = 100; // flush(timeoutMs) never retries a failing collector faster than this

/** What `enqueue` did with an upload. */
const QUEUED = Object.freeze({ STORED: 'stored', MEMORY: 'memory', FULL: 'full' });

/** The study's localStorage keys and the request fields they become (docs/api.md); the row
 *  `participant_response_{id}` -> `participantResponses` is added per participant. */
export const STUDY_KEYS = Object.freeze(
  [
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
  ].map((row) => Object.freeze(row)),
);

/** Fields of a trial upload that its `extraFields` cannot replace. */
const TRIAL_RESERVED = new Set([
  'participantId',
  'participantKey',
  'timestamp',
  'uploadId',
  'uploadType',
  'sessionId',
  'trialIndex',
  'trialData',
]);

const DEFAULTS = Object.freeze({
  collectorUrl: null, // null: the page's own origin
  timeoutMs: 15 * SECOND_MS,
  statusIntervalMs: 5 * MINUTE_MS, // 0 switches periodic status uploads off
  retryBaseMs: 2 * SECOND_MS,
  retryMaxMs: 5 * MINUTE_MS,
  maxBatchItems: COLLECTOR_BATCH_LIMIT,
  maxBatchBytes: 1024 * 1024, // well under the collector's MAX_UPLOAD_BYTES (4 MiB)
  // A trial waits this long for the next ones, so they share one batch request; 0 sends each at once.
  batchDelayMs: 100,
  maxQueueItems: 1000, // room for a long experiment's trials while offline (about 1 KB each)
  leaseMs: 30 * SECOND_MS,
  crossTabLock: true,
  lockGraceMs: 50,
  participantId: null,
  onEvent: null,
  // Injections for tests and unusual hosts; undefined means "the global one, looked up lazily".
  storage: undefined,
  fetch: undefined,
  locks: undefined,
  crypto: undefined,
  now: undefined,
  random: undefined,
  setTimeout: undefined,
  clearTimeout: undefined,
});

// --- small pure helpers

function errorText(err) {
  try {
    return err && err.message ? String(err.message) : String(err);
  } catch {
    return 'unknown error';
  }
}

const NON_ASCII = /[^\x00-\x7f]/; // eslint-disable-line no-control-regex
let encoder = null; // made once: a TextEncoder per call cost more than the rest of a trial's queueing

/** UTF-8 length of `text`: its length when it is ASCII (JSON of ASCII data is), else encoded. */
function byteLength(text) {
  if (!NON_ASCII.test(text)) return text.length;
  try {
    encoder = encoder || new TextEncoder();
    return encoder.encode(text).length;
  } catch {
    return text.length * UTF8_MAX_BYTES_PER_UNIT;
  }
}

function validId(id) {
  return (typeof id === 'string' || Number.isInteger(id)) && ID_PATTERN.test(String(id));
}

function isPlainObject(value) {
  return Boolean(value) && typeof value === 'object' && !Array.isArray(value);
}

/** The body with the participant key as its first field (bodies are serialised once, keys added late). */
function withKey(bodyText, key) {
  if (!key) return bodyText;
  const field = `"participantKey":${JSON.stringify(key)}`;
  const isEmptyObject = bodyText.trim() === '{}';
  return isEmptyObject ? `{${field}}` : `{${field},${bodyText.slice(1)}`;
}

/** What an event or answer says about an upload: never its body, never the key. */
function describe(item) {
  const about = { uploadId: item.uploadId, participantId: item.participantId, uploadType: item.uploadType };
  if (item.uploadType === 'trial') {
    about.sessionId = item.sessionId;
    about.trialIndex = item.trialIndex;
  }
  return about;
}

function byQueueOrder(a, b) {
  return a.createdAt - b.createdAt || (a.seq || 0) - (b.seq || 0) || (a.uploadId < b.uploadId ? -1 : 1);
}

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
    const size = byteLength(item.bodyText) + 1; // and the comma that joins it to the next
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
 * Milliseconds to wait before try number `attempt + 1`: full jitter (uniform in
 * [0, min(maxMs, baseMs·2^attempt)]), never sooner than the server's `Retry-After` (itself capped at
 * `maxMs`).
 * @param {number} attempt failures so far, 0 for the first retry
 * @param {{baseMs: number, maxMs: number, random?: () => number, retryAfterMs?: number}} options
 * @returns {number}
 */
export function backoffDelay(attempt, { baseMs, maxMs, random: rand = Math.random, retryAfterMs = 0 }) {
  const exponent = Math.min(Math.max(attempt, 0), MAX_BACKOFF_EXPONENT);
  const ceiling = Math.min(maxMs, baseMs * 2 ** exponent);
  const jittered = rand() * ceiling;
  return Math.max(jittered, Math.min(retryAfterMs || 0, maxMs));
}

/** `Retry-After` (seconds, or an HTTP date) in milliseconds from `nowMs`; 0 when absent or unreadable. */
function parseRetryAfter(header, nowMs) {
  if (!header) return 0;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * SECOND_MS);
  const when = Date.parse(header);
  return Number.isFinite(when) ? Math.max(0, when - nowMs) : 0;
}

/**
 * What a collector answer means for the upload it answers:
 * `ok` (stored), `erased` (410: final for the whole participant), `reject` (final for this upload)
 * or `retry` (keep it and try again later).
 */
function classify(httpStatus, json, retryAfterMs) {
  const error = json && typeof json.error === 'string' ? json.error : `HTTP ${httpStatus}`;
  const reason = json && typeof json.reason === 'string' ? json.reason : undefined;
  if (httpStatus >= HTTP_OK_MIN && httpStatus < HTTP_OK_END) {
    // Only the collector's own success answer counts: a captive portal's 200 stored nothing.
    if (json && json.status === 'success') return { kind: 'ok', httpStatus, json };
    return { kind: 'retry', httpStatus, error: "the answer was not the collector's" };
  }
  if (httpStatus === HTTP_GONE) return { kind: 'erased', httpStatus, json, error, reason: 'erased' };
  const clientError = httpStatus >= HTTP_CLIENT_ERROR_MIN && httpStatus < HTTP_SERVER_ERROR_MIN;
  if (clientError && httpStatus !== HTTP_TOO_MANY_REQUESTS) {
    return { kind: 'reject', httpStatus, json, error, reason };
  }
  return { kind: 'retry', httpStatus, json, error, retryAfterMs };
}

// --- the host: configuration, clock, timers, storage and events of one instance

class Host {
  constructor() {
    this.config = { ...DEFAULTS };
  }

  now() {
    return this.config.now ? this.config.now() : Date.now();
  }

  random() {
    return this.config.random ? this.config.random() : Math.random();
  }

  /** Run `fn` after `ms`; a timer never throws into the page and never keeps a Node process alive. */
  later(fn, ms) {
    const set = this.config.setTimeout || globalThis.setTimeout;
    const run = () => {
      try {
        fn();
      } catch {
        // nothing to tell: the callbacks are the module's own and report through events
      }
    };
    const id = set(run, Math.max(0, ms));
    if (id && typeof id.unref === 'function') id.unref();
    return id;
  }

  cancel(id) {
    try {
      (this.config.clearTimeout || globalThis.clearTimeout)(id);
    } catch {
      // an unknown timer id: nothing to cancel
    }
  }

  sleep(ms) {
    return new Promise((resolve) => this.later(resolve, ms));
  }

  storage() {
    if (this.config.storage !== undefined) return this.config.storage;
    try {
      return globalThis.localStorage || null;
    } catch {
      return null; // sandboxed iframes throw on the getter
    }
  }

  /** The raw string under `key`, null when absent, undefined when storage cannot be read. */
  readRaw(key) {
    try {
      const s = this.storage();
      if (!s) return undefined;
      const value = s.getItem(key);
      return value === null || value === undefined ? null : String(value);
    } catch {
      return undefined;
    }
  }

  writeRaw(key, text) {
    try {
      const s = this.storage();
      if (!s) return false;
      s.setItem(key, text);
      return true;
    } catch {
      return false;
    }
  }

  removeRaw(key) {
    try {
      const s = this.storage();
      if (s) s.removeItem(key);
    } catch {
      // unreadable storage holds nothing of ours to remove
    }
  }

  readJson(key) {
    const text = this.readRaw(key);
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }

  /** Every storage key starting with `prefix`; [] when storage cannot be listed. */
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
      // storage unusable: nothing listed
    }
    return found;
  }

  emit(type, detail) {
    try {
      if (typeof this.config.onEvent === 'function') this.config.onEvent({ type, ...detail });
    } catch {
      // the study's handler threw: its problem must not become the upload's
    }
  }

  newId() {
    const c = this.config.crypto || globalThis.crypto;
    try {
      if (c && typeof c.randomUUID === 'function') return c.randomUUID();
    } catch {
      // insecure context: randomUUID is missing or throws; fall through
    }
    let hex = '';
    for (let i = 0; i < UUID_WORDS; i += 1) {
      hex += Math.floor(this.random() * WORD_RANGE)
        .toString(HEX)
        .padStart(WORD_HEX_DIGITS, '0');
    }
    return hex.replace(UUID_LAYOUT, '$1-$2-$3-$4-$5');
  }

  /** A new participant key, or null when this host has no cryptographic randomness. */
  newKey() {
    const c = this.config.crypto || globalThis.crypto;
    try {
      const bytes = c.getRandomValues(new Uint8Array(KEY_BYTES));
      let binary = '';
      for (const byte of bytes) binary += String.fromCharCode(byte);
      return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    } catch {
      return null;
    }
  }

  collectorUrl() {
    let base = this.config.collectorUrl;
    if (!base) {
      try {
        base = globalThis.location.origin;
      } catch {
        base = '';
      }
    }
    return String(base || '').replace(/\/+$/, '');
  }

  /**
   * One request; resolves to the `classify` outcome, or to `retry` on a network error or timeout.
   * @returns {Promise<{kind: string, httpStatus: number, json?: Object, error?: string}>}
   */
  async request(method, path, bodyText, { keepalive = false, contentType = 'application/json' } = {}) {
    const fetchFn = this.config.fetch || globalThis.fetch;
    if (typeof fetchFn !== 'function') return { kind: 'retry', httpStatus: 0, error: 'fetch is unavailable' };
    const controller = typeof AbortController === 'function' ? new AbortController() : null;
    const timeoutMs = this.config.timeoutMs;
    let timer = null;
    const timeout = new Promise((resolve) => {
      timer = this.later(() => {
        if (controller) controller.abort();
        resolve({ kind: 'retry', httpStatus: 0, error: `no answer within ${timeoutMs} ms` });
      }, timeoutMs);
    });
    const init = { method, mode: 'cors', credentials: 'omit', keepalive };
    if (controller) init.signal = controller.signal;
    if (bodyText !== undefined) {
      init.body = bodyText;
      init.headers = { 'Content-Type': contentType };
    }
    const attempt = this.#answer(fetchFn, this.collectorUrl() + path, init).catch((err) => ({
      kind: 'retry',
      httpStatus: 0,
      error: `network error: ${errorText(err)}`,
    }));
    try {
      return await Promise.race([attempt, timeout]);
    } finally {
      this.cancel(timer);
    }
  }

  async #answer(fetchFn, url, init) {
    const response = await fetchFn.call(globalThis, url, init);
    const httpStatus = Number(response.status) || 0;
    let json = null;
    try {
      json = await response.json();
    } catch {
      // not JSON: a proxy or captive portal answered; classify says what that means
    }
    let retryAfter = null;
    try {
      retryAfter = response.headers.get('Retry-After');
    } catch {
      // no headers object: no Retry-After
    }
    return classify(httpStatus, json, parseRetryAfter(retryAfter, this.now()));
  }
}

// --- the persistent queue: per upload a small meta key and a body key, so tabs appending and removing
// never overwrite each other, and looking at the queue never parses the (large) bodies.

function parseMeta(text) {
  try {
    const meta = JSON.parse(text);
    return meta && typeof meta.uploadId === 'string' ? meta : null;
  } catch {
    return null;
  }
}

const metaText = ({ bodyText: _body, ...meta }) => JSON.stringify(meta);

class Queue {
  /** @param {Host} host */
  constructor(host) {
    this.host = host;
    this.memory = new Map(); // uploadId -> item localStorage could not hold (kept for this page's life)
    // An upper bound on this tab's view of the queue length: the last count plus what was enqueued
    // since. Listing localStorage per trial cost more than the rest of queueing it; the bound is looked
    // at exactly (and other tabs' uploads seen) when this estimate comes near it.
    this.estimate = null;
  }

  /**
   * The queue as it is, oldest first, and its debris; a pure read (nothing is changed or emitted).
   * @param {{withBodies?: boolean}} [options] with bodies, items whose body is still being written
   *   (by another tab) are left out
   * @returns {{items: Object[], debris: Array<{key: string, reason: string}>}}
   */
  read({ withBodies = false } = {}) {
    const { host } = this;
    const found = new Map();
    const debris = [];
    const keys = host.keysStartingWith([ITEM_PREFIX, BODY_PREFIX]);
    const bodies = new Set(
      keys.filter((k) => k.startsWith(BODY_PREFIX)).map((k) => k.slice(BODY_PREFIX.length)),
    );
    for (const key of keys) {
      if (!key.startsWith(ITEM_PREFIX)) continue;
      const id = key.slice(ITEM_PREFIX.length);
      const text = host.readRaw(key);
      if (typeof text !== 'string') continue;
      const meta = parseMeta(text);
      const hasBody = bodies.delete(id);
      if (!meta) {
        debris.push({ key, reason: 'unreadable queue entry' });
        continue;
      }
      if (!hasBody && host.now() - meta.createdAt > ORPHAN_AFTER_MS) {
        debris.push({ key, reason: 'queue entry without its body' });
        continue;
      }
      const item = { ...meta, uploadId: id };
      if (withBodies) {
        item.bodyText = host.readRaw(BODY_PREFIX + id);
        if (typeof item.bodyText !== 'string' || !item.bodyText) continue; // being written by another tab
      }
      found.set(id, item);
    }
    // A body whose meta is gone is what a removal cut short left behind.
    for (const id of bodies) debris.push({ key: BODY_PREFIX + id, reason: 'body without its queue entry' });
    for (const [id, item] of this.memory) if (!found.has(id)) found.set(id, item);
    return { items: [...found.values()].sort(byQueueOrder), debris };
  }

  /** How many uploads are queued, without parsing any of them. */
  count() {
    const metas = this.host.keysStartingWith([ITEM_PREFIX]);
    const stored = new Set(metas.map((key) => key.slice(ITEM_PREFIX.length)));
    let extra = 0;
    for (const id of this.memory.keys()) if (!stored.has(id)) extra += 1;
    this.estimate = stored.size + extra;
    return this.estimate;
  }

  has(uploadId) {
    return this.memory.has(uploadId) || typeof this.host.readRaw(ITEM_PREFIX + uploadId) === 'string';
  }

  /**
   * Remove the debris `read` found (half-written or half-removed entries), each with a `dropped` event
   * for an entry that was an upload.
   * @returns {number} how many keys were removed
   */
  clean() {
    const { debris } = this.read();
    for (const { key, reason } of debris) {
      if (key.startsWith(ITEM_PREFIX)) {
        this.drop(key.slice(ITEM_PREFIX.length));
        this.host.emit('dropped', { key, reason });
      } else {
        this.host.removeRaw(key);
      }
    }
    return debris.length;
  }

  /** Write an item; false (and kept in memory) when localStorage refused it. */
  save(item) {
    // Meta first, body second; removal in the same order, so a body without its meta is always debris.
    const { host } = this;
    const id = item.uploadId;
    if (host.writeRaw(ITEM_PREFIX + id, metaText(item)) && host.writeRaw(BODY_PREFIX + id, item.bodyText)) {
      this.memory.delete(id);
      return true;
    }
    this.drop(id);
    this.memory.set(id, item);
    return false;
  }

  /** After a failed try: record it, unless the item left the queue meanwhile (superseded, or sent by
   *  another tab). */
  update(item) {
    if (this.memory.has(item.uploadId)) this.memory.set(item.uploadId, item);
    else if (typeof this.host.readRaw(ITEM_PREFIX + item.uploadId) === 'string') {
      this.host.writeRaw(ITEM_PREFIX + item.uploadId, metaText(item));
    }
  }

  drop(uploadId) {
    this.memory.delete(uploadId);
    this.host.removeRaw(ITEM_PREFIX + uploadId);
    this.host.removeRaw(BODY_PREFIX + uploadId);
  }

  /**
   * Add an item under the bound `maxItems`: a newer status upload supersedes older ones of the same
   * participant, and older status uploads give way first; submissions and trials are never evicted.
   * @returns {string} one of QUEUED
   */
  enqueue(item, maxItems) {
    const isStatus = item.uploadType === 'status';
    // The common case (a trial or a submission under the bound) needs only a count, not a parse.
    if (!isStatus && (this.estimate ?? this.count()) + 1 <= maxItems) return this.#persist(item);
    if (!isStatus && this.count() + 1 <= maxItems) return this.#persist(item);
    const kept = [];
    for (const old of this.read().items) {
      if (isStatus && old.uploadType === 'status' && old.participantId === item.participantId) {
        this.#supersede(old, item);
      } else kept.push(old);
    }
    let excess = kept.length + 1 - maxItems;
    for (const old of kept) {
      if (excess <= 0) break;
      if (old.uploadType === 'status') {
        this.#supersede(old, item);
        excess -= 1;
      }
    }
    if (excess <= 0) return this.#persist(item);
    if (isStatus) return QUEUED.FULL; // the queue holds only submissions and trials: keep those
    this.memory.set(item.uploadId, item); // over the bound: kept for this page's life, loudly
    this.host.emit('not-persisted', { ...describe(item), reason: 'queue full' });
    return QUEUED.MEMORY;
  }

  #supersede(old, by) {
    this.drop(old.uploadId);
    this.host.emit('superseded', { ...describe(old), by: by.uploadId });
  }

  #persist(item) {
    if (this.estimate !== null) this.estimate += 1;
    if (this.save(item)) return QUEUED.STORED;
    this.host.emit('not-persisted', { ...describe(item), reason: 'localStorage refused the write' });
    return QUEUED.MEMORY;
  }
}

// --- the retry schedule, shared by the tabs of one study through localStorage

class RetrySchedule {
  /** @param {Host} host */
  constructor(host) {
    this.host = host;
    this.memory = null; // the state, when localStorage cannot hold it
  }

  /** @returns {{attempt: number, notBefore: number, serverAsked: boolean}} */
  state() {
    const stored = this.host.readJson(RETRY_KEY) || this.memory;
    if (!stored || typeof stored !== 'object') return { attempt: 0, notBefore: 0, serverAsked: false };
    return {
      attempt: Number(stored.attempt) || 0,
      notBefore: Number(stored.notBefore) || 0,
      serverAsked: Boolean(stored.serverAsked),
    };
  }

  /** Milliseconds until the next try is due (0 when it is due now). */
  wait() {
    return Math.max(0, this.state().notBefore - this.host.now());
  }

  set(state) {
    this.memory = state.attempt ? state : null;
    if (!state.attempt)
      this.host.removeRaw(RETRY_KEY); // nothing owed: leave no key behind
    else if (this.host.writeRaw(RETRY_KEY, JSON.stringify(state))) this.memory = null;
  }

  reset() {
    this.set({ attempt: 0, notBefore: 0, serverAsked: false });
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
  /** @param {Host} host */
  constructor(host) {
    this.host = host;
    this.supplied = new Map(); // participantId -> key the study supplied
    this.pendingKey = null; // a supplied key waiting for the participant it is for
    this.erased = new Set(); // erased participants, when localStorage cannot remember them
  }

  /** Take a study-supplied key for `participantId` (or, without one, for the next participant used). */
  supplyKey(key, participantId) {
    if (typeof key !== 'string' || !KEY_PATTERN.test(key)) {
      this.host.emit('invalid-option', {
        option: 'participantKey',
        error: 'participantKey must be 16 to 256 letters, digits, _ or -; it was ignored',
      });
      return;
    }
    if (participantId) this.#bind(participantId, key);
    else this.pendingKey = key;
  }

  /** A key supplied before any participant was named belongs to the first one named. */
  adoptPendingKey(participantId) {
    if (this.pendingKey) this.#bind(participantId, this.pendingKey);
  }

  #bind(participantId, key) {
    this.supplied.set(participantId, key);
    this.pendingKey = null;
    this.host.writeRaw(KEY_PREFIX + participantId, key); // later page loads use it too
  }

  /**
   * The participant's key: the study's, else the one kept in localStorage, else a new one when it
   * can be kept there. Null means "send no key": a key this browser would lose at the next page
   * load must not claim the participant.
   */
  keyFor(participantId) {
    this.adoptPendingKey(participantId);
    if (this.supplied.has(participantId)) return this.supplied.get(participantId);
    const storageKey = KEY_PREFIX + participantId;
    const stored = this.host.readRaw(storageKey);
    if (typeof stored === 'string' && KEY_PATTERN.test(stored)) return stored;
    if (stored === undefined) return null; // storage unreadable: nothing would be kept
    const fresh = this.host.newKey();
    if (!fresh || !this.host.writeRaw(storageKey, fresh)) return null;
    const kept = this.host.readRaw(storageKey); // another tab may have written its key at the same time
    return typeof kept === 'string' && KEY_PATTERN.test(kept) ? kept : null;
  }

  isErased(participantId) {
    return (
      this.erased.has(participantId) || typeof this.host.readRaw(ERASED_PREFIX + participantId) === 'string'
    );
  }

  markErased(participantId) {
    this.erased.add(participantId);
    const erasedAt = new Date(this.host.now()).toISOString();
    this.host.writeRaw(ERASED_PREFIX + participantId, JSON.stringify({ erasedAt }));
  }
}

function erasedAnswer(participantId, extra = {}) {
  return {
    status: 'error',
    reason: 'erased',
    participantId,
    ...extra,
    error: "this participant's data was erased at the research team's request; nothing more is sent",
  };
}

function invalidParticipant(participantId, extra = {}) {
  return { status: 'error', participantId, ...extra, error: `participantId must be ${ID_RULE}` };
}

const newCounts = () => ({ stored: 0, rejected: 0, remaining: 0 });

// --- the uploader

/**
 * One uploader: its configuration, timers and in-memory queue. Make one with `createUploader`.
 * No method throws or rejects; each resolves to a plain object.
 */
class Uploader {
  #host = new Host();
  #queue = new Queue(this.#host);
  #retry = new RetrySchedule(this.#host);
  #participants = new Participants(this.#host);
  #run = {
    flushing: null, // the running flush's promise
    flushAgain: false, // a flush was asked for while one ran
    timer: null,
    timerAt: 0,
    statusTimer: null,
    hidden: false,
    started: false,
    closed: false,
    seq: 0, // orders uploads made within one millisecond
    participantId: null, // whom periodic and page-hide status uploads are for
    tabId: null,
    listeners: [], // [target, type, handler], removed by close()
  };
  #storedCount = 0; // uploads this instance saw stored: what flush(timeoutMs) counts
  // Trials queued (persisted) by this page and waiting for the batch timer: [{item, resolve}].
  #pending = [];
  #pendingTimer = null;
  #changeWaiters = [];

  constructor(options = {}) {
    this.configure(options);
  }

  /**
   * Change the configuration; every option is optional (see createUploader).
   * @param {Object} options
   * @returns {Object} the configuration in effect (without the participant key)
   */
  configure(options = {}) {
    try {
      const given = {};
      for (const key of Object.keys(DEFAULTS)) {
        if (options && options[key] !== undefined) given[key] = options[key];
      }
      const host = this.#host;
      host.config = { ...host.config, ...given };
      const batchItems = Number(host.config.maxBatchItems) || COLLECTOR_BATCH_LIMIT;
      host.config.maxBatchItems = Math.max(1, Math.min(batchItems, COLLECTOR_BATCH_LIMIT));
      const participantId = host.config.participantId ? String(host.config.participantId) : null;
      if (options && options.participantKey !== undefined) {
        this.#participants.supplyKey(options.participantKey, participantId);
      } else if (given.participantId) {
        this.#participants.adoptPendingKey(participantId);
      }
      if (given.participantId) this.#rememberParticipant(participantId);
      if (given.statusIntervalMs !== undefined) this.#restartStatusTimer();
      this.start();
    } catch {
      // a bad option keeps the previous configuration
    }
    return { ...this.#host.config };
  }

  /**
   * Begin the background work: page listeners (online, pagehide, visibilitychange), the periodic
   * status upload, cleaning the queue and sending what an earlier page load left in it. Every other
   * method calls it; a page rarely needs to.
   */
  start() {
    const run = this.#run;
    if (run.started || run.closed) return;
    run.started = true;
    run.tabId = run.tabId || this.#host.newId();
    this.#listen();
    this.#restartStatusTimer();
    this.cleanQueue();
    if (this.#queue.count()) this.#scheduleFlush(this.#retry.wait());
  }

  /** Stop the background work (listeners and timers); calls made afterwards still upload. */
  close() {
    const run = this.#run;
    run.closed = true;
    for (const [target, type, handler] of run.listeners) {
      try {
        target.removeEventListener(type, handler);
      } catch {
        // the page is gone
      }
    }
    run.listeners = [];
    if (run.timer) this.#host.cancel(run.timer);
    if (run.statusTimer) this.#host.cancel(run.statusTimer);
    run.timer = null;
    run.statusTimer = null;
  }

  // --- gathering

  /**
   * The request fields gathered from the study's localStorage keys (docs/api.md), types restored,
   * `totalSessionTimeHours` derived. Absent keys are left out; unreadable storage gives `{}`.
   * @param {string} participantId
   * @returns {Object<string, *>}
   */
  collectStudyFields(participantId) {
    const fields = {};
    const rows = [...STUDY_KEYS, [`participant_response_${participantId}`, 'participantResponses']];
    for (const [key, field] of rows) {
      const raw = this.#host.readRaw(key);
      if (typeof raw === 'string') fields[field] = parseStoredValue(raw);
    }
    const ms = fields.totalSessionTime;
    if (typeof ms === 'number') fields.totalSessionTimeHours = ms / HOUR_MS;
    return fields;
  }

  // --- uploads

  /**
   * Upload the participant's status (every study localStorage key) to `status.json`.
   * @param {string} participantId
   * @returns {Promise<Object>} the collector's answer `{status: 'success', …}`, or
   *   `{status: 'queued', uploadId, error, …}` (kept and retried), or
   *   `{status: 'error', error, reason?, …}`
   */
  uploadUserStatus(participantId) {
    return this.#upload(participantId, 'status', (body) => body);
  }

  /**
   * Upload one submission (the study's jsonDump) with the participant's status; call it after a
   * Qualtrics submission and after a timeout submission.
   * @param {string} participantId
   * @param {Object} submissionData the jsonDump (anything else is sent wrapped as `{value}`)
   * @returns {Promise<Object>} as for `uploadUserStatus`
   */
  uploadSubmissionData(participantId, submissionData) {
    return this.#upload(participantId, 'submission', (body) => {
      const isObject = isPlainObject(submissionData);
      // The collector needs an object; anything else is kept, wrapped, rather than refused.
      const value = submissionData === undefined ? null : submissionData;
      body.submissionData = isObject ? submissionData : { value };
      if (!isObject) body.submissionDataWrapped = true;
      return body;
    });
  }

  /**
   * Upload one trial of an experiment run: stored once per (sessionId, trialIndex), queued, batched and
   * kept across page loads like every other upload. Trials carry no study localStorage fields.
   * @param {string} participantId
   * @param {string} sessionId one run of the experiment (1 to 64 letters, digits, _ or -)
   * @param {number} trialIndex the trial's index in the run, an integer 0..100000
   * @param {Object} trialData the trial's data (anything else is sent wrapped as `{value}`)
   * @param {Object} [extraFields] more request fields (they cannot replace the fields above)
   * @returns {Promise<Object>} as for `uploadUserStatus`; bad arguments resolve to
   *   `{status: 'error'}` without anything being queued
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
      (body) => trialBody(body, trial, trialData, extraFields),
      trial,
    );
  }

  async #upload(participantId, uploadType, build, meta = {}) {
    try {
      if (!validId(participantId)) return invalidParticipant(participantId);
      const id = String(participantId);
      if (this.#participants.isErased(id)) return erasedAnswer(id);
      this.start();
      if (uploadType !== 'trial') this.#rememberParticipant(id);
      let item;
      try {
        item = this.#createItem(id, uploadType, build, meta);
      } catch (err) {
        return {
          status: 'error',
          participantId,
          error: `the upload cannot be serialised: ${errorText(err)}`,
        };
      }
      const later = uploadType === 'trial' && Number(this.#host.config.batchDelayMs) > 0;
      return await (later ? this.#deliverLater(item) : this.#deliver(item));
    } catch (err) {
      return { status: 'error', participantId, error: `uploader failure: ${errorText(err)}` };
    }
  }

  #createItem(participantId, uploadType, build, meta) {
    const host = this.#host;
    const createdAt = host.now();
    const uploadId = host.newId();
    const timestamp = new Date(createdAt).toISOString();
    const base = { participantId, timestamp, uploadId, uploadType };
    const body = build(
      uploadType === 'trial' ? base : { ...base, ...this.collectStudyFields(participantId) },
    );
    this.#run.seq += 1;
    const item = { uploadId, participantId, uploadType, createdAt, timestamp, seq: this.#run.seq, ...meta };
    item.tries = 0;
    item.inflightUntil = 0;
    item.bodyText = JSON.stringify(body); // serialised once: a circular jsonDump throws here, not later
    return item;
  }

  /** The request body of an item: its text with the participant's key, added at send time. */
  #bodyOf(item) {
    return withKey(item.bodyText, this.#participants.keyFor(item.participantId));
  }

  /** Queue the item, then send it unless a backoff is running; resolves to the answer for the caller. */
  async #deliver(item) {
    const host = this.#host;
    const waiting = this.#retry.wait() > 0; // honour Retry-After/backoff: queue, do not send
    // Other tabs' flushes skip an item in flight.
    item.inflightUntil = waiting ? 0 : host.now() + host.config.timeoutMs + INFLIGHT_MARGIN_MS;
    const queued = this.#queue.enqueue(item, host.config.maxQueueItems);
    const base = { ...describe(item), persisted: queued === QUEUED.STORED };
    if (queued === QUEUED.FULL)
      base.error = 'the queue is full of submissions; this status upload was not kept';
    if (waiting) {
      this.#scheduleFlush(this.#retry.wait());
      host.emit('queued', base);
      return { status: 'queued', ...base, error: 'waiting before the next try' };
    }
    const outcome = await host.request('POST', UPLOAD_PATH, this.#bodyOf(item));
    const answer = this.#handleAnswer(item, outcome, newCounts());
    this.#afterContact(outcome);
    return answer;
  }

  /**
   * Queue the item now (persisted before this returns: a tab closed a moment later loses nothing),
   * and send it with the trials that follow within `batchDelayMs`, in one batch request. Resolves to
   * the collector's answer for this item, like `#deliver`.
   */
  #deliverLater(item) {
    const host = this.#host;
    if (this.#retry.wait() > 0) return this.#deliver(item); // backing off: queued, answered at once
    const delay = Number(host.config.batchDelayMs) || 0;
    // Claimed for this page's coming send, so other tabs' flushes leave it alone meanwhile.
    item.inflightUntil = host.now() + delay + host.config.timeoutMs + INFLIGHT_MARGIN_MS;
    this.#queue.enqueue(item, host.config.maxQueueItems); // trials are never refused (FULL)
    return new Promise((resolve) => {
      this.#pending.push({ item, resolve });
      // A full batch goes at once, but from a timer too: this call stays cheap.
      const full = this.#pending.length >= host.config.maxBatchItems;
      if (full || !this.#pendingTimer) {
        if (this.#pendingTimer) host.cancel(this.#pendingTimer);
        this.#pendingTimer = host.later(() => this.#sendPending(), full ? 0 : delay);
      }
    });
  }

  /** Take the trials waiting for the batch timer (and stop the timer). */
  #takePending() {
    if (this.#pendingTimer) this.#host.cancel(this.#pendingTimer);
    this.#pendingTimer = null;
    const entries = this.#pending;
    this.#pending = [];
    return entries;
  }

  /**
   * Send the trials waiting for the batch timer now, in batch requests; resolves each caller's promise
   * with its own answer. Resolves to the counts, or null when nothing was waiting.
   */
  async #sendPending() {
    const entries = this.#takePending();
    if (!entries.length) return null;
    const counts = newCounts();
    const failure = await this.#sendEntries(entries, counts).catch((err) => ({ error: errorText(err) }));
    if (failure) {
      counts.error = failure.error;
      this.#scheduleFlush(this.#retry.fail(failure.retryAfterMs));
    } else if (counts.stored) this.#noteContact();
    return counts;
  }

  /**
   * Send `entries` ({item, resolve}) in batches, answer each entry (an unanswered one is kept for a
   * retry) and resolve it. Returns the failure that should delay what follows, or null.
   */
  async #sendEntries(entries, counts, options = {}) {
    const host = this.#host;
    const sendable = [];
    for (const entry of entries) {
      let bodyText;
      try {
        bodyText = this.#bodyOf(entry.item);
      } catch (err) {
        entry.resolve({ status: 'error', ...describe(entry.item), error: errorText(err) }); // kept queued
        continue;
      }
      if (this.#participants.isErased(entry.item.participantId)) {
        // Erased while it waited: already dropped from the queue with the participant's other uploads.
        this.#queue.drop(entry.item.uploadId);
        entry.resolve(erasedAnswer(entry.item.participantId, { ...describe(entry.item) }));
      } else sendable.push({ ...entry, bodyText });
    }
    const limits = { maxItems: host.config.maxBatchItems, maxBytes: host.config.maxBatchBytes };
    let failure = null;
    try {
      for (const batch of splitBatches(sendable, limits)) {
        failure = await this.#sendBatch(batch, counts, options);
        if (failure) break;
      }
    } catch (err) {
      failure = { error: errorText(err) };
    }
    const retry = {
      kind: 'retry',
      httpStatus: (failure && failure.httpStatus) || 0,
      error: (failure && failure.error) || 'not answered',
    };
    for (const entry of sendable) {
      try {
        entry.resolve(entry.answer || this.#handleAnswer(entry.item, retry, counts));
      } catch (err) {
        entry.resolve({
          status: 'error',
          ...describe(entry.item),
          error: `uploader failure: ${errorText(err)}`,
        });
      }
    }
    return failure;
  }

  /**
   * Apply the collector's answer for one upload to the queue, the counts and the events: the one place
   * that decides what an answer means. Returns what the caller of an upload function gets.
   * @param {Object} item the queued upload
   * @param {{kind: string, httpStatus: number, json?: Object, error?: string, reason?: string}} outcome
   * @param {{stored: number, rejected: number}} counts incremented in place
   */
  #handleAnswer(item, outcome, counts) {
    const host = this.#host;
    const about = describe(item);
    const { httpStatus } = outcome;
    this.#signalChange();
    if (outcome.kind === 'ok') {
      this.#queue.drop(item.uploadId);
      counts.stored += 1;
      this.#storedCount += 1;
      const keyVerified = outcome.json.keyVerified !== false;
      host.emit('stored', { ...about, keyVerified });
      if (!keyVerified) host.emit('key-mismatch', { ...about, httpStatus });
      return outcome.json;
    }
    if (outcome.kind === 'retry') {
      item.tries += 1;
      item.inflightUntil = 0;
      this.#queue.update(item);
      const detail = { ...about, persisted: !this.#queue.memory.has(item.uploadId), httpStatus };
      host.emit('queued', { ...detail, error: outcome.error });
      return { status: 'queued', ...detail, error: outcome.error };
    }
    const answer = { status: 'error', ...about, persisted: false, httpStatus, error: outcome.error };
    if (outcome.reason) answer.reason = outcome.reason;
    // Dropped already with the rest of an erased participant's queue: told once, counted once.
    if (
      outcome.kind === 'erased' &&
      !this.#queue.has(item.uploadId) &&
      this.#participants.isErased(item.participantId)
    ) {
      return answer;
    }
    this.#queue.drop(item.uploadId);
    counts.rejected += 1;
    host.emit('rejected', { ...about, httpStatus, error: outcome.error, reason: outcome.reason });
    if (outcome.reason === 'participant-key') host.emit('key-mismatch', { ...about, httpStatus });
    if (outcome.kind === 'erased') counts.rejected += this.#forgetParticipant(item.participantId);
    return answer;
  }

  /** The participant was erased: remember it, drop their queue, stop their status uploads. */
  #forgetParticipant(participantId) {
    this.#participants.markErased(participantId);
    let dropped = 0;
    for (const item of this.#queue.read().items) {
      if (item.participantId !== participantId) continue;
      this.#queue.drop(item.uploadId);
      this.#host.emit('dropped', { ...describe(item), reason: 'participant erased' });
      dropped += 1;
    }
    this.#host.emit('erased', { participantId });
    if (this.#run.participantId === participantId) this.#restartStatusTimer();
    return dropped;
  }

  /** After an answer outside a flush: a failure delays what follows; a success sends what waited. */
  #afterContact(outcome) {
    if (outcome.kind === 'retry') this.#scheduleFlush(this.#retry.fail(outcome.retryAfterMs));
    else if (outcome.kind === 'ok') this.#noteContact();
  }

  #noteContact() {
    if (this.#retry.state().attempt) this.#retry.reset();
    // What waited for the contact goes now; trials waiting for the batch timer go with their timer.
    if (this.#queue.count() > this.#pending.length) this.#scheduleFlush(0);
  }

  #scheduleFlush(delayMs) {
    const run = this.#run;
    if (run.closed) return;
    const at = this.#host.now() + Math.max(0, delayMs);
    if (run.timer && run.timerAt <= at) return; // an earlier flush is already due
    if (run.timer) this.#host.cancel(run.timer);
    run.timerAt = at;
    run.timer = this.#host.later(() => {
      run.timer = null;
      this.flushQueue();
    }, delayMs);
  }

  // --- flushing the queue, one tab at a time

  /**
   * Send the queue now (batched, with the trials waiting for the batch timer), unless another tab is
   * sending it. Normally not needed: the queue is
   * flushed on `online`, after any successful contact and on a timer.
   * @returns {Promise<{stored: number, rejected: number, remaining: number, error?: string,
   *   skipped?: boolean}>}
   */
  flushQueue() {
    const run = this.#run;
    try {
      this.start();
      if (run.flushing) {
        run.flushAgain = true;
        return run.flushing;
      }
      run.flushing = this.#flushRounds()
        .catch((err) => ({ ...newCounts(), remaining: this.#queue.count(), error: errorText(err) }))
        .finally(() => {
          run.flushing = null;
        });
      return run.flushing;
    } catch (err) {
      return Promise.resolve({ ...newCounts(), error: errorText(err) });
    }
  }

  async #flushRounds() {
    const run = this.#run;
    // Trials waiting for the batch timer go now (a flush is asked for: no more waiting).
    const early = await this.#sendPending();
    if (early && early.error) return { ...early, remaining: this.#queue.count() };
    let summary;
    do {
      run.flushAgain = false;
      summary = await this.#underCrossTabLock(() => this.#flushLocked());
    } while (run.flushAgain && !summary.error);
    if (early) {
      summary = {
        ...summary,
        stored: summary.stored + early.stored,
        rejected: summary.rejected + early.rejected,
      };
    }
    return summary;
  }

  /**
   * Send the queue until it is empty or `timeoutMs` passed, retrying failures on the backoff schedule
   * (but at least every 100 ms, and never past the deadline); for a page about to navigate away.
   * @param {number} [timeoutMs=10000]
   * @returns {Promise<{stored: number, remaining: number}>} `stored`: uploads this instance saw stored
   *   meanwhile (by this flush or by calls still in flight); `remaining`: uploads still queued at the end
   */
  async flush(timeoutMs = DEFAULT_FLUSH_TIMEOUT_MS) {
    const storedBefore = this.#storedCount;
    const host = this.#host;
    let timer = null;
    try {
      const budget = Math.max(0, Number(timeoutMs) || 0);
      const deadline = host.now() + budget;
      const timeUp = new Promise((resolve) => {
        timer = host.later(resolve, budget);
      });
      const drained = this.#drain(deadline).catch(() => {}); // never rejects into the study
      await Promise.race([drained, timeUp]);
    } catch {
      // reported through the figures below
    } finally {
      if (timer) host.cancel(timer);
    }
    return { stored: this.#storedCount - storedBefore, remaining: this.#remaining() };
  }

  #remaining() {
    try {
      return this.#queue.read().items.length;
    } catch {
      return 0;
    }
  }

  async #drain(deadline) {
    const host = this.#host;
    for (;;) {
      const summary = await this.flushQueue();
      const left = deadline - host.now();
      if (!summary.remaining || left <= 0) return;
      // In flight elsewhere, backing off, or waiting for another tab: wait for the earliest of those,
      // for an answer to come in, or for the deadline.
      const inflight = this.#queue.read().items.map((item) => (item.inflightUntil || 0) - host.now());
      const due = Math.min(this.#retry.wait(), ...inflight.filter((ms) => ms > 0));
      await this.#waitForChange(Math.min(left, Math.max(FLUSH_MIN_PAUSE_MS, due)));
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

  async #underCrossTabLock(fn) {
    const host = this.#host;
    if (!host.config.crossTabLock) return fn();
    let locks = host.config.locks;
    if (locks === undefined) {
      try {
        locks = globalThis.navigator.locks;
      } catch {
        locks = null;
      }
    }
    if (locks && typeof locks.request === 'function') {
      // Waiting (not ifAvailable): the next holder re-reads the queue, so it does not resend what the last
      // one stored. localStorage changes reach other tabs asynchronously (measured in Chromium: the next
      // holder often read the old queue), so the lock is kept a moment after the queue changed.
      return locks.request(LOCK_NAME, async () => {
        const summary = await fn();
        const grace = Number(host.config.lockGraceMs) || 0;
        if (grace > 0 && (summary.stored || summary.rejected)) await host.sleep(grace);
        return summary;
      });
    }
    return this.#underLease(fn);
  }

  /** No Web Locks: a lease in localStorage, checked after writing it (the collector's idempotency is
   *  the net). */
  async #underLease(fn) {
    const host = this.#host;
    const me = this.#run.tabId || (this.#run.tabId = host.newId());
    const skipped = () => ({ ...newCounts(), remaining: this.#queue.count(), skipped: true });
    const lease = host.readJson(LEASE_KEY);
    if (lease && lease.owner !== me && Number(lease.until) > host.now()) {
      this.#scheduleFlush(Number(lease.until) - host.now() + RECHECK_MARGIN_MS);
      return skipped();
    }
    host.writeRaw(LEASE_KEY, JSON.stringify({ owner: me, until: host.now() + host.config.leaseMs }));
    const mine = host.readJson(LEASE_KEY);
    if (mine && mine.owner !== me) return skipped();
    try {
      return await fn();
    } finally {
      const current = host.readJson(LEASE_KEY);
      if (!current || current.owner === me) host.removeRaw(LEASE_KEY);
    }
  }

  async #flushLocked() {
    const host = this.#host;
    const counts = newCounts();
    this.cleanQueue();
    const all = this.#queue.read({ withBodies: true }).items;
    const due = all.filter((item) => !(item.inflightUntil > host.now()));
    // An item another send has in flight is looked at again once that send must have ended.
    const busyUntil = Math.min(
      ...all.filter((item) => !due.includes(item)).map((item) => item.inflightUntil),
    );
    if (Number.isFinite(busyUntil)) this.#scheduleFlush(busyUntil - host.now() + RECHECK_MARGIN_MS);
    const sendable = due.map((item) => ({ item, bodyText: this.#bodyOf(item) }));
    const limits = { maxItems: host.config.maxBatchItems, maxBytes: host.config.maxBatchBytes };
    for (const batch of splitBatches(sendable, limits)) {
      const failure = await this.#sendBatch(batch, counts);
      if (failure) {
        counts.error = failure.error;
        this.#scheduleFlush(this.#retry.fail(failure.retryAfterMs));
        break;
      }
    }
    if (!counts.error && counts.stored) this.#noteContact();
    counts.remaining = this.#queue.count();
    host.emit('flushed', counts);
    return counts;
  }

  /** Send one batch; returns the failure that should delay the rest, or null. */
  async #sendBatch(whole, counts, options = {}) {
    // A 410 earlier in this flush dropped its participant's other uploads: those are not sent.
    for (const entry of whole) {
      if (this.#participants.isErased(entry.item.participantId)) {
        entry.answer = erasedAnswer(entry.item.participantId, { ...describe(entry.item) });
      }
    }
    const batch = whole.filter((entry) => !this.#participants.isErased(entry.item.participantId));
    if (!batch.length) return null;
    const outcome = await this.#host.request('POST', BATCH_PATH, batchText(batch), options);
    if (outcome.kind === 'reject' || outcome.kind === 'erased') {
      return this.#sendOneByOne(batch, counts, options); // too large, or an older collector
    }
    if (outcome.kind !== 'ok') return outcome;
    if (!Array.isArray(outcome.json.results)) return { error: 'bad batch answer' };
    let failure = null;
    const answered = new Set();
    for (const result of outcome.json.results) {
      const entry = result && batch[result.index];
      if (!entry || result.uploadId !== entry.item.uploadId || answered.has(entry)) continue;
      answered.add(entry);
      const itemOutcome = classify(Number(result.httpStatus) || 0, result, 0);
      entry.answer = this.#handleAnswer(entry.item, itemOutcome, counts);
      if (itemOutcome.kind === 'retry') failure = failure || itemOutcome;
    }
    return failure || (answered.size < batch.length ? { error: 'some uploads were not answered' } : null);
  }

  async #sendOneByOne(batch, counts, options = {}) {
    for (const entry of batch) {
      const outcome = await this.#host.request('POST', UPLOAD_PATH, entry.bodyText, options);
      entry.answer = this.#handleAnswer(entry.item, outcome, counts);
      if (outcome.kind === 'retry') return outcome;
    }
    return null;
  }

  // --- the queue, as a display or a test sees it

  /**
   * What is waiting in the queue, for a status display or a test; a pure read.
   * @returns {{items: Array<{uploadId: string, uploadType: string, participantId: string, timestamp: string,
   *   tries: number, persisted: boolean, sessionId?: string, trialIndex?: number}>, attempt: number,
   *   nextAttemptAt: number, flushing: boolean}}
   */
  getQueueState() {
    try {
      const items = this.#queue.read().items.map((item) => ({
        ...describe(item),
        timestamp: item.timestamp,
        tries: item.tries,
        persisted: !this.#queue.memory.has(item.uploadId),
      }));
      const { attempt, notBefore } = this.#retry.state();
      return { items, attempt, nextAttemptAt: notBefore, flushing: Boolean(this.#run.flushing) };
    } catch {
      return { items: [], attempt: 0, nextAttemptAt: 0, flushing: false };
    }
  }

  /**
   * Remove what interrupted writes and removals left in the queue (a `dropped` event for each upload
   * entry removed). Runs at start and before every flush.
   * @returns {number} how many storage keys were removed
   */
  cleanQueue() {
    try {
      return this.#queue.clean();
    } catch {
      return 0;
    }
  }

  // --- restore

  /**
   * Read the participant's status back from the collector (with the participant's key) and fill in the
   * study's localStorage keys that are missing; a value the browser already has is never overwritten.
   * @param {string} participantId
   * @returns {Promise<{status: 'success' | 'not-found' | 'error', restored: Object<string, string>,
   *   error?: string, reason?: string}>} `restored` maps each key written to the string written; a wrong
   *   key answers `not-found`, exactly like an unknown participant
   */
  async restoreUserStatus(participantId) {
    const restored = {};
    try {
      if (!validId(participantId)) return invalidParticipant(participantId, { restored });
      const id = String(participantId);
      if (this.#participants.isErased(id)) return erasedAnswer(id, { restored });
      this.start();
      const key = this.#participants.keyFor(id);
      const body = JSON.stringify(key ? { participantId: id, participantKey: key } : { participantId: id });
      // text/plain: no CORS preflight, one round trip fewer while the study page is loading.
      const outcome = await this.#host.request('POST', RESTORE_PATH, body, { contentType: 'text/plain' });
      if (outcome.httpStatus === HTTP_NOT_FOUND) return { status: 'not-found', participantId: id, restored };
      if (outcome.kind === 'erased') {
        this.#forgetParticipant(id);
        return erasedAnswer(id, { restored });
      }
      const status = outcome.kind === 'ok' ? outcome.json.userStatus : null;
      if (!isPlainObject(status)) {
        return { status: 'error', participantId: id, restored, error: outcome.error || 'no userStatus' };
      }
      this.#fillMissingKeys(id, status, restored);
      return { status: 'success', participantId: id, restored };
    } catch (err) {
      return { status: 'error', participantId, restored, error: errorText(err) };
    }
  }

  #fillMissingKeys(participantId, status, restored) {
    const host = this.#host;
    const rows = [...STUDY_KEYS, [`participant_response_${participantId}`, 'participantResponses']];
    for (const [key, field] of rows) {
      const value = status[field];
      if (value === undefined || host.readRaw(key) !== null) continue; // present, or unreadable: leave it
      const text = typeof value === 'string' ? value : JSON.stringify(value);
      if (host.writeRaw(key, text)) restored[key] = text;
    }
  }

  // --- periodic and last-moment status uploads

  #rememberParticipant(participantId) {
    const changed = this.#run.participantId !== participantId;
    this.#run.participantId = participantId;
    if (changed) this.#restartStatusTimer();
  }

  #restartStatusTimer() {
    const run = this.#run;
    const host = this.#host;
    if (run.statusTimer) host.cancel(run.statusTimer);
    run.statusTimer = null;
    const every = Number(host.config.statusIntervalMs) || 0;
    const pid = run.participantId;
    if (every <= 0 || !pid || !run.started || run.closed || this.#participants.isErased(pid)) return;
    run.statusTimer = host.later(() => {
      run.statusTimer = null;
      if (!run.hidden) this.uploadUserStatus(run.participantId);
      this.#restartStatusTimer();
    }, every);
  }

  /**
   * The page is going away or out of sight: send the trials waiting for the batch timer, and a last
   * status upload, with keepalive (they are queued already: what does not fit, or dies with the page,
   * the next page load sends).
   */
  #onHidden() {
    const run = this.#run;
    const host = this.#host;
    const budget = KEEPALIVE_MAX_BYTES - this.#sendPendingWithKeepalive(KEEPALIVE_MAX_BYTES);
    if (run.hidden) return;
    run.hidden = true;
    const pid = run.participantId;
    if (!pid || this.#participants.isErased(pid)) return;
    let item;
    try {
      item = this.#createItem(pid, 'status', (body) => body, {});
    } catch {
      return;
    }
    // Queued first: if the page dies before the answer, the next page load sends it (same uploadId).
    const body = this.#bodyOf(item);
    const fits = byteLength(body) <= budget; // else the next page load sends it
    item.inflightUntil = fits ? host.now() + host.config.timeoutMs + INFLIGHT_MARGIN_MS : 0;
    if (this.#queue.enqueue(item, host.config.maxQueueItems) === QUEUED.FULL || !fits) return;
    // text/plain needs no CORS preflight, which a page being unloaded may not live to finish.
    const sending = host.request('POST', UPLOAD_PATH, body, { keepalive: true, contentType: 'text/plain' });
    sending.then((outcome) => this.#handleAnswer(item, outcome, newCounts()));
  }

  /**
   * Send the trials waiting for the batch timer in keepalive batch requests of at most `budget` bytes
   * in all (browsers refuse keepalive bodies past 64 KiB in flight); those that do not fit are
   * released for the next flush. Returns the bytes sent.
   */
  #sendPendingWithKeepalive(budget) {
    const entries = this.#takePending();
    if (!entries.length) return 0;
    const host = this.#host;
    const limits = { maxItems: host.config.maxBatchItems, maxBytes: budget };
    const batches = splitBatches(
      entries.map((entry) => ({ ...entry, bodyText: this.#bodyOf(entry.item) })),
      limits,
    );
    let used = 0;
    const sent = [];
    const left = [];
    for (const batch of batches) {
      const size = byteLength(batchText(batch));
      if (used + size <= budget) {
        used += size;
        sent.push(...batch);
      } else left.push(...batch);
    }
    // text/plain needs no CORS preflight, which a page being unloaded may not live to finish.
    const options = { keepalive: true, contentType: 'text/plain' };
    if (sent.length) {
      this.#sendEntries(sent, newCounts(), options)
        .then((failure) => {
          if (failure) this.#scheduleFlush(this.#retry.fail(failure.retryAfterMs));
          else this.#noteContact();
        })
        .catch(() => {}); // each caller is answered inside; nothing may reject into the page
    }
    for (const entry of left) {
      entry.item.inflightUntil = 0; // no longer claimed: the next flush (here or on the next load) sends it
      this.#queue.update(entry.item);
      this.#pending.push({ item: entry.item, resolve: entry.resolve });
    }
    if (this.#pending.length && !this.#pendingTimer) {
      this.#pendingTimer = host.later(() => this.#sendPending(), Number(host.config.batchDelayMs) || 0);
    }
    return used;
  }

  #onVisible() {
    this.#run.hidden = false;
    this.#flushNowOrWhenDue();
  }

  #onOnline() {
    // Back online: a network-error backoff no longer applies (a server's Retry-After still does).
    if (!this.#retry.state().serverAsked) this.#retry.reset();
    this.#flushNowOrWhenDue();
  }

  #flushNowOrWhenDue() {
    const wait = this.#retry.wait();
    if (wait > 0) this.#scheduleFlush(wait);
    else this.flushQueue();
  }

  #listen() {
    const on = (target, type, handler) => {
      if (!target || typeof target.addEventListener !== 'function') return;
      target.addEventListener(type, handler);
      this.#run.listeners.push([target, type, handler]);
    };
    try {
      const w = globalThis.window;
      const d = globalThis.document;
      on(w, 'online', () => this.#onOnline());
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

/** The batch request body of entries ({bodyText}): each body is already serialised. */
function batchText(entries) {
  return `{"uploads":[${entries.map((entry) => entry.bodyText).join(',')}]}`;
}

function trialBody(body, trial, trialData, extraFields) {
  const extras = {};
  if (isPlainObject(extraFields)) {
    for (const [name, value] of Object.entries(extraFields))
      if (!TRIAL_RESERVED.has(name)) extras[name] = value;
  }
  const isObject = isPlainObject(trialData);
  const value = trialData === undefined ? null : trialData;
  const result = { ...extras, ...body, ...trial, trialData: isObject ? trialData : { value } };
  if (!isObject) result.trialDataWrapped = true;
  return result;
}

// --- the public API

/**
 * Make an uploader that owns its state. Every option is optional.
 * @param {Object} [options]
 * @param {string} [options.collectorUrl] the collector's origin (default: the page's own origin)
 * @param {string} [options.participantId] who periodic and page-hide status uploads are for
 *   (default: the participant of the latest status or submission call)
 * @param {string} [options.participantKey] the study's own secret for `participantId` (16 to 256 of
 *   A-Z a-z 0-9 _ -), used instead of a key made in this browser, so restore works on any device
 * @param {number} [options.statusIntervalMs=300000] periodic status uploads; 0 switches them off
 * @param {number} [options.timeoutMs=15000] a request without an answer by then is retried later
 * @param {number} [options.retryBaseMs=2000] first backoff ceiling (doubles per failure, full jitter)
 * @param {number} [options.retryMaxMs=300000] backoff cap, also the cap on `Retry-After`
 * @param {number} [options.maxBatchItems=50] uploads per batch request (at most 50)
 * @param {number} [options.maxBatchBytes=1048576] body bytes per batch request
 * @param {number} [options.batchDelayMs=100] how long a trial waits for the next ones to share its
 *   batch request (it is queued at once); 0 sends each trial on its own at once
 * @param {number} [options.maxQueueItems=1000] queue bound (older status uploads give way first)
 * @param {boolean} [options.crossTabLock=true] one tab flushes at a time (Web Locks, else a lease)
 * @param {number} [options.lockGraceMs=50] how long the flush lock is kept after the queue changed
 * @param {function(Object): void} [options.onEvent] told of every event (see the top of this module)
 * @param {Storage} [options.storage] @param {Function} [options.fetch] @param {Object} [options.locks]
 * @param {Crypto} [options.crypto] @param {function(): number} [options.now]
 * @param {function(): number} [options.random] @param {Function} [options.setTimeout]
 * @param {Function} [options.clearTimeout] injections for tests and unusual hosts
 * @returns {Uploader} with the methods configure, uploadUserStatus, uploadSubmissionData,
 *   uploadTrialData, restoreUserStatus, flushQueue, flush, getQueueState, cleanQueue,
 *   collectStudyFields, start and close
 */
export function createUploader(options = {}) {
  explicitInstances += 1;
  return new Uploader(options);
}

let defaultInstance = null;
let explicitInstances = 0;

/** The default instance, behind the module-level functions below. */
export function getUploader() {
  if (!defaultInstance) defaultInstance = new Uploader();
  return defaultInstance;
}

/** Configure the default instance; see `createUploader` for the options. */
export function configureUploader(options = {}) {
  return getUploader().configure(options);
}

/** `uploadUserStatus` of the default instance. */
export function uploadUserStatus(participantId) {
  return getUploader().uploadUserStatus(participantId);
}

/** `uploadSubmissionData` of the default instance. */
export function uploadSubmissionData(participantId, submissionData) {
  return getUploader().uploadSubmissionData(participantId, submissionData);
}

/** `uploadTrialData` of the default instance. */
export function uploadTrialData(participantId, sessionId, trialIndex, trialData, extraFields = undefined) {
  return getUploader().uploadTrialData(participantId, sessionId, trialIndex, trialData, extraFields);
}

/** `restoreUserStatus` of the default instance. */
export function restoreUserStatus(participantId) {
  return getUploader().restoreUserStatus(participantId);
}

/** `flushQueue` of the default instance. */
export function flushQueue() {
  return getUploader().flushQueue();
}

/** `flush(timeoutMs)` of the default instance: resolves to `{stored, remaining}`. */
export function flushUntilEmpty(timeoutMs = DEFAULT_FLUSH_TIMEOUT_MS) {
  return getUploader().flush(timeoutMs);
}

/** `getQueueState` of the default instance. */
export function getQueueState() {
  return getUploader().getQueueState();
}

/** `collectStudyFields` of the default instance. */
export function collectStudyFields(participantId) {
  return getUploader().collectStudyFields(participantId);
}

// In a page, the default instance starts after the importing module's top level ran (so its
// configureUploader applies first), unless the page made instances of its own and never used this one:
// then it stays idle, rather than send the queue to the page's own origin.
if (typeof globalThis.window === 'object' && globalThis.window) {
  globalThis.setTimeout(() => {
    if (defaultInstance || !explicitInstances) getUploader().start();
  }, 0);
}
