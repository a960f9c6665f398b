// Per-trial uploads and flush(timeoutMs): the queue's guarantees for trials, and the count a page
// needs before it navigates away.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { FakeStorage, KEY_PREFIX, answerOf, fakeCollector, offline, sentUploads, setUp } from './fakes.mjs';

const PID = 'P001ABC';

test('a trial body: uploadType trial, session, index, data, key and extras; no study fields', async () => {
  const storage = new FakeStorage({ study_weekly_session_count: '3', selectedMode: 'study' });
  const { uploader, collector, clock } = setUp({ storage });
  const extras = { studyVersion: 'v2', uploadType: 'status', trialIndex: 99 }; // reserved names are ignored
  const sending = uploader.uploadTrialData(PID, 'sess_01', 7, { rt: 512, response: 'f' }, extras);
  const answer = await answerOf(sending, clock);
  assert.equal(answer.status, 'success');
  const [call] = collector.calls;
  assert.ok(call.url.endsWith('/api/upload-user-data/batch'));
  const [body] = call.body.uploads;
  assert.deepEqual(Object.keys(body).sort(), [
    'participantId',
    'participantKey',
    'sessionId',
    'studyVersion',
    'timestamp',
    'trialData',
    'trialIndex',
    'uploadId',
    'uploadType',
  ]);
  assert.equal(body.uploadType, 'trial');
  assert.equal(body.sessionId, 'sess_01');
  assert.equal(body.trialIndex, 7);
  assert.deepEqual(body.trialData, { rt: 512, response: 'f' });
  assert.equal(body.participantKey, storage.getItem(KEY_PREFIX + PID));
  assert.equal(body.studyVersion, 'v2');
});

test('bad trial arguments resolve to errors and queue nothing', async () => {
  const { uploader, collector, storage, clock } = setUp();
  const bad = [
    [PID, 'has space', 0, {}],
    [PID, '', 0, {}],
    [PID, 'x'.repeat(65), 0, {}],
    [PID, 'S1', -1, {}],
    [PID, 'S1', 1.5, {}],
    [PID, 'S1', 100001, {}],
    [PID, 'S1', '3', {}],
    ['../x', 'S1', 0, {}],
  ];
  for (const args of bad) assert.equal((await uploader.uploadTrialData(...args)).status, 'error', args);
  assert.equal(collector.calls.length, 0);
  assert.deepEqual(storage.ownKeys(), []);
  // Trial data that is not an object is kept, wrapped; index 100000 is the last one allowed.
  assert.equal(
    (await answerOf(uploader.uploadTrialData(PID, 'S1', 100000, [1, 2]), clock)).status,
    'success',
  );
  const [sent] = sentUploads(collector);
  assert.deepEqual(sent.trialData, { value: [1, 2] });
  assert.equal(sent.trialDataWrapped, true);
});

test('trials made offline survive a reload and go out batched, each once', async () => {
  const storage = new FakeStorage();
  const first = setUp({ storage, collector: offline() });
  for (let i = 0; i < 12; i += 1) {
    const answer = await answerOf(first.uploader.uploadTrialData(PID, 'S1', i, { i }), first.clock);
    assert.equal(answer.status, 'queued');
    assert.equal(answer.persisted, true);
    assert.equal(answer.trialIndex, i);
  }
  first.uploader.close();
  const second = setUp({ storage, clock: first.clock, maxBatchItems: 5 });
  const queued = second.uploader.getQueueState().items;
  assert.deepEqual(
    queued.map((i) => [i.uploadType, i.sessionId, i.trialIndex]),
    Array.from({ length: 12 }, (_, i) => ['trial', 'S1', i]),
  );
  const summary = await second.uploader.flushQueue();
  assert.deepEqual(summary, { stored: 12, rejected: 0, remaining: 0 });
  assert.deepEqual(
    second.collector.calls.map((c) => c.body.uploads.length),
    [5, 5, 2],
  );
  const sent = sentUploads(second.collector).map((u) => u.trialIndex);
  assert.deepEqual(
    sent,
    Array.from({ length: 12 }, (_, i) => i),
  );
});

