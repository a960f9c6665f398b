// Forward-compatible study options: studyId on every request, the study answers (unknown, closed,
// full: kept; archived: dropped), uploads too large for the collector, the backup file, expectedTrials.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { collectorHooks } from '../../js/jspsych-collector.js';
import { FakeStorage, batchAnswer, fakeCollector, jsonAnswer, sentUploads, setUp } from './fakes.mjs';

const PID = 'P001ABC';

test('studyId goes with every upload, batch item and restore; without it nothing new is sent', async () => {
  const { uploader, collector, clock } = setUp({ studyId: 'stroop-v2' });
  await uploader.uploadUserStatus(PID);
  await uploader.uploadSubmissionData(PID, { n: 1 });
  const trial = uploader.uploadTrialData(PID, 'S1', 0, { rt: 1 });
  await clock.advance(100);
  await trial;
  await uploader.restoreUserStatus(PID);
  const bodies = sentUploads(collector);
  assert.equal(bodies.length, 4);
  for (const body of bodies) assert.equal(body.studyId, 'stroop-v2');

  const plain = setUp();
  await plain.uploader.uploadSubmissionData(PID, { n: 1 });
  await plain.uploader.restoreUserStatus(PID);
  for (const body of sentUploads(plain.collector)) assert.equal('studyId' in body, false);
});

test('a bad studyId is refused with an event and not sent', async () => {
  const { uploader, collector, events } = setUp({ studyId: '../x' });
  await uploader.uploadSubmissionData(PID, { n: 1 });
  assert.ok(events.some((e) => e.type === 'invalid-option' && e.option === 'studyId'));
  assert.equal('studyId' in sentUploads(collector)[0], false);
});

for (const [httpStatus, reason] of [
  [404, 'unknown-study'],
  [403, 'study-closed'],
  [403, 'study-full'],
]) {
  test(`${httpStatus} ${reason}: the upload stays queued, with an event, and is sent later`, async () => {
    let open = false;
    const collector = fakeCollector((url, init, body) =>
      open ? null : batchAnswer(body.uploads, () => ({ httpStatus, status: 'error', error: 'no', reason })),
    );
    const { uploader, clock, events, storage } = setUp({ collector, studyId: 'S9' });
    const answer = await uploader.uploadSubmissionData(PID, { n: 1 });
    assert.equal(answer.status, 'queued');
    assert.equal(answer.reason, reason);
    assert.equal(answer.persisted, true);
    assert.ok(events.some((e) => e.type === 'study-unavailable' && e.reason === reason));
    assert.equal(uploader.getQueueState().items.length, 1);
    assert.ok(storage.queueKeys().length > 0);
    open = true;
    await clock.advance(10 * 60000);
    assert.equal(collector.stored.size, 1);
    assert.deepEqual(uploader.getQueueState().items, []);
  });
}

test("410 study-archived drops the upload and the study's other queued uploads, as an erasure", async () => {
  const archived = { status: 'error', error: 'archived', reason: 'study-archived' };
  const { uploader, clock, events } = setUp({
    collector: fakeCollector((url, init, body) =>
      batchAnswer(
        body.uploads,
        (u) =>
          (u.studyId === 'OLD' ? { httpStatus: 410, ...archived } : null) || {
            httpStatus: 503,
            status: 'error',
            error: 'later',
          },
      ),
    ),
    studyId: 'OLD',
  });
  const trials = [0, 1, 2].map((i) => uploader.uploadTrialData(PID, 'S1', i, { i }));
  await clock.advance(100);
  const answers = await Promise.all(trials);
  for (const answer of answers) {
    assert.equal(answer.status, 'error');
    assert.equal(answer.reason, 'study-archived');
  }
  assert.deepEqual(uploader.getQueueState().items, []);
  const ends = events.filter((e) => e.type === 'rejected' || e.type === 'dropped');
  assert.equal(ends.length, 3); // one terminal event each
  assert.equal(uploader.getQueueState().attempt, 0); // not a failure: nothing to retry
});

