// Instances own their state: two in one process share nothing but the storage they are given.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createUploader } from '../../js/data-uploader.js';
import { FullStorage, offline, setUp } from './fakes.mjs';

const PID = 'P001ABC';

test('two instances keep their own configuration and in-memory queue', async () => {
  const a = setUp({ storage: new FullStorage(), collector: offline(), timeoutMs: 1234 });
  const b = setUp({ storage: new FullStorage() });
  assert.equal((await a.uploader.uploadSubmissionData(PID, { n: 1 })).persisted, false);
  assert.equal(a.uploader.getQueueState().items.length, 1); // held in a's memory
  assert.equal(b.uploader.getQueueState().items.length, 0);
  assert.equal(b.uploader.configure({}).timeoutMs, 15000);
  assert.equal(a.uploader.configure({}).timeoutMs, 1234);
  assert.equal((await b.uploader.uploadSubmissionData(PID, { n: 2 })).status, 'success');
  assert.equal(a.events.filter((e) => e.type === 'stored').length, 0);
  assert.equal(b.events.filter((e) => e.type === 'stored').length, 1);
});

test('createUploader never throws, whatever it is given', () => {
  for (const options of [undefined, null, 42, 'x', { maxBatchItems: 'many' }, { onEvent: 5 }]) {
    const uploader = createUploader(options);
    assert.equal(typeof uploader.flush, 'function');
    assert.ok(uploader.configure({}).maxBatchItems >= 1);
    uploader.close();
  }
});

test('close() stops the timers: no periodic status upload and no retry after it', async () => {
  const { uploader, clock, collector } = setUp({ participantId: PID, statusIntervalMs: 1000 });
  await clock.advance(1000);
  assert.equal(collector.calls.length, 1);
  uploader.close();
  await clock.advance(60000);
  assert.equal(collector.calls.length, 1);
  assert.equal((await uploader.uploadUserStatus(PID)).status, 'success'); // calls still work
});

test('without crypto.randomUUID (insecure context) upload IDs are UUID-shaped and distinct', async () => {
  const { uploader } = setUp({ crypto: {}, random: Math.random, collector: offline() });
  const ids = [];
  for (let i = 0; i < 3; i += 1) ids.push((await uploader.uploadSubmissionData(PID, { i })).uploadId);
  for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal(new Set(ids).size, 3);
});
