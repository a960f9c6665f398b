// Small in-repo fakes for the uploader's unit tests: localStorage, a clock, fetch and a collector.

let instances = 0;

/** A fresh copy of the module (its state is per instance), like a new page load. */
export async function freshUploader() {
  instances += 1;
  return import(new URL(`../../js/data-uploader.js?instance=${instances}`, import.meta.url));
}

/** localStorage's interface over a Map. */
export class FakeStorage {
  constructor(entries = {}) {
    this.map = new Map(Object.entries(entries));
  }

  get length() { return this.map.size; }
  key(i) { return [...this.map.keys()][i] ?? null; }
  getItem(key) { return this.map.has(key) ? this.map.get(key) : null; }
  setItem(key, value) { this.map.set(String(key), String(value)); }
  removeItem(key) { this.map.delete(key); }
  snapshot() { return Object.fromEntries(this.map); }
  ownKeys() { return [...this.map.keys()].filter((k) => k.startsWith('dataUploader.v1.')); }
}

/** Storage that throws on everything, like localStorage with cookies blocked. */
export class ThrowingStorage {
  get length() { throw new Error('SecurityError: access denied'); }
  key() { throw new Error('SecurityError'); }
  getItem() { throw new Error('SecurityError'); }
  setItem() { throw new Error('SecurityError'); }
  removeItem() { throw new Error('SecurityError'); }
}

/** Storage that is full: the study's keys are readable, nothing new fits. */
export class FullStorage extends FakeStorage {
  setItem() { throw new Error('QuotaExceededError'); }
}

/** A manual clock with setTimeout/clearTimeout; `advance` runs what falls due. */
export class FakeClock {
  constructor() {
    this.t = Date.UTC(2026, 10, 25, 10, 0, 0);
    this.timers = new Map();
    this.next = 1;
    this.now = () => this.t;
    this.setTimeout = (fn, ms) => { const id = this.next++; this.timers.set(id, { at: this.t + (ms || 0), fn }); return id; };
    this.clearTimeout = (id) => { this.timers.delete(id); };
  }

  async advance(ms) {
    const until = this.t + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, timer]) => timer.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
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

/** Let pending promise callbacks run. */
export async function settle() {
  for (let i = 0; i < 20; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

export function jsonAnswer(status, body, headers = {}) {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });
}

/**
 * A fetch that records every call and answers through `handler(url, init, body)`; the default
 * handler behaves like the collector: it stores by uploadId (a retry stores nothing new).
 */
export function fakeCollector(handler) {
  const stored = new Map();
  const calls = [];
  const storeOne = (upload) => {
    if (!stored.has(upload.uploadId)) stored.set(upload.uploadId, upload);
    return { status: 'success', participantId: upload.participantId, timestamp: upload.timestamp, filesUploaded: ['k'] };
  };
  const fetch = async (url, init = {}) => {
    const body = init.body === undefined ? undefined : JSON.parse(init.body);
    calls.push({ url, init, body });
    const custom = handler && (await handler(url, init, body, calls.length));
    if (custom) return custom;
    if (url.endsWith('/batch')) {
      const results = body.uploads.map((upload, index) => ({ index, uploadId: upload.uploadId, httpStatus: 200, ...storeOne(upload) }));
      return jsonAnswer(200, { status: 'success', results });
    }
    return jsonAnswer(200, storeOne(body));
  };
  return { fetch, stored, calls };
}

/** Configure a fresh uploader over fakes; statusIntervalMs 0 unless a test wants the timer. */
export function setUp(uploader, { storage = new FakeStorage(), clock = new FakeClock(), collector = fakeCollector(), ...options } = {}) {
  const events = [];
  uploader.configureUploader({
    collectorUrl: 'http://collector.test', storage, fetch: collector.fetch, locks: null,
    now: clock.now, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, random: () => 1,
    statusIntervalMs: 0, onEvent: (event) => events.push(event), ...options,
  });
  return { storage, clock, collector, events };
}
