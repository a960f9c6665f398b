// Whatever localStorage, the network or the server does, no export throws or rejects.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  FakeStorage,
  FullStorage,
  ThrowingStorage,
  answerOf,
  fakeCollector,
  jsonAnswer,
  sentUploads,
  setUp,
} from './fakes.mjs';

const PID = 'P001ABC';

/** Every method called; each must resolve (or return) a plain object. */
async function callEverything(uploader, clock) {
  const results = [];
  results.push(await uploader.uploadUserStatus(PID));
  results.push(await uploader.uploadSubmissionData(PID, { answers: [1] }));
  results.push(await uploader.flushQueue());
  results.push(await answerOf(uploader.uploadTrialData(PID, 'S1', 0, { rt: 5 }), clock));
  const flushing = uploader.flush(1000);
  await clock.advance(1000);
  results.push(await flushing);
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
  'storage returning garbage for the study keys': [
    () => {
      const storage = new FakeStorage({ study_weekly_session_count: '1' });
      const getItem = storage.getItem.bind(storage);
      storage.getItem = (key) => (key.startsWith('dataUploader') ? getItem(key) : { weird: true });
      return storage;
    },
    true,
  ],
  'no storage at all': [() => null, false],
};

for (const [label, [makeStorage, persists]] of Object.entries(STORAGES)) {
  test(`${label}: uploads still go out, and a failed one is kept for this page`, async () => {
    let online = true;
    const collector = fakeCollector(() => {
      if (!online) throw new TypeError('Failed to fetch');
      return null;
    });
    const { uploader, clock } = setUp({ storage: makeStorage(), collector });
    const [status, submission] = await callEverything(uploader, clock);
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
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'localStorage');
  Object.defineProperty(globalThis, 'localStorage', {
    configurable: true,
    get() {
      throw new Error('SecurityError');
    },
  });
  const savedFetch = globalThis.fetch;
  globalThis.fetch = undefined;
  try {
    const { uploader, clock } = setUp({ storage: undefined, collector: { fetch: undefined } });
    const [status, submission, flushed, trial, drained, restore] = await callEverything(uploader, clock);
    assert.equal(status.status, 'queued');
    assert.equal(submission.status, 'queued');
    assert.equal(typeof flushed.remaining, 'number');
    assert.equal(trial.status, 'queued');
    assert.deepEqual(drained, { stored: 0, remaining: 3 });
    assert.equal(restore.status, 'error');
  } finally {
    globalThis.fetch = savedFetch;
    if (saved) Object.defineProperty(globalThis, 'localStorage', saved);
    else delete globalThis.localStorage;
  }
});

const NETWORKS = {
  'fetch rejecting': () => Promise.reject(new TypeError('Failed to fetch')),
  'fetch throwing synchronously': () => {
    throw new Error('boom');
  },
  'fetch resolving to garbage': () => Promise.resolve({ status: 'nope' }),
  'fetch resolving to null': () => Promise.resolve(null),
  'a 200 with no body': () => Promise.resolve(new Response(null, { status: 200 })),
  'a batch answer without results': (url) =>
    url.endsWith('/batch')
      ? Promise.resolve(jsonAnswer(200, { status: 'success' }))
      : Promise.reject(new TypeError('Failed to fetch')),
  'a 503 with a broken Retry-After': () =>
    Promise.resolve(jsonAnswer(503, {}, { 'Retry-After': 'soon-ish' })),
};

for (const [label, fetch] of Object.entries(NETWORKS)) {
  test(`${label}: every call resolves, and the uploads stay queued`, async () => {
    const { uploader, clock } = setUp({ collector: { fetch } });
    const [status, submission] = await callEverything(uploader, clock);
    assert.notEqual(status.status, 'success');
    assert.notEqual(submission.status, 'success');
    const types = new Set(uploader.getQueueState().items.map((i) => i.uploadType));
    assert.deepEqual([...types].sort(), ['status', 'submission', 'trial']);
  });
}

test('bad arguments and bad options resolve to errors, never throw', async () => {
  const { uploader, collector, events } = setUp();
  const circular = {};
  circular.self = circular;
  assert.equal((await uploader.uploadSubmissionData(PID, circular)).status, 'error');
  assert.equal((await uploader.uploadSubmissionData('../etc', {})).status, 'error');
  assert.equal((await uploader.uploadUserStatus(undefined)).status, 'error');
  assert.equal((await uploader.uploadSubmissionData(PID, { big: 10n })).status, 'error');
  assert.equal((await uploader.restoreUserStatus('a b')).status, 'error');
  assert.equal((await uploader.uploadTrialData(PID, 'S1', 0, circular)).status, 'error');
  assert.equal(collector.calls.length, 0);
  assert.equal(typeof uploader.configure(null), 'object');
  assert.equal(typeof uploader.configure({ participantKey: 'short' }), 'object');
  assert.ok(events.some((e) => e.type === 'invalid-option' && e.option === 'participantKey'));
  const studyBug = () => {
    throw new Error('study bug');
  };
  assert.equal(typeof uploader.configure({ onEvent: studyBug }), 'object');
  // A submission that is not an object is kept, wrapped, rather than refused.
  assert.equal((await uploader.uploadSubmissionData(PID, 'just text')).status, 'success');
  assert.deepEqual(sentUploads(collector).at(-1).submissionData, { value: 'just text' });
});

test('an unreadable queue entry of its own is dropped by cleaning, with an event, not silently', () => {
  const storage = new FakeStorage({
    'dataUploader.v1.item.broken': '{"meta":',
    study_tutorial_completed: 'true',
  });
  const { uploader, events } = setUp({ storage }); // a new instance cleans the queue when it starts
  assert.deepEqual(uploader.getQueueState().items, []);
  assert.ok(events.some((e) => e.type === 'dropped' && e.key === 'dataUploader.v1.item.broken'));
  assert.deepEqual(storage.ownKeys(), []);
  assert.equal(storage.getItem('study_tutorial_completed'), 'true');
});

test('reading the queue is pure; cleanQueue removes what interrupted writes and removals left', async () => {
  const { uploader, storage, clock, events } = setUp();
  const meta = (id, createdAt) =>
    JSON.stringify({ uploadId: id, uploadType: 'submission', participantId: PID, createdAt });
  storage.setItem('dataUploader.v1.item.old', meta('old', clock.t - 3600000)); // its body never came
  storage.setItem('dataUploader.v1.item.young', meta('young', clock.t)); // another tab is writing it
  storage.setItem('dataUploader.v1.body.gone', '{"participantId":"P001ABC"}'); // its meta was removed
  const before = storage.snapshot();
  assert.deepEqual(
    uploader.getQueueState().items.map((i) => i.uploadId),
    ['young'],
  );
  assert.deepEqual(storage.snapshot(), before); // looking changed nothing
  assert.deepEqual(events, []);
  assert.equal(uploader.cleanQueue(), 2);
  assert.deepEqual(storage.ownKeys(), ['dataUploader.v1.item.young']);
  assert.deepEqual(
    events.map((e) => [e.type, e.key]),
    [['dropped', 'dataUploader.v1.item.old']],
  );
  // Not sent without its body.
  assert.deepEqual(await uploader.flushQueue(), { stored: 0, rejected: 0, remaining: 1 });
});