test('too large for the collector: not sent, kept, answered too-large; downloadBackup has it', async () => {
  const collector = fakeCollector((url) =>
    url.endsWith('/openapi.json') ? jsonAnswer(200, { info: { 'x-max-upload-bytes': 100000 } }) : null,
  );
  const { uploader, storage, events } = setUp({ collector });
  const big = { text: 'x'.repeat(150000) };
  const answer = await uploader.uploadSubmissionData(PID, big);
  assert.equal(answer.status, 'error');
  assert.equal(answer.reason, 'too-large');
  assert.equal(answer.persisted, true);
  assert.ok(events.some((e) => e.type === 'too-large'));
  assert.deepEqual(
    collector.calls.map((c) => c.url),
    ['http://collector.test/openapi.json'],
  ); // asked the limit, sent nothing
  // Kept, and not tried again: a later small upload goes alone.
  assert.equal((await uploader.uploadSubmissionData(PID, { small: 1 })).status, 'success');
  assert.equal(collector.calls.filter((c) => c.url.endsWith('/batch')).length, 1);
  const [kept] = uploader.getQueueState().items;
  assert.equal(kept.tooLarge, true);
  assert.ok(storage.queueKeys().some((k) => k.includes('.body.')));
  const backup = await uploader.downloadBackup(PID); // resolves: loaded on first use
  assert.equal(backup.count, 1);
  assert.match(backup.filename, /^backup-P001ABC-.*\.json$/);
  const parsed = JSON.parse(backup.text);
  assert.deepEqual(parsed.uploads[0].submissionData, big);
  assert.equal('participantKey' in parsed.uploads[0], false); // the key stays in this browser
  assert.equal((await uploader.downloadBackup('SOMEONE')).count, 0);
});

test('a 413 from the collector is too-large too: kept, never dropped', async () => {
  const collector = fakeCollector(() => jsonAnswer(413, { status: 'error', error: 'too big' }));
  const { uploader } = setUp({ collector });
  const answer = await uploader.uploadSubmissionData(PID, { n: 1 });
  assert.equal(answer.reason, 'too-large');
  assert.equal(uploader.getQueueState().items.length, 1);
});

test('a configured maxUploadBytes is used without asking the collector', async () => {
  const { uploader, collector } = setUp({ maxUploadBytes: 70000 });
  const answer = await uploader.uploadSubmissionData(PID, { text: 'x'.repeat(80000) });
  assert.equal(answer.reason, 'too-large');
  assert.equal(collector.calls.length, 0);
});

test('a study with other fields passes its own collector function', async () => {
  const storage = new FakeStorage({ my_level: '7', study_weekly_session_count: '3' });
  const collectFields = (participantId, store) => ({
    level: Number(store.getItem('my_level')),
    participantId,
  });
  const { uploader, collector } = setUp({ storage, collectFields });
  await uploader.uploadUserStatus(PID);
  const [sent] = sentUploads(collector);
  assert.equal(sent.level, 7);
  assert.equal('weeklySessionCount' in sent, false);
});

test('collectorHooks sends studyId with every upload and expectedTrials with each trial', async () => {
  const collector = fakeCollector();
  const hooks = collectorHooks({
    participantId: PID,
    studyId: 'S2',
    expectedTrials: 2,
    collectorUrl: 'http://collector.test',
    uploaderOptions: { storage: new FakeStorage(), fetch: collector.fetch, locks: null, statusIntervalMs: 0 },
  });
  hooks.on_data_update({ trial_index: 0 });
  hooks.on_finish([{ trial_index: 0 }]);
  assert.deepEqual(await hooks.flush(2000), { stored: 2, remaining: 0 });
  const [trial, submission] = sentUploads(collector);
  assert.equal(trial.expectedTrials, 2);
  assert.equal(trial.studyId, 'S2');
  assert.equal(submission.studyId, 'S2');
});

test('a large upload whose limit cannot be asked is retried, never judged too large on a guess', async () => {
  let reachable = false;
  const collector = fakeCollector((url) => {
    if (!reachable) throw new TypeError('Failed to fetch');
    return url.endsWith('/openapi.json')
      ? jsonAnswer(200, { info: { 'x-max-upload-bytes': 8000000 } })
      : null;
  });
  const { uploader, clock } = setUp({ collector });
  const answer = await uploader.uploadSubmissionData(PID, { text: 'x'.repeat(5000000) }); // over 4 MiB
  assert.equal(answer.status, 'queued');
  reachable = true;
  await clock.advance(10 * 60000);
  assert.equal(collector.stored.size, 1); // this collector takes 8 MB
  assert.deepEqual(uploader.getQueueState().items, []);
});
