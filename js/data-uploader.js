/**
 * data-uploader.js: backs a browser study's participant data up to the collector it was loaded from.
 * No call throws or rejects. Options, events, guarantees and design: docs/browser-module.md.
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
import { collectStudyFields as seedFields, restoreStudyFields } from './seed-study.js';

export { STUDY_KEYS, parseStoredValue } from './seed-study.js';

const NS = 'dataUploader.v1.';
const ITEM = NS + 'item.';
const BODY = NS + 'body.';
const KEY = NS + 'key.';
const ERASED = NS + 'erased.';
const RETRY = NS + 'retry';
const LEASE = NS + 'lease';
const KEEPALIVE_BYTES = 60000; // browsers refuse keepalive bodies past 64 KiB in flight
const WRAPPER_BYTES = 300; // the batch wrapper and the participant key added when sent
const ASK_LIMIT_FROM = 65536;
const WAITING = 'waiting before the next try';
const BUSY = 'another tab is sending the queue';
const HOLD = ['unknown-study', 'study-closed', 'study-full'];
const RESERVED =
  'participantId participantKey timestamp uploadId uploadType sessionId trialIndex trialData studyId';

const moduleOrigin = attempt(() => /^http/.test(import.meta.url) && new URL(import.meta.url).origin) || '';

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
  collectFields: seedFields,
  restoreFields: restoreStudyFields,
  onEvent: null,
};
const OPTIONS = Object.keys(DEFAULTS).concat(
  'storage fetch locks crypto now random setTimeout clearTimeout'.split(' '),
);

const validId = (id) => (typeof id === 'string' || Number.isInteger(id)) && ID_PATTERN.test(id);
const mustBe = (name) => `${name} must be ${ID_RULE}`;
const newCounts = () => ({ stored: 0, rejected: 0, remaining: 0 });

let encoder;
const byteLength = (text) =>
  /[^ -\x7f]/.test(text) ? (encoder ||= new TextEncoder()).encode(text).length : text.length;

function describe({ uploadId, participantId, uploadType, sessionId, trialIndex, studyId }) {
  const about = { uploadId, participantId, uploadType };
  if (uploadType === 'trial') Object.assign(about, { sessionId, trialIndex });
  if (studyId) about.studyId = studyId;
  return about;
}

/** Items ({bodyText}) in order, in batches of at most `maxItems` (and 50) and about `maxBytes`. */
export function splitBatches(items, { maxItems, maxBytes }) {
  const batches = [];
  const most = Math.max(1, Math.min(maxItems, MAX_BATCH_ITEMS));
  let bytes = 0;
  for (const item of items) {
    const size = byteLength(item.bodyText) + 1;
    const last = batches.at(-1);
    if (last?.length < most && bytes + size <= maxBytes) last.push(item);
    else {
      batches.push([item]);
      bytes = 0;
    }
    bytes += size;
  }
  return batches;
}

/** Milliseconds before try `attempt + 1`: full jitter, exponential ceiling, at least `retryAfterMs`. */
export function backoffDelay(attempt, { baseMs, maxMs, random = Math.random, retryAfterMs = 0 }) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 40));
  return Math.max(random() * ceiling, Math.min(retryAfterMs || 0, maxMs));
}

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
const keptFor = ({ kind }) => kind === 'retry' || kind === 'hold';

const erasedAnswer = (participantId, extra) => ({
  status: 'error',
  reason: 'erased',
  participantId,
  ...extra,
  error: "this participant's data was erased at the research team's request; nothing more is sent",
});

function wrap(body, field, value) {
  if (isPlainObject(value)) return value;
  body[`${field}Wrapped`] = true;
  return { value: value === undefined ? null : value };
}

const metaText = ({ bodyText: _body, ...meta }) => JSON.stringify(meta);
const byQueueOrder = (a, b) =>
  a.createdAt - b.createdAt || (a.seq || 0) - (b.seq || 0) || (a.uploadId < b.uploadId ? -1 : 1);

/** An uploader with its own configuration, timers and callers; options: docs/browser-module.md §1. */
export function createUploader(options = {}) {
  explicitInstances += 1;
  return makeUploader(options);
}

