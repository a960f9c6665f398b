// The offline queue: persistence across page loads, retry classification, backoff, supersession,
// the bound, batching and the cross-tab lease.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { backoffDelay } from '../../js/data-uploader.js';
import { FakeClock, FakeStorage, fakeCollector, jsonAnswer, offline, sentUploads, setUp } from './fakes.mjs';

const PID = 'P001ABC';

test('backoffDelay: full jitter under an exponential ceiling, capped, never sooner than Retry-After', () => {
  const top = (attempt, extra = {}) =>
    backoffDelay(attempt, { baseMs: 1000, maxMs: 60000, random: () => 1, ...extra });
  const ceilings = [0, 1, 2, 3, 4, 5, 6, 7, 50].map((a) => top(a));
  assert.deepEqual(ceilings, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
  assert.equal(backoffDelay(3, { baseMs: 1000, maxMs: 60000, random: () => 0 }), 0);
  assert.equal(backoffDelay(3, { baseMs: 1000, maxMs: 60000, random: () => 0.5 }), 4000);
  assert.equal(top(0, { random: () => 0, retryAfterMs: 5000 }), 5000);
  assert.equal(top(6, { retryAfterMs: 5000 }), 60000);
  assert.equal(top(0, { random: () => 0, retryAfterMs: 10 ** 9 }), 60000);
});

test('a network failure keeps the upload queued; the next page load sends it unchanged, once', async () => {
  const storage = new FakeStorage({ study_weekly_session_count: '3' });
  const first = setUp({ storage, collector: offline() });
  const answer = await first.uploader.uploadSubmissionData(PID, { answers: [1, 2, 3] });
  assert.equal(answer.status, 'queued');
  assert.equal(answer.persisted, true);
  const [sentFirst] = sentUploads(first.collector);
  assert.equal(storage.queueKeys().filter((k) => k.startsWith('dataUploader.v1.item.')).length, 1);
  first.uploader.close();

  // A reload: a new instance over the same localStorage.
  const second = setUp({ storage, clock: first.clock });
  assert.equal(second.uploader.getQueueState().items.length, 1);
  const summary = await second.uploader.flushQueue();
  assert.deepEqual(summary, { stored: 1, rejected: 0, remaining: 0 });
  const [call] = second.collector.calls;
  assert.ok(call.url.endsWith('/api/upload-user-data/batch'));
  assert.deepEqual(call.body.uploads, [sentFirst]); // same uploadId, timestamp and key: the collector dedups
  assert.deepEqual(storage.queueKeys(), []);
});

const FAILURES = [
  ['503', 503, { 'Retry-After': '30' }],
  ['429', 429, { 'Retry-After': '30' }],
  ['500', 500, {}],
];
for (const [label, status, headers] of FAILURES) {
  test(`a ${label} is retried later; Retry-After holds back new uploads too`, async () => {
    let failing = true;
    const collector = fakeCollector(() =>
      failing ? jsonAnswer(status, { status: 'error', error: 'later' }, headers) : null,
    );
    const { uploader, clock } = setUp({ collector, retryBaseMs: 1000, retryMaxMs: 60000 });
    const answer = await uploader.uploadSubmissionData(PID, { n: 1 });
    assert.equal(answer.status, 'queued');
    assert.equal(answer.httpStatus, status);
    const wait = uploader.getQueueState().nextAttemptAt - clock.t;
    assert.equal(wait, headers['Retry-After'] ? 30000 : 1000);
    // While waiting, a new upload is queued without a request.
    assert.equal((await uploader.uploadSubmissionData(PID, { n: 2 })).status, 'queued');
    assert.equal(collector.calls.length, 1);
    failing = false;
    await clock.advance(wait);
    assert.equal(collector.stored.size, 2);
    assert.deepEqual(uploader.getQueueState().items, []);
  });
}

test('an HTTP-date Retry-After is read against the injected clock', async () => {
  const clock = new FakeClock();
  const when = new Date(clock.t + 45000).toUTCString();
  let failing = true;
  const collector = fakeCollector(() =>
    failing ? jsonAnswer(503, { status: 'error', error: 'later' }, { 'Retry-After': when }) : null,
  );
  const { uploader } = setUp({ collector, clock, retryBaseMs: 1000, retryMaxMs: 120000 });
  await uploader.uploadSubmissionData(PID, { n: 1 });
  assert.equal(uploader.getQueueState().nextAttemptAt - clock.t, 45000);
  failing = false;
  await clock.advance(45000);
  assert.equal(collector.stored.size, 1);
});

test('a 4xx other than 429 is reported and not retried', async () => {
  const collector = fakeCollector(() =>
    jsonAnswer(422, { status: 'error', error: 'a submission needs submissionData' }),
  );
  const { uploader, clock, storage, events } = setUp({ collector });
  const answer = await uploader.uploadSubmissionData(PID, { n: 1 });
  assert.equal(answer.status, 'error');
  assert.equal(answer.httpStatus, 422);
  assert.equal(answer.error, 'a submission needs submissionData');
  await clock.advance(3600000);
  assert.equal(collector.calls.length, 1);
  assert.deepEqual(storage.queueKeys(), []);
  assert.ok(
    events.some((e) => e.type === 'rejected' && e.httpStatus === 422 && e.uploadType === 'submission'),
  );
});

test('a request without an answer times out into the queue', async () => {
  const collector = fakeCollector(() => new Promise(() => {}));
  const { uploader, clock } = setUp({ collector, timeoutMs: 5000 });
  const pending = uploader.uploadUserStatus(PID);
  await clock.advance(5000);
  const answer = await pending;
  assert.equal(answer.status, 'queued');
  assert.match(answer.error, /no answer within 5000 ms/);
  assert.equal(collector.calls[0].init.signal.aborted, true);
});

test('a 200 that is not the collector (captive portal) is not taken for stored', async () => {
  const collector = fakeCollector(() => new Response('<html>Log in to the Wi-Fi</html>', { status: 200 }));
  const { uploader } = setUp({ collector });
  assert.equal((await uploader.uploadSubmissionData(PID, { n: 1 })).status, 'queued');
  assert.equal(uploader.getQueueState().items.length, 1);
});

test('newer status uploads supersede older ones; submissions are all kept', async () => {
  const { uploader, clock, collector } = setUp({ collector: offline() });
  for (let i = 0; i < 3; i += 1) {
    await uploader.uploadUserStatus(PID);
    await uploader.uploadSubmissionData(PID, { i });
    await uploader.uploadUserStatus('OTHER1');
    clock.t += 1000;
  }
  const items = uploader.getQueueState().items;
  assert.equal(items.filter((i) => i.uploadType === 'submission').length, 3);
  const statuses = items.filter((i) => i.uploadType === 'status');
  assert.deepEqual(statuses.map((i) => i.participantId).sort(), ['OTHER1', PID]);
  const lastStatus = sentUploads(collector)
    .filter((u) => u.uploadType === 'status' && u.participantId === PID)
    .at(-1);
  assert.ok(statuses.some((i) => i.uploadId === lastStatus.uploadId));
});

test('the bound: oldest statuses give way; a submission over it is kept in memory, loudly', async () => {
  const { uploader, events, storage } = setUp({ collector: offline(), maxQueueItems: 3 });
  await uploader.uploadUserStatus('A1');
  await uploader.uploadUserStatus('B1');
  await uploader.uploadSubmissionData(PID, { i: 1 });
  await uploader.uploadSubmissionData(PID, { i: 2 }); // evicts A1's status
  let state = uploader.getQueueState().items;
  assert.deepEqual(
    state.map((i) => i.participantId),
    ['B1', PID, PID],
  );
  assert.ok(events.some((e) => e.type === 'superseded' && e.participantId === 'A1'));
  await uploader.uploadSubmissionData(PID, { i: 3 }); // evicts B1's status
  const over = await uploader.uploadSubmissionData(PID, { i: 4 }); // nothing left to evict
  assert.equal(over.status, 'queued');
  assert.equal(over.persisted, false);
  assert.ok(events.some((e) => e.type === 'not-persisted' && e.uploadId === over.uploadId));
  state = uploader.getQueueState().items;
  assert.equal(state.length, 4);
  assert.deepEqual(
    state.map((i) => i.persisted),
    [true, true, true, false],
  );
  assert.equal(storage.queueKeys().filter((k) => k.includes('.item.')).length, 3);
});

test('batches: by count (at most 50) and by bytes, order kept, an oversized upload alone', async () => {
  const batchesOf = async (options, texts) => {
    const { uploader } = setUp({ collector: offline(), maxQueueItems: 500, ...options });
    for (const [i, text] of texts.entries()) await uploader.uploadSubmissionData(PID, { i, text });
    const collector = fakeCollector();
    uploader.configure({ fetch: collector.fetch });
    assert.equal((await uploader.flushQueue()).remaining, 0);
    return collector.calls.map((call) => call.body.uploads.map((u) => u.submissionData.i));
  };
  const five = ['', '', '', '', ''];
  assert.deepEqual(await batchesOf({ maxBatchItems: 2 }, five), [[0, 1], [2, 3], [4]]);
  const many = Array.from({ length: 120 }, () => '');
  const counts = (await batchesOf({ maxBatchItems: 500 }, many)).map((b) => b.length);
  assert.deepEqual(counts, [50, 50, 20]); // 500 asked, 50 allowed
  // Bodies of about 1.3 KB, 1.3 KB, 5.3 KB and 0.3 KB under a 3 000-byte batch limit.
  const mixed = ['x'.repeat(1000), 'x'.repeat(1000), 'x'.repeat(5000), ''];
  assert.deepEqual(await batchesOf({ maxBatchBytes: 3000 }, mixed), [[0, 1], [2], [3]]);
  assert.deepEqual(await batchesOf({}, []), []); // nothing queued: no request
});

test('a flush sends 120 queued uploads in batches of 50, 50 and 20', async () => {
  const { uploader, storage, clock } = setUp({ collector: offline(), maxQueueItems: 500 });
  for (let i = 0; i < 120; i += 1) await uploader.uploadSubmissionData(PID, { i });
  const collector = fakeCollector();
  uploader.configure({ fetch: collector.fetch });
  await clock.advance(10 * 60000); // the retry timer fires
  assert.deepEqual(
    collector.calls.map((c) => c.body.uploads.length),
    [50, 50, 20],
  );
  assert.equal(collector.stored.size, 120);
  assert.deepEqual(storage.queueKeys(), []);
});

test('each batch item is answered on its own: the stored and the refused leave the queue', async () => {
  const { uploader, clock, events } = setUp({ collector: offline() });
  const ids = [];
  for (let i = 0; i < 4; i += 1) ids.push((await uploader.uploadSubmissionData(PID, { i })).uploadId);
  const verdicts = [200, 422, 503, 429];
  const collector = fakeCollector((url, init, body) =>
    jsonAnswer(200, {
      status: 'success',
      results: body.uploads.map((u, index) =>
        verdicts[index] === 200
          ? { index, uploadId: u.uploadId, httpStatus: 200, status: 'success', participantId: PID }
          : { index, uploadId: u.uploadId, httpStatus: verdicts[index], status: 'error', error: 'no' },
      ),
    }),
  );
  uploader.configure({ fetch: collector.fetch });
  const summary = await uploader.flushQueue();
  assert.equal(summary.stored, 1);
  assert.equal(summary.rejected, 1);
  assert.equal(summary.remaining, 2);
  assert.deepEqual(
    uploader.getQueueState().items.map((i) => i.uploadId),
    [ids[2], ids[3]],
  );
  assert.ok(events.some((e) => e.type === 'rejected' && e.uploadId === ids[1]));
  assert.ok(uploader.getQueueState().nextAttemptAt > clock.t);
});

test('a batch refused as a whole is sent again one upload per batch; each is answered', async () => {
  const { uploader } = setUp({ collector: offline() });
  for (let i = 0; i < 3; i += 1) await uploader.uploadSubmissionData(PID, { i });
  const collector = fakeCollector((url, init, body) =>
    body.uploads.length > 1 ? jsonAnswer(400, { status: 'error', error: 'malformed batch' }) : null,
  );
  uploader.configure({ fetch: collector.fetch });
  assert.deepEqual(await uploader.flushQueue(), { stored: 3, rejected: 0, remaining: 0 });
  assert.deepEqual(
    collector.calls.map((c) => c.body.uploads.length),
    [3, 1, 1, 1],
  );
});

test('a successful contact flushes what was queued before', async () => {
  const { uploader, clock } = setUp({
    collector: offline(),
    retryBaseMs: 3600000,
    retryMaxMs: 3600000,
    random: () => 0.5,
  });
  await uploader.uploadSubmissionData(PID, { i: 1 });
  const collector = fakeCollector();
  uploader.configure({ fetch: collector.fetch, random: () => 1 });
  await clock.advance(1800000); // the backoff ends; the next status upload goes straight out
  assert.equal((await uploader.uploadUserStatus(PID)).status, 'success');
  await clock.advance(0);
  assert.equal(collector.stored.size, 2);
  assert.deepEqual(uploader.getQueueState().items, []);
});

test('two tabs without Web Locks: the lease lets one flush at a time; nothing is sent twice', async () => {
  const storage = new FakeStorage();
  const clock = new FakeClock();
  const tabA = setUp({ storage, clock, collector: offline() }).uploader;
  for (let i = 0; i < 3; i += 1) await tabA.uploadSubmissionData(PID, { i });
  let release;
  const gate = new Promise((resolve) => {
    release = resolve;
  });
  const slow = fakeCollector(async () => {
    await gate;
    return null;
  });
  tabA.configure({ fetch: slow.fetch });
  const fast = fakeCollector();
  const tabB = setUp({ storage, clock, collector: fast }).uploader;
  const flushA = tabA.flushQueue();
  await new Promise((resolve) => setImmediate(resolve));
  const flushB = await tabB.flushQueue(); // tab A holds the lease
  assert.equal(flushB.skipped, true);
  assert.equal(fast.calls.length, 0);
  release();
  assert.equal((await flushA).stored, 3);
  await clock.advance(60000); // B's retry after the lease finds an empty queue
  assert.equal(fast.calls.length, 0);
  assert.equal(slow.stored.size, 3);
});

test('Web Locks when present: flushes of two tabs run one after the other', async () => {
  const storage = new FakeStorage();
  const held = [];
  let chain = Promise.resolve();
  const locks = {
    request: (name, fn) => {
      held.push(name);
      const run = chain.then(fn);
      chain = run.catch(() => {});
      return run;
    },
  };
  const { uploader: tabA, clock } = setUp({ storage, collector: offline(), locks, lockGraceMs: 0 });
  for (let i = 0; i < 2; i += 1) await tabA.uploadSubmissionData(PID, { i });
  const collector = fakeCollector();
  tabA.configure({ fetch: collector.fetch });
  const { uploader: tabB } = setUp({ storage, clock, collector, locks, lockGraceMs: 0 });
  held.length = 0; // the uploads took the lock too: count the flushes'
  const [a, b] = await Promise.all([tabA.flushQueue(), tabB.flushQueue()]);
  assert.equal(a.stored + b.stored, 2);
  assert.equal(collector.calls.length, 1);
  assert.deepEqual(held, ['dataUploader.v1.flush', 'dataUploader.v1.flush']);
});

test('a call is answered in time even while another tab holds the lock: queued, sent later', async () => {
  let release;
  const busy = new Promise((resolve) => {
    release = resolve;
  });
  const locks = { request: (name, fn) => busy.then(fn) }; // another tab has the lock until release()
  const { uploader, clock, collector } = setUp({ locks, timeoutMs: 5000 });
  const pending = uploader.uploadSubmissionData(PID, { n: 1 });
  await clock.advance(6100);
  const answer = await pending;
  assert.equal(answer.status, 'queued');
  assert.equal(answer.persisted, true);
  assert.equal(answer.error, 'another tab is sending the queue');
  assert.equal(collector.calls.length, 0);
  release();
  await clock.advance(0);
  assert.equal(collector.stored.size, 1); // the pump sends it once the lock is free
  assert.deepEqual(uploader.getQueueState().items, []);
});