test('trials are never evicted by the bound; status uploads give way to them', async () => {
  const { uploader } = setUp({ collector: offline(), maxQueueItems: 3 });
  await uploader.uploadUserStatus(PID); // fails: the trials after it wait out the backoff, queued
  for (let i = 0; i < 4; i += 1) await uploader.uploadTrialData(PID, 'S1', i, { i });
  const items = uploader.getQueueState().items;
  assert.deepEqual(
    items.map((i) => [i.uploadType, i.persisted]),
    [
      ['trial', true],
      ['trial', true],
      ['trial', true],
      ['trial', false],
    ],
  );
});

test('flush(timeoutMs) resolves {stored, remaining} once the queue is empty', async () => {
  const { uploader, events, clock } = setUp({
    collector: offline(),
    retryBaseMs: 60000,
    retryMaxMs: 60000,
  });
  for (let i = 0; i < 30; i += 1) await answerOf(uploader.uploadTrialData(PID, 'S1', i, { i }), clock);
  await uploader.uploadSubmissionData(PID, { all: 30 });
  const collector = fakeCollector();
  uploader.configure({ fetch: collector.fetch });
  // The backoff would wait a minute; flush sends now.
  const result = await uploader.flush(3000);
  assert.deepEqual(result, { stored: 31, remaining: 0 });
  assert.equal(collector.stored.size, 31);
  const stored = events.filter((e) => e.type === 'stored');
  assert.equal(stored.filter((e) => e.uploadType === 'trial').length, 30);
  assert.deepEqual(new Set(stored.map((e) => e.sessionId)), new Set(['S1', undefined]));
});

test('flush(timeoutMs) with the collector down gives up at the deadline, keeping everything', async () => {
  const { uploader, clock, collector } = setUp({ collector: offline(), retryBaseMs: 200, retryMaxMs: 400 });
  for (let i = 0; i < 3; i += 1) await answerOf(uploader.uploadTrialData(PID, 'S1', i, { i }), clock);
  const before = collector.calls.length;
  let result = null;
  uploader.flush(2000).then((r) => {
    result = r;
  });
  await clock.advance(1999);
  assert.equal(result, null);
  const tries = collector.calls.length - before;
  assert.ok(tries >= 2 && tries <= 20, `tries: ${tries}`); // retried, but not in a tight loop
  await clock.advance(1);
  assert.deepEqual(result, { stored: 0, remaining: 3 });
});

test('flush waits for an upload already in flight and counts it', async () => {
  let release;
  const gate = new Promise((resolve) => {
    release = resolve;
  });
  const collector = fakeCollector(async () => {
    await gate;
    return null;
  });
  const { uploader, clock } = setUp({ collector });
  const pending = uploader.uploadTrialData(PID, 'S1', 0, { i: 0 });
  let result = null;
  uploader.flush(5000).then((r) => {
    result = r;
  });
  await clock.advance(100);
  assert.equal(result, null); // the trial is in flight: not done yet, and not sent twice
  assert.equal(collector.calls.length, 1);
  release();
  await pending;
  await clock.advance(0);
  assert.deepEqual(result, { stored: 1, remaining: 0 });
  assert.equal(collector.calls.length, 1);
});

test('the module-level flushUntilEmpty and uploadTrialData wrap the default instance', async () => {
  const uploader = await import('../../js/data-uploader.js');
  const collector = fakeCollector();
  const { FakeClock } = await import('./fakes.mjs');
  const clock = new FakeClock();
  uploader.configureUploader({
    collectorUrl: 'http://collector.test',
    storage: new FakeStorage(),
    fetch: collector.fetch,
    locks: null,
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    statusIntervalMs: 0,
  });
  assert.equal((await answerOf(uploader.uploadTrialData(PID, 'S2', 0, { a: 1 }), clock)).status, 'success');
  assert.deepEqual(await uploader.flushUntilEmpty(1000), { stored: 0, remaining: 0 });
  assert.equal(uploader.getUploader().getQueueState().items.length, 0);
  assert.equal(sentUploads(collector)[0].sessionId, 'S2');
});
