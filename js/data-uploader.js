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
const WAITING = 'waiting before the next try';
const BUSY = 'another tab is sending the queue';
const RESERVED =
  'participantId participantKey timestamp uploadId uploadType sessionId trialIndex trialData studyId';

const moduleOrigin = attempt(() => /^http/.test(import.meta.url) && new URL(import.meta.url).origin);

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
const byteLength = (text) => (/[^ -\x7f]/.test(text) ? new Blob([text]).size : text.length);

/** What events and answers say of an upload: its ids and, for a trial, its session and index. */
const about = ({ bodyText: _b, createdAt: _c, seq: _s, tries: _t, tooLarge: _l, timestamp: _ts, ...ids }) =>
  ids;

/** Items ({bodyText}) in order, in batches of at most `maxItems` (and 50) and about `maxBytes`. */
export function splitBatches(items, { maxItems, maxBytes }) {
  const batches = [];
  const most = Math.min(maxItems, MAX_BATCH_ITEMS);
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
  return Math.max(random() * ceiling, Math.min(retryAfterMs, maxMs));
}

/** An answer's kind: ok, retry, hold (the study does not take uploads now), too-large or a final one. */
function classify(httpStatus, json, retryAfterMs) {
  const reason = typeof json?.reason === 'string' ? json.reason : undefined;
  const error = typeof json?.error === 'string' ? json.error : `HTTP ${httpStatus}`;
  const outcome = { kind: 'retry', httpStatus, json, error, reason, retryAfterMs };
  if (httpStatus >= 200 && httpStatus < 300) {
    // A captive portal's 200 stored nothing.
    if (json?.status === 'success') outcome.kind = 'ok';
    else outcome.error = "the answer was not the collector's";
  } else if (/^(unknown-study|study-closed|study-full)$/.test(reason)) outcome.kind = 'hold';
  else if (httpStatus === 410) outcome.kind = reason === 'study-archived' ? 'archived' : 'erased';
  else if (httpStatus === 413) outcome.kind = 'too-large';
  else if (httpStatus >= 400 && httpStatus < 500 && httpStatus !== 408 && httpStatus !== 429)
    outcome.kind = 'reject';
  return outcome;
}

const failed = (error) => classify(0, { error });
const kept = ({ kind }) => kind === 'retry' || kind === 'hold';
const erasedAnswer = (participantId) => ({
  status: 'error',
  reason: 'erased',
  participantId,
  error: "erased at the research team's request; nothing more is sent",
});

/** `{[field]: value}`, a value that is not an object wrapped as `{value}` and flagged. */
const wrapped = (field, value) =>
  isPlainObject(value)
    ? { [field]: value }
    : { [field]: { value: value ?? null }, [field + 'Wrapped']: true };

const byQueueOrder = (a, b) =>
  a.createdAt - b.createdAt || (a.seq || 0) - (b.seq || 0) || (a.uploadId < b.uploadId ? -1 : 1);

/** An uploader with its own configuration, timers and callers; options: docs/browser-module.md §1. */
export function createUploader(options) {
  explicitInstances += 1;
  return makeUploader(options);
}

