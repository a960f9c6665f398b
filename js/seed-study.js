/**
 * seed-study.js: the study app's own localStorage keys, gathered into its status and submission
 * uploads and filled in by restore (docs/browser-module.md §2). data-uploader.js uses these by
 * default; a study with other fields passes its own `collectFields` and `restoreFields`.
 */

import { readRaw, writeRaw } from './collector-common.js';

/** The study's localStorage keys and the request fields they become; the row
 *  `participant_response_{id}` -> `participantResponses` is added per participant. */
export const STUDY_KEYS = Object.freeze(
  [
    ['study_has_seen_participant_setup', 'hasSeenParticipantSetup'],
    ['study_has_seen_welcome', 'hasSeenWelcome'],
    ['study_has_seen_tutorial', 'hasSeenTutorial'],
    ['study_tutorial_completed', 'tutorialCompleted'],
    ['study_weekly_session_count', 'weeklySessionCount'],
    ['study_week_start_date', 'weekStartDate'],
    ['study_last_awesf_date', 'lastAwesfDate'],
    ['study_total_sessions_started', 'totalSessionsStarted'],
    ['study_total_sessions_completed', 'totalSessionsCompleted'],
    ['study_total_session_time', 'totalSessionTime'],
    ['study_session_history', 'sessionHistory'],
    ['study_current_session_start', 'currentSessionStart'],
    ['selectedVolcano', 'selectedVolcano'],
    ['selectedMode', 'selectedMode'],
  ].map((row) => Object.freeze(row)),
);

const HOUR_MS = 3600000;

const rowsFor = (participantId) => [
  ...STUDY_KEYS,
  [`participant_response_${participantId}`, 'participantResponses'],
];

/**
 * One localStorage string back to its type (booleans, numbers, null, JSON); what does not parse is
 * returned as the string.
 * @param {string} raw
 * @returns {*}
 */
export function parseStoredValue(raw) {
  if (typeof raw !== 'string') return raw;
  try {
    const value = JSON.parse(raw);
    return typeof value === 'number' && !Number.isFinite(value) ? raw : value;
  } catch {
    return raw;
  }
}

/**
 * The request fields of the study's keys present in `storage`, typed, with
 * `totalSessionTimeHours` derived; `{}` when the storage cannot be read.
 * @param {string} participantId
 * @param {Storage} storage
 * @returns {Object<string, *>}
 */
export function collectStudyFields(participantId, storage) {
  const fields = {};
  for (const [key, field] of rowsFor(participantId)) {
    const raw = readRaw(storage, key);
    if (typeof raw === 'string') fields[field] = parseStoredValue(raw);
  }
  if (typeof fields.totalSessionTime === 'number') {
    fields.totalSessionTimeHours = fields.totalSessionTime / HOUR_MS;
  }
  return fields;
}

/**
 * Write the study keys `userStatus` has and `storage` lacks; a key present, or unreadable, is
 * never written over.
 * @returns {Object<string, string>} each key written and the string written
 */
export function restoreStudyFields(participantId, userStatus, storage) {
  const restored = {};
  for (const [key, field] of rowsFor(participantId)) {
    const value = userStatus[field];
    if (value === undefined || readRaw(storage, key) !== null) continue;
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    if (writeRaw(storage, key, text)) restored[key] = text;
  }
  return restored;
}
