// The collector's final answers: stored but not verified, a status refused for a wrong key, and 410 for
// an erased participant. None is retried, none throws into the study.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  ERASED_PREFIX,
  FakeStorage,
  answerOf,
  batchAnswer,
  fakeCollector,
  jsonAnswer,
  offline,
  sentUploads,
  setUp,
  storedAnswer,
} from './fakes.mjs';

const PID = 'P001ABC';
const ERASED_ERROR = {
  status: 'error',
  error: "participant P001ABC was erased at the research team's request; nothing was stored",
  reason: 'erased',
};
const KEY_ERROR = {
  status: 'error',
  error: 'participant key does not match; status not changed',
  reason: 'participant-key',
};

test('keyVerified: false means stored: dropped, told as stored and as a key mismatch', async () => {
  const collector = fakeCollector((url, init, body) =>
    batchAnswer(body.uploads, (upload) => storedAnswer(upload, { keyVerified: false })),
  );
  const { uploader, clock, storage, events } = setUp({ collector });
  const answer = await uploader.uploadSubmissionData(PID, { n: 1 });
  assert.equal(answer.status, 'success');
  assert.equal(answer.keyVerified, false);
  await clock.advance(3600000);
  assert.equal(collector.calls.length, 1); // nothing to retry
  assert.deepEqual(storage.queueKeys(), []);
  const types = events.map((e) => [e.type, e.keyVerified]);
  assert.deepEqual(types, [
    ['stored', false],
    ['key-mismatch', undefined],
  ]);
  assert.equal(events[1].uploadId, events[0].uploadId);
});

test('a status refused for a wrong key (403) is dropped with an event, not retried', async () => {
  const collector = fakeCollector(() => jsonAnswer(403, KEY_ERROR));
  const { uploader, clock, storage, events } = setUp({ collector });
  const answer = await uploader.uploadUserStatus(PID);
  assert.equal(answer.status, 'error');
  assert.equal(answer.reason, 'participant-key');
  assert.equal(answer.httpStatus, 403);
  await clock.advance(3600000);
  assert.equal(collector.calls.length, 1);
  assert.deepEqual(storage.queueKeys(), []);
  const rejected = events.find((e) => e.type === 'rejected');
  assert.equal(rejected.reason, 'participant-key');
  assert.ok(events.some((e) => e.type === 'key-mismatch' && e.uploadType === 'status'));
  // The participant is not blocked: the next submission still goes out.
  assert.equal(collector.calls.length, 1);
  await uploader.uploadSubmissionData(PID, { n: 2 });
  assert.equal(collector.calls.length, 2);
});

test('in a batch: unverified and key-refused items leave the queue, each told once', async () => {
  const { uploader, events } = setUp({ collector: offline() });
  await uploader.uploadUserStatus(PID);
  await uploader.uploadSubmissionData(PID, { n: 1 });
  await uploader.uploadTrialData(PID, 'S1', 0, { rt: 1 });
  const collector = fakeCollector((url, init, body) =>
    batchAnswer(body.uploads, (upload) =>
      upload.uploadType === 'status'
        ? { httpStatus: 403, ...KEY_ERROR }
        : storedAnswer(upload, { keyVerified: false }),
    ),
  );
  uploader.configure({ fetch: collector.fetch });
  events.length = 0;
  assert.deepEqual(await uploader.flushQueue(), { stored: 2, rejected: 1, remaining: 0 });
  const terminal = events.filter((e) => ['stored', 'rejected'].includes(e.type));
  assert.deepEqual(terminal.map((e) => [e.type, e.uploadType]).sort(), [
    ['rejected', 'status'],
    ['stored', 'submission'],
    ['stored', 'trial'],
  ]);
  assert.equal(events.filter((e) => e.type === 'key-mismatch').length, 3);
});

