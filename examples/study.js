// The example study: a stand-in for the real study app, wired to the uploader the way the study
// should be. Query parameters: collector (its origin) and any numeric configureUploader option.
const params = new URLSearchParams(location.search);
const collectorUrl = params.get('collector') || location.origin;
const $ = (id) => document.getElementById(id);
const participant = () => $('participant').value.trim();

if (params.get('pid')) $('participant').value = params.get('pid');

// Imported from the collector itself, so the page always runs the module the collector serves.
const uploader = await import(`${collectorUrl}/js/data-uploader.js`);

const options = { collectorUrl, participantId: participant(), onEvent: () => showQueue() };
for (const name of [
  'statusIntervalMs',
  'retryBaseMs',
  'retryMaxMs',
  'timeoutMs',
  'maxQueueItems',
  'maxBatchItems',
]) {
  if (params.has(name)) options[name] = Number(params.get(name));
}
if (params.get('crossTabLock') === 'false') options.crossTabLock = false;
uploader.configureUploader(options);

// --- the study app's own bookkeeping (in the real study this already exists)

let submissionNumber = 0;
const readNumber = (key) => Number(localStorage.getItem(key)) || 0;

function completeSession() {
  const started = Date.now() - 20 * 60 * 1000;
  localStorage.setItem('study_has_seen_participant_setup', 'true');
  localStorage.setItem('study_has_seen_welcome', 'true');
  localStorage.setItem('study_has_seen_tutorial', 'true');
  localStorage.setItem('study_tutorial_completed', 'true');
  localStorage.setItem('study_weekly_session_count', String(readNumber('study_weekly_session_count') + 1));
  localStorage.setItem('study_week_start_date', new Date().toISOString().slice(0, 10));
  localStorage.setItem(
    'study_total_sessions_started',
    String(readNumber('study_total_sessions_started') + 1),
  );
  localStorage.setItem(
    'study_total_sessions_completed',
    String(readNumber('study_total_sessions_completed') + 1),
  );
  localStorage.setItem(
    'study_total_session_time',
    String(readNumber('study_total_session_time') + 20 * 60 * 1000),
  );
  let history = [];
  try {
    history = JSON.parse(localStorage.getItem('study_session_history')) || [];
  } catch {
    /* start over */
  }
  history.push({ start: started, end: Date.now() });
  localStorage.setItem('study_session_history', JSON.stringify(history));
  localStorage.setItem('study_current_session_start', String(started));
  localStorage.setItem('selectedVolcano', 'Okmok');
  localStorage.setItem('selectedMode', 'study');
}

function jsonDump(completion) {
  submissionNumber += 1;
  return {
    submissionNumber,
    completion,
    submittedAt: new Date().toISOString(),
    regions: [{ id: 1, start: 12.5, end: 14.25, label: 'tremor' }],
    features: { selected: ['amplitude', 'frequency'] },
    surveyResponses: { q1: 'yes', q2: 4 },
    timing: { pageLoad: performance.timeOrigin },
  };
}

// --- the integration points

async function show(promise) {
  const result = await promise; // the uploader never rejects
  $('last-result').textContent = JSON.stringify(result, null, 2);
  window.studyDemo.results.push(result);
  showQueue();
  return result;
}

$('complete-session').onclick = () => completeSession();
$('submit-qualtrics').onclick = () => {
  // ... the Qualtrics submission succeeded; then:
  show(uploader.uploadSubmissionData(participant(), jsonDump('qualtrics')));
};
$('submit-timeout').onclick = () => {
  // ... the session timed out and was submitted as such; then:
  show(uploader.uploadSubmissionData(participant(), jsonDump('timeout')));
};
$('upload-status').onclick = () => show(uploader.uploadUserStatus(participant()));
$('restore-status').onclick = () => show(uploader.restoreUserStatus(participant()));
$('flush-queue').onclick = () => show(uploader.flushQueue());
// The last resort when uploads do not get through: a file the participant can send the team.
$('download-backup').onclick = () => uploader.downloadBackup(participant());
$('participant').onchange = () => uploader.configureUploader({ participantId: participant() });

function showQueue() {
  const state = uploader.getQueueState();
  $('queue-count').textContent = String(state.items.length);
  $('next-try').textContent = state.nextAttemptAt ? new Date(state.nextAttemptAt).toLocaleTimeString() : '-';
  $('queue').replaceChildren(
    ...state.items.map((item) => {
      const row = document.createElement('tr');
      for (const value of [item.uploadType, item.participantId, item.timestamp, item.tries, item.uploadId]) {
        const cell = document.createElement('td');
        cell.textContent = String(value);
        row.append(cell);
      }
      return row;
    }),
  );
  $('network').textContent = navigator.onLine ? '(online)' : '(offline)';
}

addEventListener('online', showQueue);
addEventListener('offline', showQueue);
setInterval(showQueue, 1000);
window.studyDemo = { uploader, results: [], showQueue };
showQueue();
document.body.dataset.ready = 'true';
