// The jsPsych hooks over a fake uploader: what each hook sends, session ids and trial indexes across
// reloads and reopened tabs, flush, and that nothing ever throws into the experiment.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';

import { FakeStorage, ThrowingStorage, fakeCollector, settle } from './fakes.mjs';

const PID = 'P001ABC';
let instances = 0;

/** A fresh copy of the hooks module (and of the uploader it imports), like a new page load. */
async function freshHooks() {
  instances += 1;
  return import(new URL(`../../js/jspsych-collector.js?instance=${instances}`, import.meta.url));
}

/** An uploader instance's interface, recording calls; `answer` decides what each call resolves to. */
class FakeUploader {
  constructor({ answer = () => ({ status: 'success' }), flushAnswer = { stored: 0, remaining: 0 } } = {}) {
    this.trials = [];
    this.submissions = [];
    this.flushes = [];
    this.answer = answer;
    this.flushAnswer = flushAnswer;
  }

  uploadTrialData(participantId, sessionId, trialIndex, trialData) {
    this.trials.push({ participantId, sessionId, trialIndex, trialData });
    return Promise.resolve().then(() => this.answer('trial'));
  }

  uploadSubmissionData(participantId, submissionData) {
    this.submissions.push({ participantId, submissionData });
    return Promise.resolve().then(() => this.answer('submission'));
  }

  flush(timeoutMs) {
    this.flushes.push(timeoutMs);
    return Promise.resolve(this.flushAnswer);
  }
}

/** A browser tab: its own sessionStorage and window (for pagehide), a localStorage shared per browser. */
class Tab {
  constructor(local) {
    this.local = local;
    this.session = new FakeStorage();
    this.window = new EventTarget();
  }

  /** Make this tab the page the module sees (the module reads the globals when hooks are made). */
  enter() {
    globalThis.localStorage = this.local;
    globalThis.sessionStorage = this.session;
    globalThis.window = this.window;
  }

  close() {
    this.window.dispatchEvent(new Event('pagehide'));
  }
}

/** Run `count` jsPsych-like trials (trial_index from 0, as jsPsych does after every page load). */
function runTrials(hooks, count, from = 0) {
  for (let i = from; i < from + count; i += 1)
    hooks.on_data_update({
      trial_type: 'html-keyboard-response',
      trial_index: i,
      rt: 400 + i,
      response: 'f',
    });
}

const saved = {};
beforeEach(() => {
  for (const name of ['localStorage', 'sessionStorage', 'window'])
    saved[name] = Object.getOwnPropertyDescriptor(globalThis, name);
});
afterEach(() => {
  for (const [name, descriptor] of Object.entries(saved)) {
    if (descriptor) Object.defineProperty(globalThis, name, descriptor);
    else delete globalThis[name];
  }
});

test('on_data_update queues the trial (session id, index, extra fields) and returns at once', async () => {
  const tab = new Tab(new FakeStorage());
  tab.enter();
  const { collectorHooks } = await freshHooks();
  let release;
  const never = new Promise((resolve) => {
    release = resolve;
  }); // the network does not answer
  const uploader = new FakeUploader({ answer: () => never });
  const hooks = collectorHooks({
    participantId: PID,
    uploader,
    extra: { study: 'stroop', trial_type: 'overridden?' },
  });
  assert.equal(typeof hooks.on_data_update, 'function');
  assert.equal(typeof hooks.on_finish, 'function');
  assert.equal(typeof hooks.flush, 'function');
  assert.match(hooks.session.id, /^[A-Za-z0-9_-]{1,64}$/);
  assert.deepEqual({ ...hooks.session, id: 'x' }, { id: 'x', completedTrials: 0, resumed: false, run: 0 });

  const returned = hooks.on_data_update({
    trial_type: 'survey-text',
    trial_index: 0,
    response: { Q0: 'hi' },
  });
  assert.equal(returned, undefined); // nothing for jsPsych to await
  runTrials(hooks, 2, 1);
  assert.deepEqual(
    uploader.trials.map((t) => t.trialIndex),
    [0, 1, 2],
  );
  assert.ok(uploader.trials.every((t) => t.participantId === PID && t.sessionId === hooks.session.id));
  assert.deepEqual(uploader.trials[0].trialData, {
    study: 'stroop',
    trial_type: 'survey-text',
    trial_index: 0,
    response: { Q0: 'hi' },
    session_run: 0,
  });
  release({ status: 'success' });
});

