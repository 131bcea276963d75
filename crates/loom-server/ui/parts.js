// Shared pieces: the `html` template tag, badges, formatting, code blocks and a polling hook.

import { h } from "./vendor/preact.mjs";
import { useEffect, useRef, useState } from "./vendor/hooks.mjs";
import htm from "./vendor/htm.mjs";

export const html = htm.bind(h);

// Line icons (24×24, stroked; shapes after Feather's, MIT).
const ICONS = {
  runs: html`<polygon points="6 4 20 12 6 20 6 4" />`,
  approvals: html`<path d="M22 11.1V12a10 10 0 1 1-5.9-9.1" /><polyline points="22 4 12 14 9 11" />`,
  sessions: html`<path d="M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z" />`,
  usage: html`<line x1="12" y1="20" x2="12" y2="10" /><line x1="18" y1="20" x2="18" y2="4" /><line x1="6" y1="20" x2="6" y2="15" />`,
  audit: html`<path d="M12 22s8-4 8-10V5l-8-3-8 3v7c0 6 8 10 8 10z" /><polyline points="9 12 11 14 15 10" />`,
  menu: html`<line x1="3" y1="6" x2="21" y2="6" /><line x1="3" y1="12" x2="21" y2="12" /><line x1="3" y1="18" x2="21" y2="18" />`,
  tool: html`<path d="M14.7 6.3a1 1 0 0 0 0 1.4l1.6 1.6a1 1 0 0 0 1.4 0l3.77-3.77a6 6 0 0 1-7.94 7.94l-6.91 6.91a2.12 2.12 0 0 1-3-3l6.91-6.91a6 6 0 0 1 7.94-7.94l-3.76 3.76z" />`,
  hand: html`<circle cx="12" cy="12" r="10" /><line x1="12" y1="8" x2="12" y2="12" /><line x1="12" y1="16" x2="12.01" y2="16" />`,
};

/** A line icon. */
export function Icon({ name, size = 16 }) {
  return html`<svg class="icon" width=${size} height=${size} viewBox="0 0 24 24" fill="none" stroke="currentColor"
    stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">${ICONS[name]}</svg>`;
}

const STATE_LABEL = {
  queued: "Queued",
  running: "Running",
  suspended: "Needs approval",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
  interrupted: "Interrupted",
};

/** A run state as a coloured badge. */
export function Badge({ state }) {
  const label = STATE_LABEL[state] || state || "unknown";
  return html`<span class=${"badge badge-" + (state || "unknown")} data-state=${state}>
    <span class="dot"></span>${label}
  </span>`;
}

/** A long id shortened to its prefix and random tail (ids share their time-ordered head). */
export function shortId(id) {
  if (!id) return "—";
  if (id.length <= 16) return id;
  const cut = id.indexOf("_");
  const prefix = cut > 0 && cut < 10 ? id.slice(0, cut + 1) : "";
  return prefix + "…" + id.slice(-8);
}

export function timeAgo(at) {
  if (!at) return "—";
  const seconds = Math.round((Date.now() - new Date(at).getTime()) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 60) return seconds + "s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h ago";
  return new Date(at).toLocaleDateString();
}

export function clock(at) {
  if (!at) return "";
  const d = new Date(at);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function duration(start, end) {
  if (!start) return "—";
  const ms = (end ? new Date(end) : new Date()).getTime() - new Date(start).getTime();
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + "m " + Math.round((ms % 60000) / 1000) + "s";
}

export const fmtInt = (n) => (n || 0).toLocaleString("en-US");

export function fmtCost(usd) {
  if (!usd) return "$0.00";
  return usd < 0.01 ? "$" + usd.toFixed(4) : "$" + usd.toFixed(2);
}

export function totalTokens(u) {
  if (!u) return 0;
  return (u.input_tokens || 0) + (u.cached_input_tokens || 0) + (u.cache_write_tokens || 0) + (u.output_tokens || 0);
}

/** The text of a run input: a prompt string or an input object. */
export function inputText(input) {
  if (input === null || input === undefined) return "";
  if (typeof input === "string") return input;
  if (input.prompt) return input.prompt;
  if (input.task) return typeof input.task === "string" ? input.task : JSON.stringify(input.task);
  if (input.parts) return input.parts.map((p) => p.text || "[" + p.type + "]").join(" ");
  return JSON.stringify(input);
}

/** JSON text pretty-printed when it parses, else as it is. */
export function pretty(value) {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch (_) {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

export function Code({ value, cls = "" }) {
  return html`<pre class=${"code " + cls}>${pretty(value)}</pre>`;
}

export function Empty({ title, children }) {
  return html`<div class="empty"><div class="empty-title">${title}</div><div class="muted">${children}</div></div>`;
}

export function ErrorNote({ error }) {
  if (!error) return null;
  return html`<div class="note note-error" role="alert">${error.message || String(error)}</div>`;
}

/**
 * Calls `load` now and every `ms` while the page is visible; returns [data, error, reload].
 * `deps` restart it (a new filter).
 */
export function usePoll(load, ms, deps) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const tick = useRef(0);
  const reload = () => {
    const mine = ++tick.current;
    load().then(
      (d) => {
        if (mine === tick.current) {
          setData(d);
          setError(null);
        }
      },
      (e) => {
        if (mine === tick.current) setError(e);
      },
    );
  };
  useEffect(() => {
    setData(null);
    reload();
    if (!ms) return undefined;
    const timer = setInterval(() => {
      if (document.visibilityState === "visible") reload();
    }, ms);
    return () => {
      clearInterval(timer);
      tick.current++;
    };
  }, deps);
  return [data, error, reload];
}