test("410: the participant's queue is dropped, remembered, and nothing more is sent", async () => {
  const storage = new FakeStorage();
  const { uploader, clock, events } = setUp({ storage, collector: offline() });
  await uploader.uploadSubmissionData(PID, { n: 1 });
  await uploader.uploadTrialData(PID, 'S1', 0, { rt: 1 });
  await uploader.uploadSubmissionData('OTHER1', { n: 1 });
  const collector = fakeCollector((url, init, body) =>
    url.endsWith('/batch')
      ? batchAnswer(body.uploads, (upload) =>
          upload.participantId === PID ? { httpStatus: 410, ...ERASED_ERROR } : storedAnswer(upload),
        )
      : null,
  );
  uploader.configure({ fetch: collector.fetch });
  await clock.advance(10 * 60000); // the retry
  assert.deepEqual(uploader.getQueueState().items, []);
  assert.match(storage.getItem(ERASED_PREFIX + PID), /erasedAt/);
  assert.ok(events.some((e) => e.type === 'erased' && e.participantId === PID));
  assert.ok(events.some((e) => e.type === 'rejected' && e.reason === 'erased'));
  assert.ok(events.some((e) => e.type === 'dropped' && e.reason === 'participant erased'));

  // Later calls, in this page and after a reload, resolve at once without a request.
  const calls = collector.calls.length;
  const reloaded = setUp({ storage, clock, collector }).uploader;
  for (const instance of [uploader, reloaded]) {
    for (const answer of [
      await instance.uploadUserStatus(PID),
      await instance.uploadSubmissionData(PID, { n: 2 }),
      await instance.uploadTrialData(PID, 'S1', 1, { rt: 2 }),
      await instance.restoreUserStatus(PID),
    ]) {
      assert.equal(answer.status, 'error');
      assert.equal(answer.reason, 'erased');
    }
  }
  assert.equal(collector.calls.length, calls);
  assert.equal((await reloaded.uploadUserStatus('OTHER1')).status, 'success');
  assert.equal(sentUploads(collector).at(-1).participantId, 'OTHER1');
});

test('410 inside a batch answer: the erased participant is dropped once, counted once', async () => {
  const { uploader, clock, events } = setUp({ collector: offline() });
  for (let i = 0; i < 3; i += 1) await answerOf(uploader.uploadTrialData(PID, 'S1', i, { i }), clock);
  await uploader.uploadTrialData('OTHER1', 'S9', 0, { i: 0 });
  const collector = fakeCollector((url, init, body) =>
    batchAnswer(body.uploads, (upload) =>
      upload.participantId === PID ? { httpStatus: 410, ...ERASED_ERROR } : storedAnswer(upload),
    ),
  );
  uploader.configure({ fetch: collector.fetch });
  events.length = 0;
  assert.deepEqual(await uploader.flushQueue(), { stored: 1, rejected: 3, remaining: 0 });
  const ends = events.filter((e) => ['stored', 'rejected', 'dropped'].includes(e.type));
  assert.equal(ends.length, 4); // exactly one terminal event per upload
  assert.deepEqual(new Set(ends.map((e) => e.trialIndex)), new Set([0, 1, 2]));
  assert.equal(events.filter((e) => e.type === 'erased').length, 1);
});

test("410 on a new upload drops that participant's queued uploads (other tabs' too)", async () => {
  const storage = new FakeStorage();
  const tabA = setUp({ storage, collector: offline() });
  await tabA.uploader.uploadSubmissionData(PID, { n: 1 });
  storage.removeItem('dataUploader.v1.retry'); // the backoff ended (back online)
  const collector = fakeCollector((url, init, body) =>
    batchAnswer(body.uploads, () => ({ httpStatus: 410, ...ERASED_ERROR })),
  );
  const { uploader, events } = setUp({ storage, clock: tabA.clock, collector });
  const answer = await uploader.uploadUserStatus(PID);
  assert.equal(answer.status, 'error');
  assert.equal(answer.reason, 'erased');
  assert.equal(collector.calls.length, 1);
  assert.deepEqual(uploader.getQueueState().items, []);
  assert.deepEqual(storage.queueKeys(), []);
  // Both go out in one batch of the pump: the first answered 410 is rejected, the other dropped with
  // the participant's queue; each told once.
  const ends = events.filter((e) => e.type === 'dropped' || e.type === 'rejected');
  assert.deepEqual(ends.map((e) => e.type).sort(), ['dropped', 'rejected']);
  assert.deepEqual(ends.map((e) => e.uploadType).sort(), ['status', 'submission']);
});

test('periodic status uploads stop for an erased participant', async () => {
  const collector = fakeCollector(() => jsonAnswer(410, ERASED_ERROR));
  const { uploader, clock } = setUp({ collector, participantId: PID, statusIntervalMs: 1000 });
  await clock.advance(1000);
  assert.equal(collector.calls.length, 1);
  await clock.advance(10000);
  assert.equal(collector.calls.length, 1);
  assert.equal((await uploader.flushQueue()).remaining, 0);
});