test('the hooks never throw, whatever the uploader or the data does', async () => {
  const tab = new Tab(new FakeStorage());
  tab.enter();
  const { collectorHooks } = await freshHooks();
  const throwing = {
    uploadTrialData() {
      throw new Error('boom');
    },
    uploadSubmissionData() {
      return Promise.reject(new Error('boom'));
    },
    flush() {
      throw new Error('boom');
    },
  };
  const hooks = collectorHooks({ participantId: PID, uploader: throwing });
  for (const value of [
    undefined,
    null,
    7,
    'text',
    [1, 2],
    { trial_index: -1 },
    { trial_index: 'x' },
    { trial_index: 1e9 },
  ]) {
    assert.doesNotThrow(() => hooks.on_data_update(value));
  }
  assert.doesNotThrow(() =>
    hooks.on_finish({
      values() {
        throw new Error('bad collection');
      },
    }),
  );
  assert.doesNotThrow(() => hooks.on_finish());
  const summary = await hooks.flush(50);
  assert.equal(typeof summary.stored, 'number');
  assert.equal(typeof summary.remaining, 'number');
  await settle();

  // Hostile options: no participant, a bad participant or session id: the hooks do nothing, loudly.
  const warnings = [];
  const warn = console.warn;
  console.warn = (text) => warnings.push(text);
  try {
    for (const options of [
      undefined,
      null,
      {},
      { participantId: '../x' },
      { participantId: PID, sessionId: 'a/b' },
    ]) {
      const uploader = new FakeUploader();
      const bad = collectorHooks(options === undefined ? undefined : options && { ...options, uploader });
      assert.doesNotThrow(() => bad.on_data_update({ trial_index: 0 }));
      assert.doesNotThrow(() => bad.on_finish([]));
      assert.deepEqual(uploader.trials, []);
      assert.equal((await bad.flush(10)).remaining, 0);
    }
  } finally {
    console.warn = warn;
  }
  assert.equal(warnings.length, 5);
});

test('storage that throws (cookies blocked) still gives a session id and uploads every trial', async () => {
  globalThis.localStorage = new ThrowingStorage();
  globalThis.sessionStorage = new ThrowingStorage();
  const { collectorHooks } = await freshHooks();
  const uploader = new FakeUploader();
  const hooks = collectorHooks({ participantId: PID, uploader });
  runTrials(hooks, 3);
  assert.deepEqual(
    uploader.trials.map((t) => t.trialIndex),
    [0, 1, 2],
  );
});

test('a reload mid-session resumes the session; its indexes continue where they stopped', async () => {
  const tab = new Tab(new FakeStorage());
  tab.enter();
  let uploader = new FakeUploader();
  const first = (await freshHooks()).collectorHooks({ participantId: PID, uploader });
  runTrials(first, 12);
  tab.close(); // a reload fires pagehide, then loads the page again in the same tab

  tab.window = new EventTarget();
  tab.enter();
  uploader = new FakeUploader();
  const second = (await freshHooks()).collectorHooks({ participantId: PID, uploader });
  assert.equal(second.session.id, first.session.id);
  assert.equal(second.session.completedTrials, 12);
  assert.equal(second.session.resumed, true);
  assert.equal(second.session.run, 1);
  runTrials(second, 18); // jsPsych starts again at trial_index 0; the study skipped the 12 done
  assert.deepEqual(
    uploader.trials.map((t) => t.trialIndex),
    Array.from({ length: 18 }, (_, i) => 12 + i),
  );
  assert.ok(uploader.trials.every((t) => t.trialData.session_run === 1));
});