function makeUploader(options) {
  let config = { ...DEFAULTS };
  const memory = new Map();
  const recent = new Map();
  const waiters = new Map();
  const inflight = new Set();
  const supplied = new Map();
  const erased = new Set();
  const listeners = [];
  const changeWaiters = [];
  const ready = [];
  let estimate = null;
  let backoffMemory = null;
  let pendingKey = null;
  let inRound = false;
  let keepaliveBytes = 0;
  let pump = null;
  let dueAt = Infinity;
  let rearm = null;
  let wake = null;
  let dueTimer = null;
  let force = false;
  let fromTimer = false;
  let timer = null;
  let timerAt = 0;
  let statusTimer = null;
  let started = false;
  let closed = false;
  let hidden = false;
  let seq = 0;
  let pid = null;
  let tab = null;
  let storedCount = 0;
  let limit = null;

  const now = () => (config.now || Date.now)();
  const random = () => (config.random || Math.random)();
  const later = (fn, ms) => {
    const id = (config.setTimeout || setTimeout)(() => attempt(fn), Math.max(0, ms));
    id?.unref?.(); // never keeps a Node process alive
    return id;
  };
  const cancel = (id) => attempt(() => (config.clearTimeout || clearTimeout)(id));
  let pageStorage;
  const store = () =>
    config.storage !== undefined ? config.storage : (pageStorage ??= globalStorage('localStorage'));
  const get = (key) => readRaw(store(), key);
  const set = (key, text) => writeRaw(store(), key, text);
  const del = (key) => removeRaw(store(), key);
  const ids = (prefix) =>
    attempt(() => {
      const s = store();
      return Array.from({ length: +s?.length || 0 }, (_, i) => s.key(i))
        .filter((k) => k?.startsWith?.(prefix))
        .map((k) => k.slice(prefix.length));
    }, []);
  const emit = (type, detail) => attempt(() => config.onEvent?.({ type, ...detail }));
  const crypto = () => config.crypto || globalThis.crypto;
  const makeId = () => newId(crypto(), random);

  function request(path, body, keepalive = false, type = 'application/json') {
    const base = config.collectorUrl || moduleOrigin || attempt(() => location.origin);
    const abort = new AbortController();
    const ms = config.timeoutMs;
    const init = { credentials: 'omit', keepalive, signal: abort.signal };
    if (body) Object.assign(init, { method: 'POST', body, headers: { 'Content-Type': type } });
    let clock;
    return Promise.race([
      new Promise((done) => {
        clock = later(() => {
          abort.abort();
          done(failed(`no answer within ${ms} ms`));
        }, ms);
      }),
      (async () => {
        const url = String(base || '').replace(/\/+$/, '') + path;
        const response = await (config.fetch || fetch).call(globalThis, url, init);
        const json = await response.json().catch(() => null);
        const header = attempt(() => response.headers.get('Retry-After'));
        const wait = header ? (isFinite(header) ? header * 1000 : Date.parse(header) - now()) : 0;
        return classify(response.status, json, Math.max(0, wait) || 0);
      })().catch((err) => failed(`network error: ${errorText(err)}`)),
    ]).finally(() => cancel(clock));
  }

  function readQueue(withBodies = false) {
    const found = new Map();
    const debris = [];
    const bodies = new Set(ids(BODY));
    for (const id of ids(ITEM)) {
      const key = ITEM + id;
      const meta = attempt(() => JSON.parse(get(key)));
      const hasBody = bodies.delete(id);
      if (typeof meta?.uploadId !== 'string') debris.push({ key, reason: 'unreadable queue entry' });
      else if (!hasBody && now() - meta.createdAt > 60000)
        debris.push({ key, reason: 'queue entry without its body' });
      else {
        const item = { ...meta, uploadId: id };
        if (withBodies) item.bodyText = bodyOf(item);
        if (!withBodies || item.bodyText) found.set(id, item);
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
    const stored = new Set(ids(ITEM));
    estimate = stored.size + [...memory.keys()].filter((id) => !stored.has(id)).length;
    return estimate;
  }

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
  }

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
      if (excess > 0) {
        if (isStatus) return 'full';
        memory.set(item.uploadId, item);
        return emit('not-persisted', { ...describe(item), reason: 'queue full' });
      }
    }
    if (estimate !== null) estimate += 1;
    save(item);
  }

  function supersede(old, by) {
    drop(old.uploadId);
    emit('superseded', { ...describe(old), by: by.uploadId });
    for (const done of waiters.get(old.uploadId) || []) wait(by.uploadId, done);
    waiters.delete(old.uploadId);
  }

  function cleanQueue() {
    const { debris } = readQueue();
    for (const { key, reason } of debris) {
      if (!key.startsWith(ITEM)) del(key);
      else {
        drop(key.slice(ITEM.length));
        emit('dropped', { key, reason });
      }
    }
    return debris.length;
  }

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

  const resetBackoff = () => backoff().attempt && setBackoff({});

  function fail(retryAfterMs = 0) {
    const tries = backoff().attempt;
    const { retryBaseMs: baseMs, retryMaxMs: maxMs } = config;
    const delay = backoffDelay(tries, { baseMs, maxMs, random, retryAfterMs });
    setBackoff({ attempt: tries + 1, notBefore: now() + delay, serverAsked: retryAfterMs > 0 });
    return delay;
  }

  function bindKey(participantId, key = pendingKey) {
    if (!key) return;
    supplied.set(participantId, key);
    pendingKey = null;
    set(KEY + participantId, key);
  }

  function keyFor(participantId) {
    bindKey(participantId);
    if (supplied.has(participantId)) return supplied.get(participantId);
    const stored = get(KEY + participantId);
    if (KEY_PATTERN.test(stored)) return stored;
    const bytes = stored !== undefined && attempt(() => crypto().getRandomValues(new Uint8Array(32)));
    if (!bytes) return null;
    const fresh = btoa(String.fromCharCode(...bytes)).replace(/[+/=]/g, (c) =>
      c === '+' ? '-' : c > '/' ? '' : '_',
    );
    const kept = set(KEY + participantId, fresh) && get(KEY + participantId);
    return KEY_PATTERN.test(kept) ? kept : null;
  }

  const isErased = (participantId) =>
    erased.has(participantId) || typeof get(ERASED + participantId) === 'string';

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

  function configure(given = {}) {
    attempt(() => {
      const picked = {};
      for (const name of OPTIONS) if (given?.[name] !== undefined) picked[name] = given[name];
      const { studyId } = config;
      const invalid = (option, rule) =>
        emit('invalid-option', { option, error: `${option} must be ${rule}; it was ignored` });
      config = { ...config, ...picked };
      if (picked.studyId && !validId(picked.studyId)) {
        config.studyId = studyId;
        invalid('studyId', ID_RULE);
      }
      config.maxBatchItems = Math.max(1, Math.min(+config.maxBatchItems || 50, MAX_BATCH_ITEMS));
      const participant = config.participantId ? String(config.participantId) : null;
      const key = given?.participantKey;
      if (key !== undefined && !KEY_PATTERN.test(key))
        invalid('participantKey', '16 to 256 letters, digits, _ or -');
      else if (key !== undefined && !participant) pendingKey = key;
      else if (key !== undefined || picked.participantId) bindKey(participant, key);
      if (picked.participantId) remember(participant);
      if (picked.statusIntervalMs !== undefined) restartStatusTimer();
      start();
    });
    return { ...config };
  }

  function collectStudyFields(participantId) {
    const fields = attempt(() => config.collectFields(participantId, store()));
    return isPlainObject(fields) ? fields : {};
  }

  async function upload(participantId, uploadType, build, meta = {}) {
    const refuse = (error) => ({ status: 'error', participantId, error });
    try {
      if (!validId(participantId)) return refuse(mustBe('participantId'));
      const id = String(participantId);
      if (isErased(id)) return erasedAnswer(id);
      start();
      if (uploadType !== 'trial') remember(id);
      return await submit(createItem(id, uploadType, build, meta));
    } catch (err) {
      return refuse(`not uploaded: ${errorText(err)}`);
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
    } else
      nudge(
        item.uploadType !== 'trial' || waiters.size >= config.maxBatchItems ? 0 : +config.batchDelayMs || 0,
      );
    later(
      () =>
        waiters.has(item.uploadId) &&
        !inflight.has(item.uploadId) &&
        inQueue(item.uploadId) &&
        answerFor(item, failed(BUSY)),
      +config.batchDelayMs + config.timeoutMs + 1000,
    );
    return answer;
  }

  const wait = (uploadId, done) => waiters.set(uploadId, [...(waiters.get(uploadId) || []), done]);

  function resolve(uploadId, answer) {
    for (const done of waiters.get(uploadId) || []) ready.push(() => done(answer));
    waiters.delete(uploadId);
    if (!inRound) deliver();
  }

  function deliver() {
    inRound = false;
    for (const answer of ready.splice(0)) answer();
  }

  function answerFor(item, outcome, counts = newCounts()) {
    const id = item.uploadId;
    const about = describe(item);
    const { kind, httpStatus, error, reason, json } = outcome;
    const answer = { ...about, persisted: false, httpStatus, error };
    if (reason) answer.reason = reason;
    for (const done of changeWaiters.splice(0)) done();
    if (kind === 'ok') {
      drop(id);
      counts.stored += 1;
      storedCount += 1;
      const keyVerified = json.keyVerified !== false;
      emit('stored', { ...about, keyVerified });
      if (!keyVerified) emit('key-mismatch', { ...about, httpStatus });
      return resolve(id, json);
    }
    if (keptFor(outcome) || kind === 'too-large') {
      item.tooLarge ||= kind === 'too-large';
      if (error !== WAITING && error !== BUSY) item.tries += 1;
      update(item);
      answer.persisted = !memory.has(id);
      if (item.tooLarge) emit('too-large', (answer.reason = kind) && answer);
      else {
        if (kind === 'hold') emit('study-unavailable', answer);
        emit('queued', answer);
      }
      return resolve(id, { status: item.tooLarge ? 'error' : 'queued', ...answer });
    }
    if (kind === 'reject' || inQueue(id)) {
      drop(id);
      counts.rejected += 1;
      emit('rejected', { ...about, httpStatus, error, reason });
      if (reason === 'participant-key') emit('key-mismatch', { ...about, httpStatus });
      if (kind === 'erased') counts.rejected += forget(item.participantId);
      if (kind === 'archived' && item.studyId) {
        const archived = (other) => ({ status: 'error', reason: 'study-archived', ...describe(other) });
        counts.rejected += dropWhere((i) => i.studyId === item.studyId, 'study archived', archived);
      }
    }
    resolve(id, { status: 'error', ...answer });
  }

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
      pumpRounds(done);
    }
    return pump;
  }

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
      if (announce) cleanQueue();
      let single = false;
      for (;;) {
        const batch = nextBatch(single, counts);
        if (batch?.length === 0) break;
        lease();
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
      if (!text) continue;
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

  async function askLimit() {
    const outcome = await request('/openapi.json');
    if (outcome.json?.info || outcome.httpStatus === 404) {
      limit = +outcome.json?.info?.['x-max-upload-bytes'] || MAX_UPLOAD_BYTES;
      return null;
    }
    return outcome;
  }

  function withKey(item, text) {
    const key = keyFor(item.participantId);
    return key
      ? `{"participantKey":${JSON.stringify(key)}${text.trim() === '{}' ? '}' : ',' + text.slice(1)}`
      : text;
  }

  async function send(batch, counts, keepalive, type) {
    for (const item of batch) inflight.add(item.uploadId);
    const body = `{"uploads":[${batch.map((i) => i.bodyText).join(',')}]}`;
    let outcome = await request('/api/upload-user-data/batch', body, keepalive, type);
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

  const locks = () => attempt(() => (config.locks !== undefined ? config.locks : navigator.locks));
  const useLease = () => config.crossTabLock && typeof locks()?.request !== 'function';

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
      other = held();
    }
    if (!other) return run();
    dueAt = Infinity;
    schedule(other.until - now() + 50);
    settleWaiters(true);
    Object.assign(total, { remaining: count(), skipped: true });
  }

  function lease(from = now()) {
    if (useLease())
      set(LEASE, JSON.stringify({ owner: tab, until: Math.max(from, now()) + config.timeoutMs + 1000 }));
  }

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
    const items = queued().map((item) => {
      const row = { ...describe(item), timestamp: item.timestamp, tries: item.tries };
      row.persisted = !memory.has(item.uploadId);
      if (item.tooLarge) row.tooLarge = true;
      return row;
    });
    const { attempt: tries, notBefore } = backoff();
    return { items, attempt: tries, nextAttemptAt: notBefore, flushing: Boolean(pump) };
  }

  function downloadBackup(participantId) {
    const uploads = attempt(() => readQueue(true).items, [])
      .filter((item) => participantId === undefined || item.participantId === String(participantId))
      .map((item) =>
        attempt(() => JSON.parse(item.bodyText), { ...describe(item), unreadable: item.bodyText }),
      );
    const stamp = new Date(now()).toISOString().replace(/[:.]/g, '-');
    const filename = `backup-${participantId ?? 'all'}-${stamp}.json`;
    const text = JSON.stringify({ uploads }, null, 1);
    attempt(() => {
      const link = document.createElement('a');
      link.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
      link.download = filename;
      link.click();
      later(() => URL.revokeObjectURL(link.href), 60000);
    });
    return { filename, text, count: uploads.length };
  }

  async function restoreUserStatus(participantId) {
    const restored = {};
    const answer = (status, extra) => ({ status, participantId, restored, ...extra });
    try {
      if (!validId(participantId)) return answer('error', { error: mustBe('participantId') });
      const id = (participantId = String(participantId));
      if (isErased(id)) return erasedAnswer(id, { restored });
      start();
      const body = {
        participantId: id,
        participantKey: keyFor(id) || undefined,
        studyId: config.studyId || undefined,
      };
      // text/plain: no CORS preflight, one round trip fewer while the study page loads.
      const outcome = await request('/api/user-status', JSON.stringify(body), false, 'text/plain');
      if (outcome.kind === 'erased') {
        forget(id);
        return erasedAnswer(id, { restored });
      }
      if (outcome.httpStatus === 404 && !outcome.reason) return answer('not-found');
      const status = outcome.kind === 'ok' && outcome.json.userStatus;
      if (!isPlainObject(status)) return answer('error', { error: outcome.error, reason: outcome.reason });
      Object.assign(restored, config.restoreFields(id, status, store()));
      return answer('success');
    } catch (err) {
      return answer('error', { error: errorText(err) });
    }
  }

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

  function onHidden() {
    if (!hidden && pid && !isErased(pid)) attempt(() => enqueue(createItem(pid, 'status', (body) => body)));
    hidden = true;
    let budget = KEEPALIVE_BYTES - keepaliveBytes;
    const items = readQueue(true).items.filter((i) => !i.tooLarge && !inflight.has(i.uploadId));
    for (const item of items) item.bodyText = withKey(item, item.bodyText);
    for (const batch of splitBatches(items, { maxItems: config.maxBatchItems, maxBytes: budget })) {
      const size = batch.reduce((sum, i) => sum + byteLength(i.bodyText) + 1, 16);
      if (size > budget) continue;
      budget -= size;
      keepaliveBytes += size;
      send(batch, newCounts(), true, 'text/plain')
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
      const w = globalThis.window;
      on(w, 'online', () => {
        if (!backoff().serverAsked) resetBackoff();
        onVisible();
      });
      on(w, 'pagehide', onHidden);
      on(w, 'pageshow', onVisible);
      const d = globalThis.document;
      on(d, 'visibilitychange', () => (d.visibilityState === 'hidden' ? onHidden() : onVisible()));
    });
  }

  const uploadUserStatus = (participantId) => upload(participantId, 'status', (body) => body);

  configure(options);
  return {
    configure,
    start,
    close,
    collectStudyFields,
    uploadUserStatus,
    uploadSubmissionData: (participantId, submissionData) =>
      upload(participantId, 'submission', (body) => {
        body.submissionData = wrap(body, 'submissionData', submissionData);
        return body;
      }),
    uploadTrialData(participantId, sessionId, trialIndex, trialData, extraFields) {
      let error = validId(sessionId) ? null : mustBe('sessionId');
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
}

let defaultInstance = null;
let explicitInstances = 0;

/** The default instance, behind the functions below (each its method of the same name). */
export const getUploader = () => (defaultInstance ||= makeUploader({}));
const onDefault =
  (method) =>
  (...args) =>
    getUploader()[method](...args);
export const configureUploader = onDefault('configure');
export const uploadUserStatus = onDefault('uploadUserStatus');
export const uploadSubmissionData = onDefault('uploadSubmissionData');
export const uploadTrialData = onDefault('uploadTrialData');
export const restoreUserStatus = onDefault('restoreUserStatus');
export const flushQueue = onDefault('flushQueue');
export const flushUntilEmpty = onDefault('flush');
export const getQueueState = onDefault('getQueueState');
export const collectStudyFields = onDefault('collectStudyFields');
export const downloadBackup = onDefault('downloadBackup');

if (globalThis.window) setTimeout(() => (defaultInstance || !explicitInstances) && getUploader().start(), 0);
