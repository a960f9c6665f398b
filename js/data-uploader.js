// Options, events, guarantees and design: docs/browser-module.md.

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
const WRAPPER_BYTES = 300;
const WAITING = 'waiting before the next try';
const BUSY = 'another tab is sending the queue';

const moduleOrigin = attempt(() => /^http/.test(import.meta.url) && new URL(import.meta.url).origin);

const DEFAULTS = {
  timeoutMs: 15000,
  statusIntervalMs: 300000,
  retryBaseMs: 2000,
  retryMaxMs: 300000,
  maxBatchItems: MAX_BATCH_ITEMS,
  maxBatchBytes: 1048576,
  batchDelayMs: 100,
  maxQueueItems: 1000,
  crossTabLock: true,
  lockGraceMs: 50,
  collectFields: seedFields,
  restoreFields: restoreStudyFields,
};

const validId = (id) => (typeof id === 'string' || Number.isInteger(id)) && ID_PATTERN.test(id);
const mustBe = (name) => `${name} must be ${ID_RULE}`;
const byteLength = (text) => (/[^ -\x7f]/.test(text) ? new Blob([text]).size : text.length);
const about = ({ bodyText: _b, createdAt: _c, seq: _s, tries: _t, tooLarge: _l, timestamp: _ts, ...ids }) =>
  ids;

export function backoffDelay(attempt, { baseMs, maxMs, random = Math.random, retryAfterMs = 0 }) {
  return Math.max(
    random() * Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 40)),
    Math.min(retryAfterMs, maxMs),
  );
}

function classify(httpStatus, json, retryAfterMs) {
  const text = (value) => (typeof value === 'string' ? value : undefined);
  const reason = text(json?.reason);
  let error = text(json?.error) || `HTTP ${httpStatus}`;
  let kind = 'retry';
  if (/^2\d\d$/.test(httpStatus)) {
    if (json?.status === 'success') kind = 'ok';
    else error = "the answer was not the collector's";
  } else if (/^(unknown-study|study-closed|study-full)$/.test(reason)) kind = 'hold';
  else if (httpStatus === 410) kind = reason === 'study-archived' ? 'archived' : 'erased';
  else if (httpStatus === 413) kind = 'too-large';
  else if (/^4(?!08|29)\d\d$/.test(httpStatus)) kind = 'reject';
  return { kind, httpStatus, json, error, reason, retryAfterMs };
}

const failed = (error) => classify(0, { error });
const kept = (kind) => kind === 'retry' || kind === 'hold';
const problem = (participantId, error, extra) => ({ status: 'error', participantId, error, ...extra });
const erasedAnswer = (participantId) =>
  problem(participantId, "erased at the research team's request; nothing more is sent", { reason: 'erased' });
const byQueueOrder = (a, b) => a.createdAt - b.createdAt || a.seq - b.seq;
const wrapped = (field, value) =>
  isPlainObject(value)
    ? { [field]: value }
    : { [field]: { value: value ?? null }, [field + 'Wrapped']: true };

export function createUploader(options) {
  explicit = true;
  return makeUploader(options);
}