test('a reload without pagehide (tab killed) still resumes: the tab knows its own session', async () => {
  const tab = new Tab(new FakeStorage());
  tab.enter();
  const first = (await freshHooks()).collectorHooks({ participantId: PID, uploader: new FakeUploader() });
  runTrials(first, 5);
  tab.window = new EventTarget();
  tab.enter();
  const second = (await freshHooks()).collectorHooks({ participantId: PID, uploader: new FakeUploader() });
  assert.equal(second.session.id, first.session.id);
  assert.equal(second.session.completedTrials, 5);
});

test('a closed tab reopened resumes the session; a tab still open is never joined', async () => {
  const local = new FakeStorage();
  const a = new Tab(local);
  a.enter();
  const first = (await freshHooks()).collectorHooks({ participantId: PID, uploader: new FakeUploader() });
  runTrials(first, 12);

  // A second tab while the first is still open: its own session, so no index is written twice.
  const b = new Tab(local);
  b.enter();
  const concurrent = (await freshHooks()).collectorHooks({
    participantId: PID,
    uploader: new FakeUploader(),
  });
  assert.notEqual(concurrent.session.id, first.session.id);
  assert.equal(concurrent.session.completedTrials, 0);
  b.close();

  // The first tab is closed; the participant opens the study link again in a new tab.
  a.close();
  const c = new Tab(local);
  c.enter();
  const uploader = new FakeUploader();
  const reopened = (await freshHooks()).collectorHooks({ participantId: PID, uploader });
  assert.equal(reopened.session.id, first.session.id);
  assert.equal(reopened.session.completedTrials, 12);
  runTrials(reopened, 2);
  assert.deepEqual(
    uploader.trials.map((t) => t.trialIndex),
    [12, 13],
  );
});

test('a crashed tab (no pagehide) leaves its session open: a new tab starts a new session', async () => {
  const local = new FakeStorage();
  const a = new Tab(local);
  a.enter();
  const first = (await freshHooks()).collectorHooks({ participantId: PID, uploader: new FakeUploader() });
  runTrials(first, 3);
  const b = new Tab(local);
  b.enter();
  const next = (await freshHooks()).collectorHooks({ participantId: PID, uploader: new FakeUploader() });
  assert.notEqual(next.session.id, first.session.id);
  assert.equal(next.session.resumed, false);
});

test('trials shown again after a resume are new trials of the session: no index is reused', async () => {
  const tab = new Tab(new FakeStorage());
  tab.enter();
  const uploader = new FakeUploader();
  const hooks = (await freshHooks()).collectorHooks({ participantId: PID, uploader });
  hooks.on_data_update({ trial_index: 0 });
  hooks.on_data_update({ trial_index: 0 }); // a repeated index from a misbehaving timeline
  hooks.on_data_update({ rt: 5 }); // no trial_index (a hand-written study): the next free index
  hooks.on_data_update({ trial_index: 7 }); // a gap is kept (trials without data)
  hooks.on_data_update({ trial_index: 3 });
  assert.deepEqual(
    uploader.trials.map((t) => t.trialIndex),
    [0, 1, 2, 7, 8],
  );
});

test('on_finish uploads the whole dataset as the submission; a reload then starts anew', async () => {
  const tab = new Tab(new FakeStorage());
  tab.enter();
  const uploader = new FakeUploader();
  const trials = [
    { trial_index: 0, rt: 1 },
    { trial_index: 1, rt: 2 },
  ];
  const jsPsych = { data: { get: () => ({ values: () => trials }) } };
  const hooks = (await freshHooks()).collectorHooks({
    participantId: PID,
    uploader,
    extra: { study: 'stroop' },
    jsPsych,
  });
  runTrials(hooks, 2);
  assert.equal(hooks.on_finish({ values: () => trials }), undefined);
  hooks.on_finish(); // without data: from the jsPsych instance
  assert.equal(uploader.submissions.length, 2);
  for (const { participantId, submissionData } of uploader.submissions) {
    assert.equal(participantId, PID);
    assert.deepEqual(submissionData, {
      study: 'stroop',
      sessionId: hooks.session.id,
      sessionRun: 0,
      resumedFromTrial: 0,
      trialCount: 2,
      trials,
    });
  }

  tab.close();
  tab.window = new EventTarget();
  tab.enter();
  const again = (await freshHooks()).collectorHooks({ participantId: PID, uploader: new FakeUploader() });
  assert.notEqual(again.session.id, hooks.session.id);
  assert.equal(again.session.completedTrials, 0);
});