function makeUploader(options) {
  let config = { ...DEFAULTS };
  const mem = new Map(); // what localStorage refused, kept for the page's life
  const waiters = new Map();
  const inflight = new Set();
  const supplied = new Map();
  const listeners = [];
  const ready = [];
  let estimate = Infinity; // an upper bound of the queue's length
  let keepaliveBytes = 0;
  let seq = 0;
  let storedCount = 0;
  let pendingKey, inRound, pump, again, force, timer, timerAt, statusTimer;
  let started, closed, hidden, pid, tab, limit, pageStorage;

  const now = () => (config.now || Date.now)();
  const random = () => (config.random || Math.random)();
  const later = (fn, ms) => {
    const id = (config.setTimeout || setTimeout)(() => attempt(fn), Math.max(0, ms));
    id?.unref?.(); // never keeps a Node process alive
    return id;
  };
  const pause = (ms) => new Promise((done) => later(done, ms));
  const cancel = (id) => attempt(() => (config.clearTimeout || clearTimeout)(id));
  const emit = (type, detail) => attempt(() => config.onEvent?.({ type, ...detail }));
  const tell = (type, item, extra) => emit(type, { ...about(item), ...extra });
  const crypto = () => config.crypto || globalThis.crypto;

  const store = () =>
    config.storage !== undefined ? config.storage : (pageStorage ??= globalStorage('localStorage'));
  const get = (key) => mem.get(key) ?? readRaw(store(), key);
  const json = (key) => attempt(() => JSON.parse(get(key)));
  function put(key, text) {
    if (!mem.has(key) && writeRaw(store(), key, text)) return true;
    mem.set(key, text);
  }
  function del(key) {
    mem.delete(key);
    removeRaw(store(), key);
  }
  const ids = (prefix) => {
    const keys = attempt(() => Array.from({ length: store().length }, (_, i) => store().key(i)), []);
    return [...new Set([...keys, ...mem.keys()])]
      .filter((key) => String(key).startsWith(prefix))
      .map((key) => key.slice(prefix.length));
  };

  async function request(path, body, keepalive = false, type = 'application/json') {
    const abort = new AbortController();
    const ms = config.timeoutMs;
    let clock;
    try {
      return await Promise.race([
        new Promise((_, fail) => {
          clock = later(() => fail(Error(`no answer within ${ms} ms`), abort.abort()), ms);
        }),
        (async () => {
          const base = config.collectorUrl || moduleOrigin || location.origin;
          const init = { credentials: 'omit', keepalive, signal: abort.signal };
          if (body) Object.assign(init, { method: 'POST', body, headers: { 'Content-Type': type } });
          const response = await (config.fetch || fetch)(base.replace(/\/+$/, '') + path, init);
          const json = await response.json().catch(() => null);
          const wait = attempt(() => response.headers.get('Retry-After'));
          const waitMs = Math.max(0, isFinite(wait) ? wait * 1000 : Date.parse(wait) - now()) || 0;
          return classify(response.status, json, waitMs);
        })(),
      ]);
    } catch (err) {
      return failed(`network error: ${errorText(err)}`);
    } finally {
      cancel(clock);
    }
  }

  // The queue is a meta key and a body key per upload (docs §3). Cleaning drops the debris.
  function readQueue(withBodies, clean) {
    const items = [];
    const bodies = new Set(ids(BODY));
    let debris = 0;
    const junk = (id, reason) => {
      debris += 1;
      if (!clean) return;
      drop(id);
      if (reason) emit('dropped', { key: ITEM + id, reason });
    };
    for (const id of ids(ITEM)) {
      const meta = json(ITEM + id);
      const hasBody = bodies.delete(id);
      if (typeof meta?.uploadId !== 'string') junk(id, 'unreadable queue entry');
      else if (!hasBody && now() - meta.createdAt > 60000) junk(id, 'queue entry without its body');
      else if (!withBodies || (meta.bodyText = get(BODY + id))) items.push({ ...meta, uploadId: id });
    }
    for (const id of bodies) junk(id);
    return clean ? debris : items.sort(byQueueOrder);
  }

  const queued = () => readQueue();
  const cleanQueue = () => readQueue(false, true);
  const inQueue = (id) => typeof get(ITEM + id) === 'string';
  const count = () => (estimate = ids(ITEM).length);
  const metaText = (item) => JSON.stringify({ ...item, bodyText: undefined });

  function drop(id) {
    del(ITEM + id);
    del(BODY + id);
  }

  function enqueue(item) {
    const max = config.maxQueueItems;
    const isStatus = item.uploadType === 'status';
    let full;
    if (isStatus || (estimate >= max && count() >= max)) {
      // The participant's older statuses give way, then the oldest others while over the bound.
      const mine = (old) => isStatus && old.participantId === item.participantId;
      let excess = count() + 1 - max;
      for (const old of queued().sort((a, b) => mine(b) - mine(a))) {
        if (old.uploadType === 'status' && (mine(old) || excess > 0)) {
          excess -= 1;
          supersede(old, item);
        }
      }
      if (excess > 0 && isStatus) return 'full';
      if (excess > 0) full = 'queue full';
    }
    const id = item.uploadId;
    const meta = metaText(item);
    estimate += 1;
    if (!full && put(ITEM + id, meta) && put(BODY + id, item.bodyText)) return;
    drop(id);
    mem.set(ITEM + id, meta).set(BODY + id, item.bodyText);
    tell('not-persisted', item, { reason: full || 'localStorage refused the write' });
  }

  function supersede(old, by) {
    drop(old.uploadId);
    tell('superseded', old, { by: by.uploadId });
    for (const done of waiters.get(old.uploadId) || []) wait(by.uploadId, done);
    waiters.delete(old.uploadId);
  }

  const backoffWait = () => Math.max(0, json(RETRY)?.notBefore - now()) || 0;
  const resetBackoff = () => json(RETRY) && del(RETRY);

  function fail(retryAfterMs = 0) {
    const tries = +json(RETRY)?.attempt || 0;
    const { retryBaseMs: baseMs, retryMaxMs: maxMs } = config;
    const delay = backoffDelay(tries, { baseMs, maxMs, random, retryAfterMs });
    put(
      RETRY,
      JSON.stringify({ attempt: tries + 1, notBefore: now() + delay, serverAsked: retryAfterMs > 0 }),
    );
    return delay;
  }

  function bindKey(participantId) {
    if (!pendingKey) return;
    supplied.set(participantId, pendingKey);
    writeRaw(store(), KEY + participantId, pendingKey);
    pendingKey = null;
  }

  // A key only once localStorage holds it: one lost at the next page load must not claim the participant.
  function keyFor(participantId) {
    bindKey(participantId);
    const read = () => supplied.get(participantId) || readRaw(store(), KEY + participantId);
    const key = read();
    if (KEY_PATTERN.test(key)) return key;
    const bytes = key !== undefined && attempt(() => crypto().getRandomValues(new Uint8Array(32)));
    const fresh = bytes && btoa(String.fromCharCode(...bytes)).slice(0, 43);
    if (fresh && writeRaw(store(), KEY + participantId, fresh.replace(/\+/g, '-').replace(/\//g, '_')))
      return KEY_PATTERN.test(read()) ? read() : null;
    return null;
  }

  const isErased = (participantId) => typeof get(ERASED + participantId) === 'string';

  /** An answer refusing `participantId` (not an ID, or erased), else nothing. */
  const refusal = (participantId) =>
    validId(participantId)
      ? isErased(participantId) && erasedAnswer(String(participantId))
      : { status: 'error', participantId, error: mustBe('participantId') };

  function forget(participantId) {
    put(ERASED + participantId, JSON.stringify({ erasedAt: new Date(now()) }));
    const mine = (i) => i.participantId === participantId;
    const dropped = dropWhere(mine, 'participant erased', erasedAnswer(participantId));
    emit('erased', { participantId });
    if (pid === participantId) restartStatusTimer();
    return dropped;
  }

  const dropWhere = (matches, reason, answer) =>
    queued()
      .filter(matches)
      .map((item) => dropOne(item, reason, answer)).length;

  function dropOne(item, reason, answer) {
    drop(item.uploadId);
    tell('dropped', item, { reason });
    resolve(item.uploadId, { ...answer, ...about(item) });
  }

  function configure(given) {
    attempt(() => {
      const invalid = (option, rule) =>
        emit('invalid-option', { option, error: `${option} must be ${rule}; it was ignored` });
      const picked = {};
      for (const name of OPTIONS) if (given?.[name] !== undefined) picked[name] = given[name];
      const { studyId } = config;
      config = { ...config, ...picked };
      if (picked.studyId && !validId(picked.studyId)) {
        config.studyId = studyId;
        invalid('studyId', ID_RULE);
      }
      config.maxBatchItems = Math.max(1, Math.min(+config.maxBatchItems || 50, MAX_BATCH_ITEMS));
      const key = given?.participantKey;
      if (key === undefined || KEY_PATTERN.test(key)) pendingKey = key ?? pendingKey;
      else invalid('participantKey', '16 to 256 letters, digits, _ or -');
      // A key given without a participant is for the first participant used.
      if (config.participantId) bindKey(String(config.participantId));
      if (picked.participantId) remember(String(picked.participantId));
      if (picked.statusIntervalMs !== undefined) restartStatusTimer();
      start();
    });
    return { ...config };
  }

  function collectStudyFields(participantId) {
    const fields = attempt(() => config.collectFields(participantId, store()));
    return isPlainObject(fields) ? fields : {};
  }

  async function upload(participantId, uploadType, build, trial) {
    try {
      const refused = refusal(participantId);
      if (refused) return refused;
      const id = String(participantId);
      start();
      if (!trial) remember(id);
      return await submit(newItem(id, uploadType, build, trial));
    } catch (err) {
      return { status: 'error', participantId, error: `not uploaded: ${errorText(err)}` };
    }
  }

  function newItem(participantId, uploadType, build, trial) {
    const createdAt = now();
    const ids = {
      participantId,
      timestamp: new Date(createdAt).toISOString(),
      uploadId: makeId(),
      uploadType,
    };
    if (config.studyId) ids.studyId = String(config.studyId);
    const fields = trial ? ids : { ...ids, ...collectStudyFields(participantId), ...ids };
    // A circular jsonDump throws here, into the call's answer.
    return {
      ...ids,
      createdAt,
      seq: (seq += 1),
      tries: 0,
      ...trial,
      bodyText: JSON.stringify(build(fields)),
    };
  }

  const makeId = () => newId(crypto(), random);

  function submit(item) {
    const id = item.uploadId;
    if (enqueue(item) === 'full') {
      const error = 'the queue is full; this status upload was not kept';
      return { status: 'error', reason: 'queue-full', ...about(item), persisted: false, error };
    }
    const answer = new Promise((done) => wait(id, done));
    const waitMs = backoffWait();
    if (waitMs > 0) {
      schedule(waitMs);
      answerFor(item, failed(WAITING));
    } else if (
      item.uploadType !== 'trial' ||
      closed ||
      !(config.batchDelayMs > 0) ||
      waiters.size >= config.maxBatchItems
    )
      run();
    else {
      // This trial waits batchDelayMs for the next ones; the lease keeps other tabs from them.
      if (useLease() && !othersLease()) lease(now() + config.batchDelayMs);
      schedule(+config.batchDelayMs);
    }
    const busy = () => waiters.has(id) && !inflight.has(id) && inQueue(id) && answerFor(item, failed(BUSY));
    later(busy, +config.batchDelayMs + config.timeoutMs + 1000);
    return answer;
  }

  const wait = (id, done) => waiters.set(id, [...(waiters.get(id) || []), done]);

  // Answers a round gives are delivered when it is over: the queue and backoff then say the same.
  function resolve(id, answer) {
    for (const done of waiters.get(id) || []) ready.push(() => done(answer));
    waiters.delete(id);
    if (!inRound) deliver();
  }

  function deliver() {
    inRound = false;
    for (const answer of ready.splice(0)) answer();
  }

  /** The one answer handler: drops, keeps or retries `item`, tells, counts and answers its callers. */
  function answerFor(item, outcome, counts = newCounts()) {
    const id = item.uploadId;
    const { kind, httpStatus, error, reason, json } = outcome;
    const answer = { ...about(item), persisted: false, httpStatus, error };
    if (reason) answer.reason = reason;
    if (kind === 'ok') {
      drop(id);
      counts.stored += 1;
      storedCount += 1;
      tell('stored', item, { keyVerified: json.keyVerified !== false });
      if (json.keyVerified === false) tell('key-mismatch', item, { httpStatus });
      return resolve(id, json);
    }
    if (kept(outcome) || kind === 'too-large') {
      if (error !== WAITING && error !== BUSY) {
        item.tries += 1;
        if (kind === 'too-large') item.tooLarge = true;
        if (inQueue(id)) put(ITEM + id, metaText(item));
      }
      answer.persisted = !mem.has(ITEM + id);
      if (item.tooLarge) answer.reason = kind;
      if (kind === 'hold') emit('study-unavailable', answer);
      emit(item.tooLarge ? kind : 'queued', answer);
      return resolve(id, { status: item.tooLarge ? 'error' : 'queued', ...answer });
    }
    if (inQueue(id)) {
      drop(id);
      counts.rejected += 1;
      tell('rejected', item, { httpStatus, error, reason });
      if (reason === 'participant-key') tell('key-mismatch', item, { httpStatus });
      if (kind === 'erased') counts.rejected += forget(item.participantId);
      if (kind === 'archived' && item.studyId) {
        const archived = { status: 'error', reason: 'study-archived' };
        counts.rejected += dropWhere((i) => i.studyId === item.studyId, 'study archived', archived);
      }
    }
    resolve(id, { status: 'error', ...answer });
  }

  // The pump: one loop, a round each time one is asked for, under one cross-tab mechanism.
  function run() {
    again = true;
    if (!pump) {
      pump = Promise.resolve(); // a call made while it starts joins it
      pump = pumpRounds();
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
      run();
    }, ms);
  }

  async function pumpRounds() {
    const total = newCounts();
    try {
      while (again) await crossTab(total);
    } catch (err) {
      total.error = errorText(err);
      again = false;
      attempt(() => settleWaiters(true));
    }
    pump = null; // in the same step as the loop's last look at `again`: no call is missed
    return total;
  }

  async function drain() {
    const forced = force;
    again = force = false;
    const counts = newCounts();
    if (!forced && backoffWait() > 0) {
      schedule(backoffWait());
      counts.error = WAITING;
    } else {
      cleanQueue();
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
    if (forced) emit('flushed', counts);
    return counts;
  }

  function settleWaiters(failure) {
    const items = queued();
    for (const id of waiters.keys()) {
      const item = items.find((i) => i.uploadId === id);
      if (inflight.has(id)) continue;
      if (failure && item) answerFor(item, failed(WAITING));
      else if (!failure && !item) resolve(id, { status: 'success', uploadId: id, sentBy: 'another tab' });
    }
  }

  function nextBatch(single, counts) {
    const maxItems = single ? 1 : config.maxBatchItems;
    const max = +config.maxUploadBytes || limit;
    const batch = [];
    for (const item of queued()) {
      const text = get(BODY + item.uploadId);
      if (batch.length >= maxItems) break;
      if (item.tooLarge || inflight.has(item.uploadId) || !text) continue;
      if (isErased(item.participantId)) {
        dropOne(item, 'participant erased', erasedAnswer(item.participantId));
        continue;
      }
      item.bodyText = withKey(item, text);
      // Uploads up to 64 KiB fit any collector configured as documented; a larger one needs the limit.
      const size = byteLength(item.bodyText) + WRAPPER_BYTES;
      if (size <= 65536 || size <= max) batch.push(item);
      else if (!max) return null;
      else answerFor(item, { kind: 'too-large', error: 'larger than the collector accepts' }, counts);
    }
    const maxBytes = Math.min(config.maxBatchBytes, (max || MAX_UPLOAD_BYTES) - WRAPPER_BYTES);
    return splitBatches(batch, { maxItems, maxBytes })[0] || [];
  }

  async function askLimit() {
    const outcome = await request('/openapi.json');
    if (!outcome.json?.info && outcome.httpStatus !== 404) return outcome;
    limit = +outcome.json?.info?.['x-max-upload-bytes'] || MAX_UPLOAD_BYTES;
  }

  function withKey(item, text) {
    const key = keyFor(item.participantId);
    return key
      ? `{"participantKey":${JSON.stringify(key)}${text === '{}' ? '}' : ',' + text.slice(1)}`
      : text;
  }

  async function send(batch, counts, keepalive, type) {
    for (const item of batch) inflight.add(item.uploadId);
    const body = `{"uploads":[${batch.map((i) => i.bodyText)}]}`;
    let outcome = await request('/api/upload-user-data/batch', body, keepalive, type);
    for (const item of batch) inflight.delete(item.uploadId);
    const results = outcome.kind === 'ok' && outcome.json.results;
    if (outcome.kind === 'ok' && !Array.isArray(results)) outcome = failed('bad batch answer');
    // A batch refused as a whole is sent again one upload per batch, so each gets its own answer.
    if (!results && !kept(outcome) && batch.length > 1) return 'split';
    const byId = new Map(results ? results.map((r) => [r?.uploadId, r]) : []);
    let failure = null;
    for (const item of batch) {
      const r = byId.get(item.uploadId);
      const own = !results
        ? outcome
        : r
          ? classify(+r.httpStatus, r, (+r.retryAfter || 0) * 1000)
          : failed('no answer');
      answerFor(item, own, counts);
      if (kept(own)) failure ||= own;
    }
    return failure;
  }

  const locks = () => attempt(() => (config.locks !== undefined ? config.locks : navigator.locks));
  const useLease = () => config.crossTabLock && typeof locks()?.request !== 'function';
  const othersLease = (other = json(LEASE)) => other?.owner !== tab && +other?.until > now() && other;

  function lease(from = now()) {
    if (useLease()) put(LEASE, JSON.stringify({ owner: tab, until: from + config.timeoutMs + 1000 }));
  }

  async function crossTab(total) {
    const round = async () => {
      inRound = true;
      try {
        const counts = await drain();
        total.stored += counts.stored;
        total.rejected += counts.rejected;
        total.remaining = counts.remaining;
        if (counts.error) total.error = counts.error;
        return counts;
      } finally {
        if (json(LEASE)?.owner === tab) del(LEASE);
        deliver();
      }
    };
    if (!config.crossTabLock) return round();
    if (!useLease()) {
      return locks().request(NS + 'flush', async () => {
        for (let rounds = 0; again && rounds < 10; rounds += 1) {
          const counts = await round();
          if (counts.error) break;
          // Kept a moment after a change: other tabs see localStorage changes a little later.
          if (counts.stored + counts.rejected && config.lockGraceMs > 0) await pause(config.lockGraceMs);
        }
      });
    }
    const other = othersLease();
    if (!other) return round(lease());
    again = false;
    schedule(other.until - now() + 50);
    settleWaiters(true);
    Object.assign(total, { remaining: count(), skipped: true });
  }

  function flushQueue() {
    return attempt(
      () => {
        start();
        force = true;
        return run();
      },
      Promise.resolve({ ...newCounts(), error: 'not started' }),
    );
  }

  async function flush(timeoutMs = 10000) {
    const before = storedCount;
    const deadline = now() + Math.max(0, +timeoutMs || 0);
    const drained = (async () => {
      while ((await flushQueue()).remaining && now() < deadline)
        await pause(Math.min(deadline - now(), Math.max(100, timer ? timerAt - now() : 0)));
    })();
    await Promise.race([drained, pause(deadline - now())]);
    return { stored: storedCount - before, remaining: queued().length };
  }

  function getQueueState() {
    const items = queued().map(({ bodyText: _b, createdAt: _c, seq: _s, ...item }) => ({
      ...item,
      persisted: !mem.has(ITEM + item.uploadId),
    }));
    const { attempt: tries, notBefore } = json(RETRY) || {};
    return { items, attempt: +tries || 0, nextAttemptAt: +notBefore || 0, flushing: Boolean(pump) };
  }

  function downloadBackup(participantId) {
    const uploads = readQueue(true)
      .filter((item) => participantId === undefined || item.participantId === String(participantId))
      .map((item) => attempt(() => JSON.parse(item.bodyText), item.bodyText));
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
      const refused = refusal(participantId);
      if (refused) return { ...refused, restored };
      const id = (participantId = String(participantId));
      start();
      const studyId = config.studyId || undefined;
      const body = JSON.stringify({ participantId: id, participantKey: keyFor(id) || undefined, studyId });
      // text/plain: no CORS preflight, one round trip fewer while the study page loads.
      const outcome = await request('/api/user-status', body, false, 'text/plain');
      if (outcome.kind === 'erased') forget(id);
      if (outcome.kind === 'erased') return { ...erasedAnswer(id), restored };
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
    const every = +config.statusIntervalMs;
    if (!(every > 0 && pid && started && !closed && !isErased(pid))) return;
    statusTimer = later(() => {
      if (!hidden) uploadUserStatus(pid);
      restartStatusTimer();
    }, every);
  }

  // Page hide: a last status, and the queue at once in keepalive requests within the browsers' budget.
  function onHidden() {
    attempt(() => !hidden && !refusal(pid) && enqueue(newItem(pid, 'status', same)));
    hidden = true;
    let budget = KEEPALIVE_BYTES - keepaliveBytes;
    const items = readQueue(true).filter((i) => !i.tooLarge && !inflight.has(i.uploadId));
    for (const item of items) item.bodyText = withKey(item, item.bodyText);
    for (const batch of splitBatches(items, { maxItems: config.maxBatchItems, maxBytes: budget })) {
      const size = batch.reduce((sum, i) => sum + byteLength(i.bodyText) + 1, 16);
      if (size > budget) continue;
      budget -= size;
      keepaliveBytes += size;
      send(batch, newCounts(), true, 'text/plain').then((failure) => {
        keepaliveBytes -= size;
        if (failure?.error) schedule(fail(failure.retryAfterMs));
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
      target.addEventListener(type, handler);
      listeners.push([target, type, handler]);
    };
    const w = globalThis.window;
    const d = globalThis.document;
    attempt(() => {
      on(w, 'online', () => {
        if (!json(RETRY)?.serverAsked) resetBackoff();
        onVisible();
      });
      on(w, 'pagehide', onHidden);
      on(w, 'pageshow', onVisible);
      on(d, 'visibilitychange', () => (d.visibilityState === 'hidden' ? onHidden() : onVisible()));
    });
  }

  const same = (body) => body;
  const uploadUserStatus = (participantId) => upload(participantId, 'status', same);

  configure(options);
  return {
    configure,
    start,
    close,
    collectStudyFields,
    uploadUserStatus,
    uploadSubmissionData: (participantId, submissionData) =>
      upload(participantId, 'submission', (body) => ({
        ...body,
        ...wrapped('submissionData', submissionData),
      })),
    uploadTrialData(participantId, sessionId, trialIndex, trialData, extraFields) {
      let error = validId(sessionId) ? null : mustBe('sessionId');
      if (!Number.isInteger(trialIndex) || trialIndex < 0 || trialIndex > MAX_TRIAL_INDEX)
        error = `trialIndex must be an integer from 0 to ${MAX_TRIAL_INDEX}`;
      if (error) return Promise.resolve({ status: 'error', participantId, error });
      const trial = { sessionId: String(sessionId), trialIndex };
      const extras = Object.entries(isPlainObject(extraFields) ? extraFields : {}).filter(
        ([name]) => !RESERVED.split(' ').includes(name),
      );
      const build = (ids) => ({
        ...Object.fromEntries(extras),
        ...ids,
        ...trial,
        ...wrapped('trialData', trialData),
      });
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
export const getUploader = () => (defaultInstance ||= makeUploader());
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
