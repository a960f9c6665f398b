// Key gathering and type restoration: every row of the study-key table (docs/api.md), and restore.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { parseStoredValue } from '../../js/data-uploader.js';
import { FakeStorage, KEY_PREFIX, jsonAnswer, sentUploads, setUp } from './fakes.mjs';

const PID = 'P001ABC';

// [localStorage key, stored string, request field, value expected in the request]
const ROWS = [
  ['study_has_seen_participant_setup', 'true', 'hasSeenParticipantSetup', true],
  ['study_has_seen_welcome', 'false', 'hasSeenWelcome', false],
  ['study_has_seen_tutorial', 'true', 'hasSeenTutorial', true],
  ['study_tutorial_completed', 'true', 'tutorialCompleted', true],
  ['study_weekly_session_count', '2', 'weeklySessionCount', 2],
  ['study_week_start_date', '2025-11-17', 'weekStartDate', '2025-11-17'],
  ['study_last_awesf_date', '2025-11-18', 'lastAwesfDate', '2025-11-18'],
  ['study_total_sessions_started', '5', 'totalSessionsStarted', 5],
  ['study_total_sessions_completed', '4', 'totalSessionsCompleted', 4],
  ['study_total_session_time', '7200000', 'totalSessionTime', 7200000],
  ['study_session_history', '[{"start":1,"end":2}]', 'sessionHistory', [{ start: 1, end: 2 }]],
  ['study_current_session_start', '1763562645123', 'currentSessionStart', 1763562645123],
  ['selectedVolcano', 'Okmok', 'selectedVolcano', 'Okmok'],
  ['selectedMode', 'study', 'selectedMode', 'study'],
  [
    `participant_response_${PID}`,
    '{"q1":"yes","q2":[1,2]}',
    'participantResponses',
    { q1: 'yes', q2: [1, 2] },
  ],
];

for (const [key, raw, field, expected] of ROWS) {
  test(`gathers ${key} as ${field}`, async () => {
    const { uploader, collector } = setUp({ storage: new FakeStorage({ [key]: raw }) });
    const answer = await uploader.uploadUserStatus(PID);
    assert.equal(answer.status, 'success');
    const [sent] = sentUploads(collector);
    assert.deepEqual(sent[field], expected);
    assert.equal(sent.participantId, PID);
    assert.equal(sent.uploadType, 'status');
  });
}

test('the whole table at once, with totalSessionTimeHours derived and nothing else added', async () => {
  const storage = new FakeStorage(Object.fromEntries(ROWS.map(([key, raw]) => [key, raw])));
  storage.setItem('unrelated_key', 'not sent');
  const before = storage.snapshot();
  const { uploader, collector } = setUp({ storage });
  await uploader.uploadSubmissionData(PID, { regions: [1], completed: true });
  const [sent] = sentUploads(collector);
  for (const [, , field, expected] of ROWS) assert.deepEqual(sent[field], expected, field);
  assert.equal(sent.totalSessionTimeHours, 2);
  assert.deepEqual(sent.submissionData, { regions: [1], completed: true });
  assert.equal(sent.uploadType, 'submission');
  assert.match(sent.uploadId, /^[0-9a-f-]{36}$/);
  assert.equal(sent.timestamp, '2026-11-25T10:00:00.000Z');
  const expectedFields = [
    'participantId',
    'participantKey',
    'timestamp',
    'uploadId',
    'uploadType',
    'submissionData',
    'totalSessionTimeHours',
    ...ROWS.map((row) => row[2]),
  ];
  assert.deepEqual(Object.keys(sent).sort(), expectedFields.sort());
  // The study's keys were only read; after a stored upload the module keeps only the participant's key.
  assert.deepEqual(storage.snapshot(), { ...before, [KEY_PREFIX + PID]: sent.participantKey });
});

test('a value that does not parse is sent as its string, never dropped', async () => {
  const storage = new FakeStorage({
    study_session_history: '[{"start":1,',
    study_weekly_session_count: 'two',
    study_total_session_time: 'lots',
    [`participant_response_${PID}`]: '{not json',
    study_tutorial_completed: 'True',
    selectedVolcano: '',
  });
  const { uploader, collector } = setUp({ storage });
  await uploader.uploadUserStatus(PID);
  const [sent] = sentUploads(collector);
  assert.equal(sent.sessionHistory, '[{"start":1,');
  assert.equal(sent.weeklySessionCount, 'two');
  assert.equal(sent.totalSessionTime, 'lots');
  assert.equal(sent.totalSessionTimeHours, undefined);
  assert.equal(sent.participantResponses, '{not json');
  assert.equal(sent.tutorialCompleted, 'True');
  assert.equal(sent.selectedVolcano, '');
});

