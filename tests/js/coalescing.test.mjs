// Trials are queued at once and sent together: one batch request per `batchDelayMs`, each caller
// answered with its own item's answer; flush and page-hide do not wait for the timer; a page closed
// before the timer fired loses nothing.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  BATCH_DELAY_MS,
  FakeClock,
  FakeStorage,
  KEY_PREFIX,
  batchAnswer,
  fakeCollector,
  jsonAnswer,
  offline,
  sentUploads,
  settle,
  setUp,
  storedAnswer,
} from './fakes.mjs';

const PID = 'P001ABC';

/** Start `n` trial calls of session S1 (indexes from `from`) without awaiting them. */
function startTrials(uploader, n, from = 0, data = (i) => ({ i })) {
  return Array.from({ length: n }, (_, k) => uploader.uploadTrialData(PID, 'S1', from + k, data(from + k)));
}

test('trials within batchDelayMs go out in one batch request; each call gets its own answer', async () => {
  const collector = fakeCollector((url, init, body) =>
    url.endsWith('/batch')
      ? batchAnswer(body.uploads, (upload) => {
          if (upload.trialIndex === 3)
            return { httpStatus: 400, status: 'error', error: 'trialData too deep' };
          if (upload.trialIndex === 4) return { httpStatus: 503, status: 'error', error: 'storage busy' };
          return storedAnswer(upload, { filesUploaded: [`trials/S1/${upload.trialIndex}.json`] });
        })
      : null,
  );
  const { uploader, clock, storage } = setUp({ collector });
  const calls = startTrials(uploader, 5);
  // Queued (persisted) before any request: two keys per trial, nothing sent yet.
  assert.equal(storage.queueKeys().length, 10);
  await clock.advance(BATCH_DELAY_MS - 1);
  assert.equal(collector.calls.length, 0);
  await clock.advance(1);
  assert.equal(collector.calls.length, 1);
  const [call] = collector.calls;
  assert.ok(call.url.endsWith('/api/upload-user-data/batch'));
  assert.equal(call.init.headers['Content-Type'], 'application/json');
  assert.deepEqual(
    call.body.uploads.map((u) => u.trialIndex),
    [0, 1, 2, 3, 4],
  );
  for (const upload of call.body.uploads)
    assert.equal(upload.participantKey, storage.getItem(KEY_PREFIX + PID));
  const answers = await Promise.all(calls);
  for (const i of [0, 1, 2]) {
    assert.equal(answers[i].status, 'success');
    assert.deepEqual(answers[i].filesUploaded, [`trials/S1/${i}.json`]);
  }
  assert.equal(answers[3].status, 'error');
  assert.equal(answers[3].httpStatus, 400);
  assert.equal(answers[3].trialIndex, 3);
  assert.equal(answers[4].status, 'queued');
  assert.equal(answers[4].trialIndex, 4);
  // Only the one to retry is left, no longer claimed by this page: the retry sends it.
  const left = uploader.getQueueState().items;
  assert.deepEqual(
    left.map((i) => i.trialIndex),
    [4],
  );
  assert.equal(left[0].tries, 1);
});

test('the next window is a new batch; maxBatchItems trials go at once without waiting', async () => {
  const { uploader, clock, collector } = setUp({ maxBatchItems: 4 });
  const first = startTrials(uploader, 3);
  await clock.advance(BATCH_DELAY_MS);
  await Promise.all(first);
  const second = startTrials(uploader, 4, 3); // a full batch: sent now (from a 0 ms timer)
  await clock.advance(0);
  assert.deepEqual(
    collector.calls.map((c) => c.body.uploads.map((u) => u.trialIndex)),
    [
      [0, 1, 2],
      [3, 4, 5, 6],
    ],
  );
  for (const answer of await Promise.all(second)) assert.equal(answer.status, 'success');
  assert.deepEqual(uploader.getQueueState().items, []);
  await clock.advance(60000);
  assert.equal(collector.calls.length, 2); // nothing sent twice, no empty batches
  assert.equal(collector.stored.size, 7);
});

