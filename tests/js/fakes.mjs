// Small in-repo fakes for the uploader's unit tests: localStorage, a clock, fetch and a collector.
import { createUploader } from '../../js/data-uploader.js';

export const OWN_PREFIX = 'dataUploader.v1.';
export const KEY_PREFIX = 'dataUploader.v1.key.';
export const ERASED_PREFIX = 'dataUploader.v1.erased.';

/** localStorage's interface over a Map. */
export class FakeStorage {
  constructor(entries = {}) {
    this.map = new Map(Object.entries(entries));
  }

  get length() {
    return this.map.size;
  }

  key(i) {
    return [...this.map.keys()][i] ?? null;
  }

  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }

  setItem(key, value) {
    this.map.set(String(key), String(value));
  }

  removeItem(key) {
    this.map.delete(key);
  }

  snapshot() {
    return Object.fromEntries(this.map);
  }

  /** The module's own keys. */
  ownKeys() {
    return [...this.map.keys()].filter((k) => k.startsWith(OWN_PREFIX));
  }

  /** The module's keys about the queue: everything of its own but participant keys, erasure marks
   *  and the cross-tab lease. */
  queueKeys() {
    return this.ownKeys().filter(
      (k) => !k.startsWith(KEY_PREFIX) && !k.startsWith(ERASED_PREFIX) && k !== 'dataUploader.v1.lease',
    );
  }
}

/** Storage that throws on everything, like localStorage with cookies blocked. */
export class ThrowingStorage {
  get length() {
    throw new Error('SecurityError: access denied');
  }

  key() {
    throw new Error('SecurityError');
  }

  getItem() {
    throw new Error('SecurityError');
  }

  setItem() {
    throw new Error('SecurityError');
  }

  removeItem() {
    throw new Error('SecurityError');
  }
}

/** Storage that is full: the study's keys are readable, nothing new fits. */
export class FullStorage extends FakeStorage {
  setItem() {
    throw new Error('QuotaExceededError');
  }
}

/** A manual clock with setTimeout/clearTimeout; `advance` runs what falls due. */
export class FakeClock {
  constructor() {
    this.t = Date.UTC(2026, 10, 25, 10, 0, 0);
    this.timers = new Map();
    this.next = 1;
    this.now = () => this.t;
    this.setTimeout = (fn, ms) => {
      const id = this.next++;
      this.timers.set(id, { at: this.t + (ms || 0), fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  async advance(ms) {
    const until = this.t + ms;
    for (;;) {
      const due = [...this.timers.entries()]
        .filter(([, timer]) => timer.at <= until)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
      await settle();
    }
    this.t = until;
    await settle();
  }
}

/** The uploader's default `batchDelayMs`: how long a trial waits for others to share its request. */
export const BATCH_DELAY_MS = 100;

/** The answer to an upload call made with a fake clock, once the batch timer it may wait for ran. */
export async function answerOf(promise, clock, ms = BATCH_DELAY_MS) {
  await clock.advance(ms);
  return promise;
}

/** Let pending promise callbacks run. */
export async function settle() {
  for (let i = 0; i < 20; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

export function jsonAnswer(status, body, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });
}

/** The batch answer for `uploads`, each item answered by `answer(upload, index)` ({httpStatus, ...}). */
export function batchAnswer(uploads, answer) {
  const results = uploads.map((upload, index) => ({
    index,
    uploadId: upload.uploadId,
    ...answer(upload, index),
  }));
  return jsonAnswer(200, { status: 'success', results });
}

/** A stored answer as the collector gives it. */
export function storedAnswer(upload, extra = {}) {
  return {
    httpStatus: 200,
    status: 'success',
    participantId: upload.participantId,
    timestamp: upload.timestamp,
    filesUploaded: ['k'],
    ...extra,
  };
}

/**
 * A fetch that records every call and answers through `handler(url, init, body, n)`; the default
 * handler behaves like the collector: it stores by uploadId (a retry stores nothing new).
 */
export function fakeCollector(handler) {
  const stored = new Map();
  const calls = [];
  const storeOne = (upload) => {
    if (!stored.has(upload.uploadId)) stored.set(upload.uploadId, upload);
    const { httpStatus: _status, ...answer } = storedAnswer(upload);
    return answer;
  };
  const fetch = async (url, init = {}) => {
    const body = init.body === undefined ? undefined : JSON.parse(init.body);
    calls.push({ url, init, body });
    const custom = handler && (await handler(url, init, body, calls.length));
    if (custom) return custom;
    if (url.endsWith('/batch')) {
      return batchAnswer(body.uploads, (upload) => ({ httpStatus: 200, ...storeOne(upload) }));
    }
    return jsonAnswer(200, storeOne(body));
  };
  return { fetch, stored, calls };
}

/** A collector that cannot be reached. */
export const offline = () =>
  fakeCollector(() => {
    throw new TypeError('Failed to fetch');
  });

/** Every upload the collector was sent (single or batched), in order. */
export function sentUploads(collector) {
  return collector.calls.flatMap((call) => (call.url.endsWith('/batch') ? call.body.uploads : [call.body]));
}

/**
 * A new uploader over fakes (a new page load when given the storage of an earlier one); statusIntervalMs 0
 * unless a test wants the timer.
 */
export function setUp({
  storage = new FakeStorage(),
  clock = new FakeClock(),
  collector = fakeCollector(),
  ...options
} = {}) {
  const events = [];
  const uploader = createUploader({
    collectorUrl: 'http://collector.test',
    storage,
    fetch: collector.fetch,
    locks: null,
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 1,
    statusIntervalMs: 0,
    onEvent: (event) => events.push(event),
    ...options,
  });
  return { uploader, storage, clock, collector, events };
}
