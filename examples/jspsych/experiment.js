// A small real jsPsych 8 experiment (keyboard-response trials, then a survey) that saves every
// trial to the collector as it finishes, resumes after a reload, and flushes before redirecting.
//
// URL parameters:
//   collector     the collector's origin (default: this page's origin)
//   participant   the participant id (also read as PROLIFIC_PID); default: a random one, kept in the URL
//   trials        number of keyboard-response trials before the survey (default 10)
//   done          where to redirect at the end (default done.html, standing in for Prolific)
//   flushMs       how long to wait for the uploads before redirecting (default 5000)
//   auto          ms after which a keyboard trial ends on its own (for benchmarks; default: wait for a key)
//   measure       1: record the main-thread time of each on_data_update in window.experiment.timings
//   retryBaseMs, retryMaxMs, timeoutMs, statusIntervalMs   passed to the uploader
/* global initJsPsych, jsPsychHtmlKeyboardResponse, jsPsychSurveyText -- jsPsych's browser builds */
const params = new URLSearchParams(location.search);
const collectorUrl = params.get('collector') || location.origin;
let participantId = params.get('participant') || params.get('PROLIFIC_PID');
if (!participantId) {
  participantId = `DEMO${Math.random().toString(36).slice(2, 8).toUpperCase()}`;
  params.set('participant', participantId); // so a reload keeps the participant, and resumes
  history.replaceState(null, '', `${location.pathname}?${params}`);
}
const trialCount = Math.max(1, Number(params.get('trials')) || 10);
const flushMs = Number(params.get('flushMs')) || 5000;
const autoMs = Number(params.get('auto')) || null;
const uploaderOptions = {};
for (const name of ['retryBaseMs', 'retryMaxMs', 'timeoutMs', 'statusIntervalMs']) {
  if (params.has(name)) uploaderOptions[name] = Number(params.get(name));
}

// Imported from the collector, which serves the hooks and the uploader module they import.
const { collectorHooks } = await import(`${collectorUrl}/js/jspsych-collector.js`);
const hooks = collectorHooks({
  participantId,
  collectorUrl,
  extra: { study: 'jspsych-example' },
  uploaderOptions,
});

const experiment = { hooks, session: hooks.session, participantId, timings: [], flushResult: null };
window.experiment = experiment;
let onDataUpdate = hooks.on_data_update;
if (params.get('measure') === '1') {
  onDataUpdate = (data) => {
    const started = performance.now();
    hooks.on_data_update(data);
    experiment.timings.push(performance.now() - started);
  };
}

const jsPsych = initJsPsych({ ...hooks, on_data_update: onDataUpdate });
experiment.jsPsych = jsPsych;

const timeline = [];
for (let i = 0; i < trialCount; i += 1) {
  timeline.push({
    type: jsPsychHtmlKeyboardResponse,
    stimulus: `<p id="stim" data-trial="${i}">Trial ${i + 1} of ${trialCount}: press F or J</p>`,
    choices: ['f', 'j'],
    trial_duration: autoMs,
    data: { task: 'response', stimulus_number: i },
  });
}
timeline.push({
  type: jsPsychSurveyText,
  questions: [{ prompt: 'How did that go?', name: 'feedback', placeholder: 'a few words' }],
  data: { task: 'survey', stimulus_number: trialCount },
});

// After a reload (or the tab reopened), skip what this session already recorded: every node of
// this timeline is one trial, so the session's completed trials are its first nodes.
const remaining = timeline.slice(hooks.session.completedTrials);
document.body.dataset.ready = 'true';
if (remaining.length) await jsPsych.run(remaining);
else hooks.on_finish(jsPsych.data.get()); // every trial was recorded before a reload: only the end is left

document.body.innerHTML = '<p id="saving">Saving your answers…</p>';
experiment.flushResult = await hooks.flush(flushMs);
const done = new URL(params.get('done') || 'done.html', location.href);
done.searchParams.set('cc', 'C1EXAMPLE');
location.href = done.href;