function makeUploader(options) {
  const config = { ...DEFAULTS };
  const mem = new Map();
  const waiters = new Map();
  const inflight = new Set();
  const ready = [];
  const tally = { stored: 0, rejected: 0 };
  const listening = new AbortController();
  let estimate = Infinity;
  let keepaliveBytes = 0;
  let seq = 0;
  let pendingKey, inRound, pump, wake, again, force, timer, timerAt, statusTimer;
  let started, closed, hidden, pid, tab, limit;

  const now = () => (config.now || Date.now)();
  const random = () => (config.random || Math.random)();
  const later = (fn, ms) => {
    const id = (config.setTimeout || setTimeout)(() => attempt(fn), ms);
    id?.unref?.();
    return id;
  };
  const pause = (ms) => new Promise((done) => later(done, ms));
  const cancel = (id) => attempt(() => (config.clearTimeout || clearTimeout)(id));
  const emit = (type, detail) => attempt(() => config.onEvent?.({ type, ...detail }));
  const tell = (type, item, extra) => emit(type, { ...about(item), ...extra });
  const crypto = () => config.crypto || globalThis.crypto;

  const store = () => (config.storage !== undefined ? config.storage : globalStorage('localStorage'));
  const get = (key) => mem.get(key) ?? readRaw(store(), key);
  const json = (key) => attempt(() => JSON.parse(get(key)));
  const put = (key, text) => (!mem.has(key) && writeRaw(store(), key, text)) || !mem.set(key, text);
  function del(key) {
    mem.delete(key);
    removeRaw(store(), key);
  }
  const ids = (prefix) =>
    [
      ...new Set([
        ...attempt(() => Array.from({ length: store().length }, (_, i) => store().key(i)), []),
        ...mem.keys(),
      ]),
    ]
      .filter((key) => String(key).startsWith(prefix))
      .map((key) => key.slice(prefix.length));

  async function request(path, body, keepalive = false, type = 'application/json') {
    const abort = new AbortController();
    const ms = config.timeoutMs;
    const post = body && { method: 'POST', body, headers: { 'Content-Type': type } };
    const init = { credentials: 'omit', keepalive, signal: abort.signal, ...post };
    let clock;
    try {
      const base = config.collectorUrl || moduleOrigin || location.origin;
      const response = await Promise.race([
        new Promise((_, fail) => {
          clock = later(() => fail(Error(`no answer within ${ms} ms`), abort.abort()), ms);
        }),
        (config.fetch || fetch)(base.replace(/\/+$/, '') + path, init),
      ]);
      const wait = attempt(() => response.headers.get('Retry-After'));
      const waitMs = Math.max(0, isFinite(wait) ? wait * 1000 : Date.parse(wait) - now()) || 0;
      return classify(response.status, await response.json().catch(() => null), waitMs);
    } catch (err) {
      return failed(`network error: ${errorText(err)}`);
    } finally {
      cancel(clock);
    }
  }

  function readQueue(clean) {
    const items = [];
    const bodies = new Set(ids(BODY));
    let debris = 0;
    const junk = (id, reason) => {
      debris += 1;
      if (clean) drop(id);
      if (clean && reason) emit('dropped', { key: ITEM + id, reason });
    };
    for (const id of ids(ITEM)) {
      const meta = json(ITEM + id);
      const hasBody = bodies.delete(id);
      if (typeof meta?.uploadId !== 'string') junk(id, 'unreadable queue entry');
      else if (!hasBody && now() - meta.createdAt > 60000) junk(id, 'queue entry without its body');
      else items.push({ ...meta, uploadId: id });
    }
    for (const id of bodies) junk(id);
    return clean ? debris : items.sort(byQueueOrder);
  }

  const queued = () => readQueue();
  const cleanQueue = () => readQueue(true);
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
    const id = item.uploadId;
    let full;
    if (isStatus || (estimate >= max && count() >= max)) {
      const mine = (old) => isStatus && old.participantId === item.participantId;
      let excess = count() + 1 - max;
      for (const old of queued().sort((a, b) => mine(b) - mine(a))) {
        if (old.uploadType === 'status' && (mine(old) || excess > 0)) {
          excess -= 1;
          drop(old.uploadId);
          tell('superseded', old, { by: id });
          wait(id, ...(waiters.get(old.uploadId) || []));
          waiters.delete(old.uploadId);
        }
      }
      if (excess > 0 && isStatus) return 1;
      if (excess > 0) full = 'queue full';
    }
    const meta = metaText(item);
    estimate += 1;
    if (!full && put(ITEM + id, meta) && put(BODY + id, item.bodyText)) return;
    drop(id);
    mem.set(ITEM + id, meta).set(BODY + id, item.bodyText);
    tell('not-persisted', item, { reason: full || 'localStorage refused the write' });
  }

  const backoffWait = () => Math.max(0, json(RETRY)?.notBefore - now()) || 0;
  const resetBackoff = () => json(RETRY) && del(RETRY);

  function fail({ error, retryAfterMs = 0 }) {
    const tries = +json(RETRY)?.attempt || 0;
    const { retryBaseMs: baseMs, retryMaxMs: maxMs } = config;
    const notBefore = now() + backoffDelay(tries, { baseMs, maxMs, random, retryAfterMs });
    put(RETRY, JSON.stringify({ attempt: tries + 1, notBefore, serverAsked: retryAfterMs > 0 }));
    schedule(backoffWait());
    return error;
  }

  function bindKey(participantId) {
    if (pendingKey) put(KEY + participantId, pendingKey);
    pendingKey = null;
  }

  // Only a key localStorage holds (docs §8).
  function keyFor(participantId) {
    bindKey(participantId);
    const read = () => get(KEY + participantId);
    if (read() !== undefined && !KEY_PATTERN.test(read()))
      attempt(() => {
        const bytes = crypto().getRandomValues(new Uint8Array(32));
        const fresh = btoa(String.fromCharCode(...bytes)).slice(0, 43);
        writeRaw(store(), KEY + participantId, fresh.replace(/\+/g, '-').replace(/\//g, '_'));
      });
    return KEY_PATTERN.test(read()) ? read() : null;
  }

  const refusal = (participantId) =>
    validId(participantId)
      ? typeof get(ERASED + participantId) === 'string' && erasedAnswer(String(participantId))
      : problem(participantId, mustBe('participantId'));

  function forget(participantId) {
    put(ERASED + participantId, JSON.stringify({ erasedAt: new Date(now()) }));
    dropWhere('participantId', participantId, 'participant erased', erasedAnswer(participantId));
    emit('erased', { participantId });
  }

  function dropWhere(field, value, reason, answer) {
    for (const item of queued().filter((i) => i[field] === value)) {
      drop(item.uploadId);
      tally.rejected += 1;
      tell('dropped', item, { reason });
      resolve(item.uploadId, { ...answer, ...about(item) });
    }
  }

  function configure(given) {
    attempt(() => {
      const invalid = (option, rule) =>
        emit('invalid-option', { option, error: `${option} must be ${rule}; it was ignored` });
      const { participantKey: key, ...picked } = given;
      const { studyId } = config;
      for (const [name, value] of Object.entries(picked)) if (value !== undefined) config[name] = value;
      if (config.studyId && !validId(config.studyId)) {
        config.studyId = studyId;
        invalid('studyId', ID_RULE);
      }
      config.maxBatchItems = Math.max(1, Math.min(+config.maxBatchItems || 50, MAX_BATCH_ITEMS));
      if (key !== undefined && !KEY_PATTERN.test(key))
        invalid('participantKey', '16 to 256 letters, digits, _ or -');
      else if (key !== undefined) pendingKey = key;
      if (config.participantId) bindKey(String(config.participantId));
      if (given.participantId) pid = String(given.participantId);
      if (given.statusIntervalMs !== undefined) restartStatusTimer();
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
      start();
      const item = newItem(String(participantId), uploadType, build, trial);
      const id = item.uploadId;
      if (!trial) pid = item.participantId;
      const answer = new Promise((done) => wait(id, done));
      const delay = trial && !closed && waiters.size < config.maxBatchItems && +config.batchDelayMs;
      if (enqueue(item)) answerFor(item, { error: 'queue full', reason: 'queue-full' });
      else if (backoffWait() > 0) {
        schedule(backoffWait());
        answerFor(item, failed(WAITING));
      } else if (delay > 0) {
        if (!othersLease()) lease(now() + delay);
        schedule(delay);
      } else run();
      later(() => waiters.has(id) && settle(id, BUSY), +config.batchDelayMs + config.timeoutMs + 1000);
      return await answer;
    } catch (err) {
      return problem(participantId, `not uploaded: ${errorText(err)}`);
    }
  }

  function newItem(participantId, uploadType, build, trial) {
    const createdAt = now();
    const uploadId = newId(crypto(), random);
    const ids = { participantId, timestamp: new Date(createdAt).toISOString(), uploadId, uploadType };
    if (config.studyId) ids.studyId = String(config.studyId);
    const fields = trial ? ids : { ...ids, ...collectStudyFields(participantId), ...ids };
    const item = { ...ids, createdAt, seq: (seq += 1), tries: 0, ...trial };
    item.bodyText = JSON.stringify(build(fields));
    return item;
  }

  const wait = (id, ...done) => waiters.set(id, [...(waiters.get(id) || []), ...done]);

  function resolve(id, answer) {
    for (const done of waiters.get(id) || []) ready.push(() => done(answer));
    waiters.delete(id);
    if (!inRound) deliver();
  }

  function deliver() {
    inRound = false;
    for (const answer of ready.splice(0)) answer();
  }

  function answerFor(item, { kind, httpStatus, error, reason, json }) {
    const id = item.uploadId;
    const answer = { status: 'error', ...about(item), persisted: false, httpStatus, error, reason };
    if (kind === 'ok') {
      drop(id);
      tally.stored += 1;
      tell('stored', item, { keyVerified: json.keyVerified !== false });
      if (json.keyVerified === false) tell('key-mismatch', item, { httpStatus });
      return resolve(id, json);
    }
    if (kept(kind) || kind === 'too-large') {
      if (error !== WAITING && error !== BUSY) {
        item.tries += 1;
        if (kind === 'too-large') item.tooLarge = true;
        if (inQueue(id)) put(ITEM + id, metaText(item));
      }
      answer.persisted = !mem.has(ITEM + id);
      if (item.tooLarge) answer.reason = 'too-large';
      else answer.status = 'queued';
      if (kind === 'hold') emit('study-unavailable', answer);
      emit(item.tooLarge ? 'too-large' : 'queued', answer);
      return resolve(id, answer);
    }
    if (inQueue(id)) {
      drop(id);
      tally.rejected += 1;
      tell('rejected', item, { httpStatus, error, reason });
      if (reason === 'participant-key') tell('key-mismatch', item, { httpStatus });
      if (kind === 'erased') forget(item.participantId);
      if (kind === 'archived' && item.studyId) {
        dropWhere('studyId', item.studyId, 'study archived', { status: 'error', reason: 'study-archived' });
      }
    }
    resolve(id, answer);
  }

  function run() {
    again = true;
    wake?.();
    if (pump) return pump;
    let done;
    const running = (pump = new Promise((resolve) => (done = resolve)));
    pumpRounds().then(done);
    return running;
  }

  function schedule(ms) {
    const at = now() + ms;
    if (closed || (timer && timerAt <= at)) return;
    cancel(timer);
    timerAt = at;
    timer = later(() => {
      timer = null;
      run();
    }, ms);
  }

  async function pumpRounds() {
    const note = {};
    const round = async () => {
      inRound = true;
      try {
        return (note.error = await drain());
      } finally {
        if (json(LEASE)?.owner === tab) del(LEASE);
        deliver();
      }
    };
    try {
      while (again) {
        const other = othersLease();
        if (other) {
          again = false;
          note.skipped = true;
          schedule(other.until - now() + 50);
          settleWaiters(BUSY);
        } else if (useLease() || !config.crossTabLock) {
          lease();
          await round();
        } else {
          await locks().request(NS + 'flush', async () => {
            while (again && !(await round()) && config.lockGraceMs > 0) {
              await new Promise((done) => {
                const id = later(done, config.lockGraceMs);
                wake = () => done(cancel(id));
              });
            }
          });
        }
      }
    } catch (err) {
      note.error = errorText(err);
      again = false;
      attempt(() => settleWaiters(WAITING));
    }
    pump = null; // in the step of the last look at `again`
    return note;
  }

  async function drain() {
    let error = !force && backoffWait() > 0 && WAITING;
    let most = config.maxBatchItems;
    again = force = false;
    if (!error) cleanQueue();
    for (let batch; !error && (batch = nextBatch(most))?.length !== 0;) {
      lease();
      const result = batch ? await send(batch) : await askLimit();
      if (result === 'split') most = 1;
      else if (result) error = fail(result);
    }
    if (error) schedule(backoffWait());
    else resetBackoff();
    settleWaiters(error && WAITING);
    return error;
  }

  function settle(id, error) {
    const item = json(ITEM + id);
    if (inflight.has(id)) return;
    if (!item) resolve(id, { status: 'success', uploadId: id, sentBy: 'another tab' });
    else if (error) answerFor(item, failed(error));
  }

  const settleWaiters = (error) => [...waiters.keys()].forEach((id) => settle(id, error));

  function nextBatch(maxItems, budget = config.maxBatchBytes) {
    const max = +config.maxUploadBytes || limit;
    const maxBytes = Math.min(budget, (max || MAX_UPLOAD_BYTES) - WRAPPER_BYTES);
    const batch = [];
    let bytes = 0;
    for (const item of queued()) {
      const eligible = batch.length < maxItems && !item.tooLarge && !inflight.has(item.uploadId);
      if (!eligible || !(item.bodyText = get(BODY + item.uploadId))) continue;
      item.bodyText = withKey(item, item.bodyText);
      const size = byteLength(item.bodyText) + 1;
      if (size + WRAPPER_BYTES > Math.max(65536, max || 0)) {
        if (!max) return null;
        answerFor(item, { kind: 'too-large', error: 'larger than the collector accepts' });
      } else if (batch.length && bytes + size > maxBytes) maxItems = 0;
      else {
        batch.push(item);
        batch.bytes = bytes += size;
      }
    }
    return batch;
  }

  async function askLimit() {
    const outcome = await request('/openapi.json');
    if (!outcome.json?.info && outcome.httpStatus !== 404) return outcome;
    limit = +outcome.json?.info?.['x-max-upload-bytes'] || MAX_UPLOAD_BYTES;
  }

  function withKey(item, text) {
    const key = keyFor(item.participantId);
    return key ? `{"participantKey":"${key}",${text.slice(1)}` : text;
  }

  async function send(batch, keepalive, type) {
    for (const item of batch) inflight.add(item.uploadId);
    const body = `{"uploads":[${batch.map((i) => i.bodyText)}]}`;
    let outcome = await request('/api/upload-user-data/batch', body, keepalive, type);
    for (const item of batch) inflight.delete(item.uploadId);
    const results = outcome.kind === 'ok' && outcome.json.results;
    const listed = Array.isArray(results);
    if (!listed && outcome.kind === 'ok') outcome = failed('bad batch answer');
    if (!listed && !kept(outcome.kind) && batch[1]) return 'split';
    let failure;
    for (const item of batch) {
      const r = listed && results.find((r) => r?.uploadId === item.uploadId);
      const own = !listed
        ? outcome
        : r
          ? classify(+r.httpStatus, r, r.retryAfter * 1000 || 0)
          : failed('no answer');
      answerFor(item, own);
      if (kept(own.kind)) failure ||= own;
    }
    return failure;
  }

  const locks = () => attempt(() => (config.locks !== undefined ? config.locks : navigator.locks));
  const useLease = () => config.crossTabLock && typeof locks()?.request !== 'function';
  const othersLease = (other = useLease() && json(LEASE)) =>
    other?.owner !== tab && +other?.until > now() && other;

  function lease(from = now()) {
    if (useLease()) put(LEASE, JSON.stringify({ owner: tab, until: from + config.timeoutMs + 1000 }));
  }

  async function flushQueue() {
    const { stored, rejected } = tally;
    force = true;
    const { error, skipped } = await attempt(() => {
      start();
      return run();
    }, {});
    const counts = { stored: tally.stored - stored, rejected: tally.rejected - rejected, remaining: count() };
    Object.assign(counts, error && { error }, skipped && { skipped });
    emit('flushed', counts);
    return counts;
  }

  async function flush(timeoutMs = 10000) {
    const { stored } = tally;
    const deadline = now() + Math.max(0, +timeoutMs || 0);
    const drained = (async () => {
      while ((await flushQueue()).remaining && now() < deadline)
        await pause(Math.min(deadline - now(), Math.max(100, timer ? timerAt - now() : 0)));
    })();
    await Promise.race([drained, pause(deadline - now())]);
    return { stored: tally.stored - stored, remaining: count() };
  }

  const getQueueState = () => ({
    items: queued().map(({ bodyText: _b, createdAt: _c, seq: _s, ...item }) => ({
      ...item,
      persisted: !mem.has(ITEM + item.uploadId),
    })),
    attempt: +json(RETRY)?.attempt || 0,
    nextAttemptAt: +json(RETRY)?.notBefore || 0,
    flushing: Boolean(pump),
  });

  function start() {
    if (started || closed) return;
    started = true;
    tab = newId(crypto(), random);
    const d = globalThis.document;
    const on = (target, type, handler) => target.addEventListener(type, handler, listening);
    attempt(() => {
      on(window, 'online', () => {
        if (!json(RETRY)?.serverAsked) resetBackoff();
        onVisible();
      });
      on(window, 'pagehide', onHidden);
      on(window, 'pageshow', onVisible);
      on(d, 'visibilitychange', () => (d.visibilityState === 'hidden' ? onHidden() : onVisible()));
    });
    restartStatusTimer();
    cleanQueue();
    if (count()) schedule(backoffWait());
  }

  function close() {
    closed = true;
    listening.abort();
    cancel(timer);
    cancel(statusTimer);
  }

  function restartStatusTimer() {
    cancel(statusTimer);
    if (!(config.statusIntervalMs > 0) || closed) return;
    statusTimer = later(() => {
      if (!hidden && !refusal(pid)) uploadUserStatus(pid);
      restartStatusTimer();
    }, config.statusIntervalMs);
  }

  function onHidden() {
    attempt(() => !hidden && !refusal(pid) && enqueue(newItem(pid, 'status', same)));
    hidden = true;
    for (let batch; (batch = nextBatch(config.maxBatchItems, 60000 - keepaliveBytes))?.length;) {
      const size = batch.bytes + 16;
      if (size > 60000 - keepaliveBytes) break;
      keepaliveBytes += size;
      send(batch, true, 'text/plain').then((failure) => {
        keepaliveBytes -= size;
        if (failure) fail(failure);
      });
    }
  }

  function onVisible() {
    hidden = false;
    run();
  }

  const same = (body) => body;
  const uploadUserStatus = (participantId) => upload(participantId, 'status', same);

  const lazy = (name, extra) => async (participantId) => {
    try {
      const extras = await import('./uploader-extras.js');
      const own = { config, store, get, now, queued, refusal, keyFor, start, request, forget, BODY };
      return await extras[name](own, participantId);
    } catch (err) {
      return problem(participantId, errorText(err), extra);
    }
  };

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
      let error = validId(sessionId) ? '' : mustBe('sessionId');
      if (!Number.isInteger(trialIndex) || trialIndex < 0 || trialIndex > MAX_TRIAL_INDEX)
        error = `trialIndex must be an integer from 0 to ${MAX_TRIAL_INDEX}`;
      if (error) return Promise.resolve(problem(participantId, error));
      const trial = { sessionId: String(sessionId), trialIndex };
      const build = (ids) => {
        const { participantKey: _k, studyId: _s, ...own } = isPlainObject(extraFields) ? extraFields : {};
        return { ...own, ...ids, ...trial, ...wrapped('trialData', trialData) };
      };
      return upload(participantId, 'trial', build, trial);
    },
    flushQueue,
    flush,
    getQueueState,
    cleanQueue,
    restoreUserStatus: lazy('restoreUserStatus', { restored: {} }),
    downloadBackup: lazy('downloadBackup', { count: 0 }),
  };
}

let defaultInstance, explicit;

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

if (globalThis.window) setTimeout(() => (defaultInstance || !explicit) && getUploader().start(), 0);