test('collector down: every call resolves queued (never rejects); a retry sends them once', async () => {
  let down = true;
  const collector = fakeCollector(() => {
    if (down) throw new TypeError('Failed to fetch');
    return null;
  });
  const { uploader, clock } = setUp({ collector });
  const calls = startTrials(uploader, 3);
  await clock.advance(BATCH_DELAY_MS);
  const answers = await Promise.all(calls);
  assert.deepEqual(
    answers.map((a) => [a.status, a.persisted, a.trialIndex]),
    [
      ['queued', true, 0],
      ['queued', true, 1],
      ['queued', true, 2],
    ],
  );
  assert.equal(collector.calls.length, 1);
  down = false;
  await clock.advance(10 * 60000); // the backoff's retry
  assert.equal(collector.stored.size, 3);
  assert.deepEqual(uploader.getQueueState().items, []);
});

test('flush(timeoutMs) and flushQueue send waiting trials at once, without the timer', async () => {
  const { uploader, collector, clock } = setUp();
  const calls = startTrials(uploader, 3);
  const result = await uploader.flush(1000); // the fake clock does not move: no timer runs
  assert.deepEqual(result, { stored: 3, remaining: 0 });
  assert.equal(collector.calls.length, 1);
  assert.equal(collector.calls[0].body.uploads.length, 3);
  for (const answer of await Promise.all(calls)) assert.equal(answer.status, 'success');

  const more = startTrials(uploader, 2, 3);
  assert.deepEqual(await uploader.flushQueue(), { stored: 2, rejected: 0, remaining: 0 });
  assert.equal(collector.calls.length, 2);
  await Promise.all(more);
  await clock.advance(60000);
  assert.equal(collector.calls.length, 2); // the cancelled timer sends nothing more
});

test('page-hide sends waiting trials: keepalive, text/plain, within the keepalive byte cap', async () => {
  const page = new EventTarget();
  globalThis.window = page;
  try {
    const { uploader, collector, clock } = setUp();
    // About 25 KB each: two fit under the 60 000-byte keepalive budget, the third does not.
    const calls = startTrials(uploader, 3, 0, (i) => ({ i, text: 'x'.repeat(25000) }));
    page.dispatchEvent(new Event('pagehide'));
    await settle();
    assert.equal(collector.calls.length, 1);
    const [hidden] = collector.calls;
    assert.ok(hidden.url.endsWith('/api/upload-user-data/batch'));
    assert.equal(hidden.init.keepalive, true);
    assert.equal(hidden.init.headers['Content-Type'], 'text/plain'); // no CORS preflight
    assert.ok(hidden.init.body.length <= 60000);
    assert.deepEqual(
      hidden.body.uploads.map((u) => u.trialIndex),
      [0, 1],
    );
    // The page lived on: the one that did not fit goes with the timer, as an ordinary request.
    await clock.advance(BATCH_DELAY_MS);
    assert.equal(collector.calls.length, 2);
    assert.equal(collector.calls[1].init.keepalive, false);
    assert.deepEqual(
      sentUploads(collector).map((u) => u.trialIndex),
      [0, 1, 2],
    );
    for (const answer of await Promise.all(calls)) assert.equal(answer.status, 'success');
    uploader.close();
  } finally {
    delete globalThis.window;
  }
});

test('page-hide after visibilitychange still sends trials made while hidden', async () => {
  const page = new EventTarget();
  const doc = new EventTarget();
  doc.visibilityState = 'hidden';
  globalThis.window = page;
  globalThis.document = doc;
  try {
    const { uploader, collector } = setUp({ participantId: PID });
    doc.dispatchEvent(new Event('visibilitychange')); // hidden: the last status upload
    await settle();
    assert.deepEqual(
      sentUploads(collector).map((u) => u.uploadType),
      ['status'],
    );
    startTrials(uploader, 2);
    page.dispatchEvent(new Event('pagehide')); // then closed before the timer fired
    await settle();
    assert.equal(collector.calls.length, 2);
    assert.equal(collector.calls[1].init.keepalive, true);
    assert.deepEqual(
      collector.calls[1].body.uploads.map((u) => u.trialIndex),
      [0, 1],
    );
    uploader.close();
  } finally {
    delete globalThis.window;
    delete globalThis.document;
  }
});

