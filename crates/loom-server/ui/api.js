// The API client: the key (kept in sessionStorage, sent as `Authorization: Bearer` on every call),
// JSON requests, and a run's event stream as Server-Sent Events read through fetch (EventSource
// cannot send headers), resumed with Last-Event-ID.

const KEY = "loom.key";

export const getKey = () => sessionStorage.getItem(KEY);
export const setKey = (key) => sessionStorage.setItem(KEY, key);
export const clearKey = () => sessionStorage.removeItem(KEY);

/** An error answered by the server: its HTTP status, code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Called when the server refuses the key (401): the app goes back to the key form. */
let onUnauthorized = () => {};
export const setUnauthorizedHandler = (f) => {
  onUnauthorized = f;
};

async function failure(res) {
  let code = "http_" + res.status;
  let message = res.statusText || "request failed";
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch (_) {
    // Not JSON: keep the status text.
  }
  if (res.status === 401) {
    clearKey();
    onUnauthorized(message);
  }
  return new ApiError(res.status, code, message);
}

/** A JSON request with the key; throws ApiError for any status but 2xx. */
export async function api(path, { method = "GET", body, key = getKey(), signal } = {}) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (!res.ok) throw await failure(res);
  return res.json();
}

/** Whether the server runs without authentication (`[server] auth = false`): data without a key. */
export async function authIsOff() {
  try {
    const res = await fetch("/runs?limit=1", { cache: "no-store" });
    return res.ok;
  } catch (_) {
    return false;
  }
}

/** Checks a key without keeping it: resolves when the server accepts it. */
export async function checkKey(key) {
  const res = await fetch("/runs?limit=1", { headers: { Authorization: "Bearer " + key }, cache: "no-store" });
  if (res.status === 401) throw new ApiError(401, "unauthorized", "This key was refused.");
  if (!res.ok) throw new ApiError(res.status, "http_" + res.status, "The server answered " + res.status + ".");
}

/** Splits an SSE buffer into complete frames; returns [frames, rest]. */
export function parseFrames(buffer) {
  const frames = [];
  const normalized = buffer.replace(/\r\n?/g, "\n");
  let start = 0;
  let end;
  while ((end = normalized.indexOf("\n\n", start)) !== -1) {
    const frame = { id: null, event: "message", data: "" };
    const data = [];
    for (const line of normalized.slice(start, end).split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") frame.id = value;
      else if (field === "event") frame.event = value;
      else if (field === "data") data.push(value);
    }
    frame.data = data.join("\n");
    if (frame.id !== null || data.length) frames.push(frame);
    start = end + 2;
  }
  return [frames, normalized.slice(start)];
}

/**
 * Streams a run's events after `after` (a seq, or null for all) to `onEvent(event)` until the
 * server ends the stream or `signal` aborts. Resolves with the last seq seen.
 */
export async function streamEvents(runId, after, onEvent, signal) {
  const headers = { Accept: "text/event-stream" };
  if (getKey()) headers.Authorization = "Bearer " + getKey();
  if (after !== null && after !== undefined) headers["Last-Event-ID"] = String(after);
  const res = await fetch("/runs/" + encodeURIComponent(runId) + "/events", { headers, signal, cache: "no-store" });
  if (!res.ok) throw await failure(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let last = after;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const [frames, rest] = parseFrames(buffer);
    buffer = rest;
    for (const frame of frames) {
      if (!frame.data) continue;
      let event;
      try {
        event = JSON.parse(frame.data);
      } catch (_) {
        continue;
      }
      last = event.seq;
      onEvent(event);
    }
  }
  return last;
}

export const TERMINAL = new Set(["run.completed", "run.failed", "run.cancelled", "run.interrupted", "run.suspended"]);
export const FINAL_STATES = new Set(["completed", "failed", "cancelled", "interrupted"]);
