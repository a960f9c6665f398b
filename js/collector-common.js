/**
 * collector-common.js: what data-uploader.js and jspsych-collector.js share: the collector's
 * contract constants, ids, and storage access that never throws (docs/browser-module.md).
 */

// --- the collector's contract (docs/api.md); tests/test_js_contract.py checks each against the
// collector's OpenAPI description.
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/; // participant, session and study ids
export const KEY_PATTERN = /^[A-Za-z0-9_-]{16,256}$/; // participantKey
export const MAX_TRIAL_INDEX = 100000;
export const MAX_BATCH_ITEMS = 50;
export const MAX_UPLOAD_BYTES = 4194304; // the collector's default body limit
export const UPLOAD_TYPES = ['submission', 'status', 'trial'];

export const ID_RULE = '1 to 64 letters, digits, _ or -';

/** `fn()`, or `fallback` when it throws: for storage, the page and the study's callbacks. */
export function attempt(fn, fallback = undefined) {
  try {
    return fn();
  } catch {
    return fallback;
  }
}

export function errorText(err) {
  try {
    return err && err.message ? String(err.message) : String(err);
  } catch {
    return 'unknown error';
  }
}

export const isPlainObject = (value) => Boolean(value) && typeof value === 'object' && !Array.isArray(value);

/** A random UUID; where crypto.randomUUID is missing (insecure contexts), one of the same shape. */
export function newId(crypto = globalThis.crypto, random = Math.random) {
  try {
    if (crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  } catch {
    // insecure context
  }
  let hex = '';
  for (let i = 0; i < 4; i += 1)
    hex += Math.floor(random() * 2 ** 32)
      .toString(16)
      .padStart(8, '0');
  return hex.replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');
}

/** `globalThis[name]` (localStorage, sessionStorage), null where the getter throws (sandboxed iframes). */
export function globalStorage(name) {
  try {
    return globalThis[name] || null;
  } catch {
    return null;
  }
}

/** The string under `key`: null when absent, undefined when the storage cannot be read. */
export function readRaw(storage, key) {
  try {
    if (!storage) return undefined;
    const value = storage.getItem(key);
    return value === null || value === undefined ? null : String(value);
  } catch {
    return undefined;
  }
}

export function writeRaw(storage, key, text) {
  try {
    storage.setItem(key, text);
    return true;
  } catch {
    return false;
  }
}

export function removeRaw(storage, key) {
  try {
    storage.removeItem(key);
  } catch {
    // unreadable storage holds nothing to remove
  }
}

export function readJson(storage, key) {
  try {
    return JSON.parse(readRaw(storage, key)) ?? null;
  } catch {
    return null;
  }
}