test('absent keys are left out; parseStoredValue keeps non-finite numbers as strings', () => {
  const { uploader } = setUp({ storage: new FakeStorage({ selectedMode: 'study' }) });
  assert.deepEqual(uploader.collectStudyFields(PID), { selectedMode: 'study' });
  assert.equal(parseStoredValue('1e999'), '1e999');
  assert.equal(parseStoredValue('null'), null);
  assert.equal(parseStoredValue('"quoted"'), 'quoted');
  assert.equal(parseStoredValue('007'), '007');
});

/** A collector whose restore endpoint answers `answer`; it records every call. */
function restoringCollector(answer) {
  const collector = {
    calls: [],
    fetch: async (url, init) => {
      collector.calls.push({ url, init, body: init.body === undefined ? undefined : JSON.parse(init.body) });
      return typeof answer === 'function' ? answer() : answer.clone();
    },
  };
  return collector;
}

test('restoreUserStatus posts the key in a text/plain body and fills in missing keys only', async () => {
  const storage = new FakeStorage({ study_weekly_session_count: '9', selectedVolcano: 'Etna' });
  const userStatus = {
    hasSeenWelcome: true,
    weeklySessionCount: 2,
    weekStartDate: '2025-11-17',
    sessionHistory: [{ a: 1 }],
    selectedVolcano: 'Okmok',
    totalSessionTimeHours: 2,
    serverReceivedAt: 'x',
    uploadId: 'u',
  };
  const collector = restoringCollector(
    jsonAnswer(200, { status: 'success', participantId: PID, userStatus }),
  );
  const { uploader } = setUp({ storage, collector });
  const result = await uploader.restoreUserStatus(PID);
  assert.equal(result.status, 'success');
  assert.deepEqual(result.restored, {
    study_has_seen_welcome: 'true',
    study_week_start_date: '2025-11-17',
    study_session_history: '[{"a":1}]',
  });
  assert.equal(storage.getItem('study_weekly_session_count'), '9');
  assert.equal(storage.getItem('selectedVolcano'), 'Etna');
  const [call] = collector.calls;
  assert.equal(call.url, 'http://collector.test/api/user-status'); // the ID is not in the URL
  assert.equal(call.init.method, 'POST');
  assert.equal(call.init.headers['Content-Type'], 'text/plain'); // no preflight
  assert.deepEqual(call.body, { participantId: PID, participantKey: storage.getItem(KEY_PREFIX + PID) });
  assert.match(call.body.participantKey, /^[A-Za-z0-9_-]{43}$/);
  // What it wrote gathers back to the same typed values.
  assert.deepEqual(uploader.collectStudyFields(PID).sessionHistory, [{ a: 1 }]);
});

test('restore: unknown participant (or wrong key), collector unreachable, storage unreadable', async () => {
  const notFound = jsonAnswer(404, { status: 'error', error: 'no status stored for this participant' });
  let { uploader } = setUp({ collector: restoringCollector(notFound) });
  assert.deepEqual(await uploader.restoreUserStatus(PID), {
    status: 'not-found',
    participantId: PID,
    restored: {},
  });

  ({ uploader } = setUp({
    collector: restoringCollector(() => {
      throw new TypeError('Failed to fetch');
    }),
  }));
  const offline = await uploader.restoreUserStatus(PID);
  assert.equal(offline.status, 'error');
  assert.deepEqual(offline.restored, {});

  const storage = new FakeStorage();
  storage.getItem = () => {
    throw new Error('SecurityError');
  };
  const answer = jsonAnswer(200, { status: 'success', userStatus: { hasSeenWelcome: true } });
  const collector = restoringCollector(answer);
  ({ uploader } = setUp({ storage, collector }));
  // A key it cannot read might hold a value: it is never written over.
  assert.deepEqual((await uploader.restoreUserStatus(PID)).restored, {});
  assert.equal(storage.map.size, 0);
  // Storage it cannot read keeps no key either: none is sent rather than one this browser would lose.
  assert.deepEqual(collector.calls[0].body, { participantId: PID });
});