test('a page closed before the timer fired loses nothing: the next load sends them once', async () => {
  const storage = new FakeStorage();
  const first = setUp({ storage });
  startTrials(first.uploader, 5); // the page dies here: its clock never moves, no request is made
  assert.equal(first.collector.calls.length, 0);

  const reload = new FakeClock(); // the same moment: the dead page's claim on the trials still runs
  const second = setUp({ storage, clock: reload });
  assert.deepEqual(
    second.uploader.getQueueState().items.map((i) => [i.trialIndex, i.persisted]),
    [0, 1, 2, 3, 4].map((i) => [i, true]),
  );
  let result = null;
  second.uploader.flush(30000).then((r) => {
    result = r;
  });
  await reload.advance(30000);
  assert.deepEqual(result, { stored: 5, remaining: 0 });
  assert.equal(second.collector.calls.length, 1); // once the claim ran out, all in one batch
  assert.deepEqual(
    sentUploads(second.collector).map((u) => u.trialIndex),
    [0, 1, 2, 3, 4],
  );
  assert.deepEqual(storage.queueKeys(), []);
});

test("another tab's flush leaves alone the trials this page is about to send", async () => {
  const storage = new FakeStorage();
  const tabA = setUp({ storage });
  const calls = startTrials(tabA.uploader, 2);
  const tabB = setUp({ storage, clock: tabA.clock });
  const flushB = await tabB.uploader.flushQueue();
  assert.deepEqual([flushB.stored, flushB.rejected, flushB.remaining], [0, 0, 2]);
  assert.equal(tabB.collector.calls.length, 0); // tab A's pump holds the lease for its coming send
  await tabA.clock.advance(BATCH_DELAY_MS);
  for (const answer of await Promise.all(calls)) assert.equal(answer.status, 'success');
  assert.equal(tabA.collector.calls.length, 1);
  assert.equal(tabB.collector.calls.length, 0);
});

test('batchDelayMs: 0 sends each trial on its own at once', async () => {
  const { uploader, collector } = setUp({ batchDelayMs: 0 });
  const answer = await uploader.uploadTrialData(PID, 'S1', 0, { i: 0 });
  assert.equal(answer.status, 'success');
  assert.ok(collector.calls[0].url.endsWith('/api/upload-user-data/batch'));
  assert.equal(collector.calls[0].body.uploads.length, 1); // a batch of one
});

test('a trial of an erased participant waiting for the timer is not sent', async () => {
  const collector = fakeCollector(() =>
    jsonAnswer(410, { status: 'error', error: 'erased', reason: 'erased' }),
  );
  const { uploader, clock, events } = setUp({ collector });
  const sending = uploader.uploadSubmissionData(PID, { n: 1 }); // in flight, to be answered 410
  const trial = uploader.uploadTrialData(PID, 'S1', 0, { i: 0 }); // queued for the next batch
  const submission = await sending;
  assert.equal(submission.reason, 'erased');
  await clock.advance(BATCH_DELAY_MS);
  const answer = await trial;
  assert.equal(answer.status, 'error');
  assert.equal(answer.reason, 'erased');
  assert.equal(collector.calls.length, 1);
  assert.deepEqual(uploader.getQueueState().items, []);
  const dropped = events.filter((e) => e.type === 'dropped' && e.uploadType === 'trial');
  assert.equal(dropped.length, 1); // told once
});

test('offline: a batch of trials waiting for the retry is claimed by no one and sent once', async () => {
  const { uploader, clock } = setUp({ collector: offline() });
  const calls = startTrials(uploader, 3);
  await clock.advance(BATCH_DELAY_MS);
  await Promise.all(calls);
  for (const item of uploader.getQueueState().items) assert.equal(item.tries, 1);
  const collector = fakeCollector();
  uploader.configure({ fetch: collector.fetch });
  assert.deepEqual(await uploader.flush(1000), { stored: 3, remaining: 0 });
  assert.equal(collector.calls.length, 1);
});
