// The participant key: made once per participant, kept in localStorage, sent in the body of every
// upload, batch item and restore, never in a URL, an event or anything the study gets back.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { FakeStorage, KEY_PREFIX, fakeCollector, offline, sentUploads, setUp } from './fakes.mjs';

const PID = 'P001ABC';
const KEY_SHAPE = /^[A-Za-z0-9_-]{43}$/; // 32 random bytes, base64url without padding

test('the first upload makes a key with getRandomValues, kept at dataUploader.v1.key.{id}', async () => {
  const requested = [];
  const crypto = {
    getRandomValues: (array) => {
      requested.push(array.length);
      return globalThis.crypto.getRandomValues(array);
    },
  };
  const { uploader, storage, collector } = setUp({ crypto });
  await uploader.uploadUserStatus(PID);
  const key = storage.getItem(KEY_PREFIX + PID);
  assert.match(key, KEY_SHAPE);
  assert.deepEqual(requested, [32]);
  assert.equal(sentUploads(collector)[0].participantKey, key);
  // Another participant on the same browser gets a key of their own.
  await uploader.uploadUserStatus('OTHER1');
  assert.match(storage.getItem(`${KEY_PREFIX}OTHER1`), KEY_SHAPE);
  assert.notEqual(storage.getItem(`${KEY_PREFIX}OTHER1`), key);
});

test('every kind of request carries the same key in its body, across page loads', async () => {
  const storage = new FakeStorage();
  const first = setUp({ storage, collector: offline() });
  await first.uploader.uploadSubmissionData(PID, { n: 1 });
  await first.uploader.uploadTrialData(PID, 'S1', 0, { rt: 1 });
  first.uploader.close();
  const key = storage.getItem(KEY_PREFIX + PID);
  const second = setUp({ storage, clock: first.clock }); // a reload
  await second.uploader.flushQueue();
  await second.uploader.uploadUserStatus(PID);
  await second.uploader.restoreUserStatus(PID);
  const bodies = [...sentUploads(first.collector), ...sentUploads(second.collector)];
  // a failed single (the trial then waits out the backoff), a batch of 2, a status, a restore
  assert.equal(bodies.length, 5);
  for (const body of bodies) assert.equal(body.participantKey, key);
  for (const call of [...first.collector.calls, ...second.collector.calls]) {
    assert.ok(!call.url.includes(key), call.url);
    assert.ok(!call.url.includes(PID), call.url); // no participant ID in URLs either
  }
});

test('the key is in no event, no answer, no queue state and no returned configuration', async () => {
  let failing = false;
  const collector = fakeCollector(() => {
    if (failing) throw new TypeError('Failed to fetch');
    return null;
  });
  const { uploader, storage, events, clock } = setUp({ collector });
  const answers = [await uploader.uploadUserStatus(PID)];
  failing = true;
  answers.push(await uploader.uploadSubmissionData(PID, { n: 1 }));
  answers.push(await uploader.uploadTrialData(PID, 'S1', 3, { rt: 1 }));
  answers.push(uploader.getQueueState());
  failing = false;
  const flushing = uploader.flush(5000);
  await clock.advance(5000);
  answers.push(await flushing);
  answers.push(uploader.configure({ participantId: PID, participantKey: 'study-secret-0123456789' }));
  const key = storage.getItem(KEY_PREFIX + PID);
  assert.ok(events.length > 0);
  for (const secret of [key, 'study-secret-0123456789']) {
    assert.ok(!JSON.stringify(events).includes(secret));
    assert.ok(!JSON.stringify(answers).includes(secret));
  }
});

test('a study-supplied key replaces the browser-made one, for the configured participant only', async () => {
  const storage = new FakeStorage();
  const { uploader, collector } = setUp({ storage });
  await uploader.uploadUserStatus(PID);
  const made = storage.getItem(KEY_PREFIX + PID);
  const secret = 'S3cret_from-the-study-1234';
  uploader.configure({ participantId: PID, participantKey: secret });
  await uploader.uploadUserStatus(PID);
  await uploader.uploadUserStatus('OTHER1');
  const keys = sentUploads(collector).map((u) => [u.participantId, u.participantKey]);
  assert.equal(keys[0][1], made);
  assert.deepEqual(keys[1], [PID, secret]);
  assert.notEqual(keys[2][1], secret);
  assert.equal(storage.getItem(KEY_PREFIX + PID), secret); // later page loads use it too
});

test('a participantKey given without a participantId is for the first participant used', async () => {
  const secret = 'another-study-secret-4567';
  const { uploader, collector, storage } = setUp({ participantKey: secret });
  await uploader.uploadSubmissionData(PID, { n: 1 });
  await uploader.uploadUserStatus('OTHER1');
  assert.equal(sentUploads(collector)[0].participantKey, secret);
  assert.notEqual(sentUploads(collector)[1].participantKey, secret);
  assert.equal(storage.getItem(KEY_PREFIX + PID), secret);
});

test('a key changed while an upload is queued is the one sent (added at send time)', async () => {
  const storage = new FakeStorage();
  const { uploader, clock } = setUp({ storage, collector: offline() });
  await uploader.uploadSubmissionData(PID, { n: 1 });
  assert.ok(
    ![...storage.map.entries()].some(([k, v]) => k.includes('.body.') && v.includes('participantKey')),
  );
  const collector = fakeCollector();
  const secret = 'the-study-key-given-later';
  uploader.configure({ fetch: collector.fetch, participantId: PID, participantKey: secret });
  await clock.advance(10 * 60000);
  assert.equal(sentUploads(collector)[0].participantKey, secret);
});

test('no key is sent when it cannot be kept (it would claim for one page load only)', async () => {
  const { FullStorage } = await import('./fakes.mjs');
  const { uploader, collector } = setUp({ storage: new FullStorage() });
  await uploader.uploadUserStatus(PID);
  assert.equal('participantKey' in sentUploads(collector)[0], false);
  const noCrypto = setUp({ crypto: {} });
  await noCrypto.uploader.uploadUserStatus(PID);
  assert.equal('participantKey' in sentUploads(noCrypto.collector)[0], false);
});

test('a garbled stored key is replaced; two instances of one browser share the key', async () => {
  const storage = new FakeStorage({ [KEY_PREFIX + PID]: 'not a key!' });
  const a = setUp({ storage });
  await a.uploader.uploadUserStatus(PID);
  const key = storage.getItem(KEY_PREFIX + PID);
  assert.match(key, KEY_SHAPE);
  const b = setUp({ storage });
  await b.uploader.uploadSubmissionData(PID, { n: 1 });
  assert.equal(sentUploads(b.collector)[0].participantKey, key);
});

test('the page-hide status upload is text/plain with keepalive, with the key in its body', async () => {
  const page = new EventTarget();
  globalThis.window = page;
  try {
    const { uploader, storage, collector } = setUp({ participantId: PID });
    page.dispatchEvent(new Event('pagehide'));
    await new Promise((resolve) => setImmediate(resolve));
    const [call] = collector.calls;
    assert.equal(call.init.keepalive, true);
    assert.equal(call.init.headers['Content-Type'], 'text/plain');
    assert.equal(call.body.uploads[0].uploadType, 'status');
    assert.equal(call.body.uploads[0].participantKey, storage.getItem(KEY_PREFIX + PID));
    uploader.close();
    page.dispatchEvent(new Event('pageshow'));
    page.dispatchEvent(new Event('pagehide'));
    assert.equal(collector.calls.length, 1); // closed: the listeners are gone
  } finally {
    delete globalThis.window;
  }
});
