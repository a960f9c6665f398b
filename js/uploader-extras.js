// What data-uploader.js loads on first use: calls a study makes once, if at all, so a page that
// never makes them never downloads them (docs/browser-module.md, "Loaded on demand"). Each takes
// the instance's internals (`inner` in makeUploader) first, then the public arguments.

import { attempt, errorText, isPlainObject } from './collector-common.js';

export function downloadBackup({ queued, get, now, BODY }, participantId) {
  const uploads = queued()
    .filter((item) => participantId === undefined || item.participantId === String(participantId))
    .map((item) => get(BODY + item.uploadId))
    .filter(Boolean)
    .map((text) => attempt(() => JSON.parse(text), text));
  const filename = `backup-${participantId ?? 'all'}-${new Date(now()).toISOString().slice(0, 10)}.json`;
  const text = JSON.stringify({ uploads }, null, 1);
  attempt(() => {
    const link = document.createElement('a');
    link.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
    link.download = filename;
    link.click();
  });
  return { filename, text, count: uploads.length };
}

export async function restoreUserStatus(inner, participantId) {
  const { config, store, refusal, keyFor, start, request, forget } = inner;
  const restored = {};
  const answer = (status, extra) => ({ status, participantId, restored, ...extra });
  try {
    const refused = refusal(participantId);
    if (refused) return { ...refused, restored };
    const id = (participantId = String(participantId));
    start();
    const key = keyFor(id) || undefined;
    const body = JSON.stringify({
      participantId: id,
      participantKey: key,
      studyId: config.studyId || undefined,
    });
    // text/plain: no CORS preflight
    const outcome = await request('/api/user-status', body, false, 'text/plain');
    if (outcome.kind === 'erased') return { ...(forget(id), refusal(id)), restored }; // refused from now on
    if (outcome.httpStatus === 404 && !outcome.reason) return answer('not-found');
    const status = outcome.kind === 'ok' && outcome.json.userStatus;
    if (!isPlainObject(status)) return answer('error', { error: outcome.error, reason: outcome.reason });
    Object.assign(restored, config.restoreFields(id, status, store()));
    return answer('success');
  } catch (err) {
    return answer('error', { error: errorText(err) });
  }
}
