// Whatever localStorage, the network or the server does, no export throws or rejects.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { FakeStorage, FullStorage, ThrowingStorage, fakeCollector, freshUploader, jsonAnswer, setUp } from './fakes.mjs';

const PID = 'P001ABC';

/** Every export called with `args`; each must resolve (or return) a plain object. */
async function callEverything(uploader) {
  const results = [];
  results.push(await uploader.uploadUserStatus(PID));
  results.push(await uploader.uploadSubmissionData(PID, { answers: [1] }));
  results.push(await uploader.flushQueue());
  results.push(await uploader.restoreUserStatus(PID));
  results.push(uploader.getQueueState());
  results.push(uploader.collectStudyFields(PID));
  for (const result of results) assert.equal(typeof result, 'object');
  return results;
}

// [make the storage, whether a queued upload can be persisted in it]
const STORAGES = {
  'storage that throws on every call': [() => new ThrowingStorage(), false],
  'storage that is full': [() => new FullStorage({ study_weekly_session_count: '2' }), false],
  'storage returning garbage for the study keys': [() => {
    const storage = new FakeStorage({ study_weekly_session_count: '1' });
    const getItem = storage.getItem.bind(storage);
    storage.getItem = (key) => (key.startsWith('dataUploader') ? getItem(key) : { weird: true });
    return storage;
  }, true],
  'no storage at all': [() => null, false],
};

for (const [label, [makeStorage, persists]] of Object.entries(STORAGES)) {
  test(`${label}: uploads still go out, and a failed one is kept for this page`, async () => {
    const uploader = await freshUploader();
    let online = true;
    const collector = fakeCollector(() => { if (!online) throw new TypeError('Failed to fetch'); return null; });
    const { clock } = setUp(uploader, { storage: makeStorage(), collector });
    const [status, submission] = await callEverything(uploader);
    assert.equal(status.status, 'success');
    assert.equal(submission.status, 'success');
    online = false;
    const queued = await uploader.uploadSubmissionData(PID, { late: true });
    assert.equal(queued.status, 'queued');
    assert.equal(queued.persisted, persists);
    online = true;
    await clock.advance(10 * 60000);
    assert.ok([...collector.stored.values()].some((u) => u.submissionData?.late === true));
  });
}

test('a localStorage getter that throws (sandboxed iframe) and no fetch at all', async () => {
  const uploader = await freshUploader();
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'localStorage');
  Object.defineProperty(globalThis, 'localStorage', { configurable: true, get() { throw new Error('SecurityError'); } });
  const savedFetch = globalThis.fetch;
  globalThis.fetch = undefined;
  try {
    setUp(uploader, { storage: undefined, collector: { fetch: undefined } });
    const [status, submission, flush, restore] = await callEverything(uploader);
    assert.equal(status.status, 'queued');
    assert.equal(submission.status, 'queued');
    assert.equal(typeof flush.remaining, 'number');
    assert.equal(restore.status, 'error');
  } finally {
    globalThis.fetch = savedFetch;
    if (saved) Object.defineProperty(globalThis, 'localStorage', saved);
    else delete globalThis.localStorage;
  }
});

const NETWORKS = {
  'fetch rejecting': () => Promise.reject(new TypeError('Failed to fetch')),
  'fetch throwing synchronously': () => { throw new Error('boom'); },
  'fetch resolving to garbage': () => Promise.resolve({ status: 'nope' }),
  'fetch resolving to null': () => Promise.resolve(null),
  'a 200 with no body': () => Promise.resolve(new Response(null, { status: 200 })),
  'a batch answer without results': (url) => (url.endsWith('/batch')
    ? Promise.resolve(jsonAnswer(200, { status: 'success' })) : Promise.reject(new TypeError('Failed to fetch'))),
  'a 503 with a broken Retry-After': () => Promise.resolve(jsonAnswer(503, {}, { 'Retry-After': 'soon-ish' })),
};

for (const [label, fetch] of Object.entries(NETWORKS)) {
  test(`${label}: every call resolves, and the uploads stay queued`, async () => {
    const uploader = await freshUploader();
    setUp(uploader, { collector: { fetch } });
    const [status, submission] = await callEverything(uploader);
    assert.notEqual(status.status, 'success');
    assert.notEqual(submission.status, 'success');
    assert.ok(uploader.getQueueState().items.some((i) => i.uploadType === 'submission'));
  });
}

test('bad arguments and bad options resolve to errors, never throw', async () => {
  const uploader = await freshUploader();
  const { collector } = setUp(uploader);
  const circular = {};
  circular.self = circular;
  assert.equal((await uploader.uploadSubmissionData(PID, circular)).status, 'error');
  assert.equal((await uploader.uploadSubmissionData('../etc', {})).status, 'error');
  assert.equal((await uploader.uploadUserStatus(undefined)).status, 'error');
  assert.equal((await uploader.uploadSubmissionData(PID, { big: 10n })).status, 'error');
  assert.equal((await uploader.restoreUserStatus('a b')).status, 'error');
  assert.equal(collector.calls.length, 0);
  assert.equal(typeof uploader.configureUploader(null), 'object');
  assert.equal(typeof uploader.configureUploader({ onEvent: () => { throw new Error('study bug'); } }), 'object');
  // A submission that is not an object is kept, wrapped, rather than refused.
  assert.equal((await uploader.uploadSubmissionData(PID, 'just text')).status, 'success');
  assert.deepEqual(collector.calls.at(-1).body.submissionData, { value: 'just text' });
});

test('an unreadable queue entry of its own is dropped with an event, not silently', async () => {
  const uploader = await freshUploader();
  const storage = new FakeStorage({ 'dataUploader.v1.item.broken': '{"meta":', study_tutorial_completed: 'true' });
  const { events } = setUp(uploader, { storage });
  assert.deepEqual(uploader.getQueueState().items, []);
  assert.ok(events.some((e) => e.type === 'dropped' && e.key === 'dataUploader.v1.item.broken'));
  assert.equal(storage.getItem('study_tutorial_completed'), 'true');
});

test('debris of an interrupted write or removal is cleaned up; a write in progress is left alone', async () => {
  const uploader = await freshUploader();
  const storage = new FakeStorage();
  const { clock, events } = setUp(uploader, { storage });
  const meta = (id, createdAt) => JSON.stringify({ uploadId: id, uploadType: 'submission', participantId: PID, createdAt });
  storage.setItem('dataUploader.v1.item.old', meta('old', clock.t - 3600000)); // its body never came
  storage.setItem('dataUploader.v1.item.young', meta('young', clock.t)); // another tab is writing it
  storage.setItem('dataUploader.v1.body.gone', '{"participantId":"P001ABC"}'); // its meta was removed
  assert.deepEqual(uploader.getQueueState().items.map((i) => i.uploadId), ['young']);
  assert.deepEqual(storage.ownKeys(), ['dataUploader.v1.item.young']);
  assert.ok(events.some((e) => e.type === 'dropped' && e.key === 'dataUploader.v1.item.old'));
  assert.deepEqual(await uploader.flushQueue(), { stored: 0, rejected: 0, remaining: 1 }); // not sent without its body
});