test('a study-supplied session id is used and continued across reloads', async () => {
  const tab = new Tab(new FakeStorage());
  tab.enter();
  const uploader = new FakeUploader();
  const first = (await freshHooks()).collectorHooks({ participantId: PID, uploader, sessionId: 'visit-2' });
  assert.equal(first.session.id, 'visit-2');
  runTrials(first, 2);
  tab.enter();
  const second = (await freshHooks()).collectorHooks({ participantId: PID, uploader, sessionId: 'visit-2' });
  runTrials(second, 1);
  assert.deepEqual(
    uploader.trials.map((t) => [t.sessionId, t.trialIndex]),
    [
      ['visit-2', 0],
      ['visit-2', 1],
      ['visit-2', 2],
    ],
  );
});

test("flush hands the time to the uploader's flush and reports its {stored, remaining}", async () => {
  const tab = new Tab(new FakeStorage());
  tab.enter();
  const uploader = new FakeUploader({ flushAnswer: { stored: 4, remaining: 0 } });
  const hooks = (await freshHooks()).collectorHooks({ participantId: PID, uploader });
  runTrials(hooks, 3);
  hooks.on_finish([{ trial_index: 0 }]);
  assert.deepEqual(await hooks.flush(1000), { stored: 4, remaining: 0 });
  assert.deepEqual(uploader.flushes, [1000]);
});

test("with an uploader without flush, flush waits for this page's own calls", async () => {
  const tab = new Tab(new FakeStorage());
  tab.enter();
  const uploader = new FakeUploader();
  uploader.flush = undefined;
  const hooks = (await freshHooks()).collectorHooks({ participantId: PID, uploader });
  runTrials(hooks, 3);
  hooks.on_finish([{ trial_index: 0 }]);
  assert.deepEqual(await hooks.flush(1000), { stored: 4, remaining: 0 });
});

test('flush resolves when the time is up, with what is still waiting', async () => {
  const tab = new Tab(new FakeStorage());
  tab.enter();
  const uploader = new FakeUploader({ answer: () => new Promise(() => {}) });
  uploader.getQueueState = () => ({ items: [{}, {}, {}] });
  const hooks = (await freshHooks()).collectorHooks({ participantId: PID, uploader });
  runTrials(hooks, 3);
  uploader.flush = () => new Promise(() => {}); // an uploader whose flush never ends
  const summary = await hooks.flush(30);
  assert.equal(summary.stored, 0);
  assert.equal(summary.remaining, 3);
  assert.match(summary.error, /30 ms/);
});

test('the real uploader (createUploader): trials and the submission reach the collector', async () => {
  const tab = new Tab(new FakeStorage());
  globalThis.localStorage = tab.local;
  globalThis.sessionStorage = tab.session;
  const collector = fakeCollector();
  const { collectorHooks } = await freshHooks();
  const hooks = collectorHooks({
    participantId: PID,
    collectorUrl: 'http://collector.test',
    uploaderOptions: { storage: tab.local, fetch: collector.fetch, locks: null, statusIntervalMs: 0 },
  });
  runTrials(hooks, 5);
  hooks.on_finish([{ trial_index: 0 }]);
  const summary = await hooks.flush(5000);
  assert.equal(summary.remaining, 0);
  const uploads = [...collector.stored.values()];
  const trials = uploads.filter((u) => u.uploadType === 'trial');
  assert.deepEqual(
    trials.map((u) => u.trialIndex).sort((x, y) => x - y),
    [0, 1, 2, 3, 4],
  );
  assert.ok(trials.every((u) => u.sessionId === hooks.session.id && u.trialData.trial_type));
  const submissions = uploads.filter((u) => u.uploadType === 'submission');
  assert.equal(submissions.length, 1);
  assert.equal(submissions[0].submissionData.sessionId, hooks.session.id);
});
