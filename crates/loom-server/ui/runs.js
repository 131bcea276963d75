// The runs list: filters by user and state, refreshed every second, and a form to start a run.

import { useState } from "./vendor/hooks.mjs";
import { api } from "./api.js";
import {
  Badge,
  Empty,
  ErrorNote,
  duration,
  fmtInt,
  html,
  inputText,
  shortId,
  timeAgo,
  totalTokens,
  usePoll,
} from "./parts.js";

const STATES = ["", "queued", "running", "suspended", "completed", "failed", "cancelled", "interrupted"];

function StartRun({ onStarted }) {
  const [open, setOpen] = useState(false);
  const [input, setInput] = useState("");
  const [user, setUser] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  if (!open) {
    return html`<button class="btn btn-primary" id="new-run" onClick=${() => setOpen(true)}>New run</button>`;
  }
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = { input };
      if (user.trim()) body.user_id = user.trim();
      const run = await api("/runs", { method: "POST", body });
      setInput("");
      setOpen(false);
      onStarted(run);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="card start-run" onSubmit=${submit}>
    <div class="card-title">Start a run</div>
    <${ErrorNote} error=${error} />
    <div class="row">
      <input class="grow" placeholder="What should the agent do?" value=${input}
        onInput=${(e) => setInput(e.currentTarget.value)} />
      <input class="narrow" placeholder="user (optional)" value=${user} onInput=${(e) => setUser(e.currentTarget.value)} />
      <button class="btn btn-primary" type="submit" disabled=${busy || !input.trim()}>Start</button>
      <button class="btn btn-ghost" type="button" onClick=${() => setOpen(false)}>Cancel</button>
    </div>
  </form>`;
}

export function RunsView() {
  const [user, setUser] = useState("");
  const [userFilter, setUserFilter] = useState("");
  const [state, setState] = useState("");
  const query = new URLSearchParams({ limit: "200" });
  if (userFilter) query.set("user_id", userFilter);
  if (state) query.set("state", state);
  const [data, error] = usePoll(() => api("/runs?" + query), 1000, [userFilter, state]);
  const runs = (data && data.runs) || [];
  const counts = {};
  for (const r of runs) counts[r.state] = (counts[r.state] || 0) + 1;
  return html`<section>
    <div class="page-head">
      <div>
        <h1>Runs</h1>
        <p class="muted">Live: this list refreshes every second.</p>
      </div>
      <${StartRun} onStarted=${(run) => (location.hash = "#/run/" + encodeURIComponent(run.run_id))} />
    </div>
    <form class="filters" onSubmit=${(e) => (e.preventDefault(), setUserFilter(user.trim()))}>
      <label>User
        <input id="filter-user" placeholder="any user" value=${user}
          onInput=${(e) => setUser(e.currentTarget.value)}
          onBlur=${() => setUserFilter(user.trim())} />
      </label>
      <label>State
        <select id="filter-state" value=${state} onChange=${(e) => setState(e.currentTarget.value)}>
          ${STATES.map((s) => html`<option value=${s}>${s || "any state"}</option>`)}
        </select>
      </label>
      <div class="chips">
        ${Object.entries(counts).map(([s, n]) => html`<span class="chip"><${Badge} state=${s} /> ${n}</span>`)}
      </div>
    </form>
    <${ErrorNote} error=${error} />
    ${data && runs.length === 0
      ? html`<${Empty} title="No runs yet">Runs started through the API (<code>POST /runs</code>) appear here as they start.</${Empty}>`
      : html`<div class="table-wrap"><table class="table" id="runs-table">
          <thead><tr>
            <th>State</th><th>Run</th><th>Input</th><th>User</th><th class="hide-sm">Session</th>
            <th class="num hide-sm">Tokens</th><th>Started</th><th class="num hide-sm">Duration</th>
          </tr></thead>
          <tbody>
            ${runs.map(
              (r) => html`<tr class="clickable run-row" data-run=${r.run_id} data-state=${r.state}
                  onClick=${() => (location.hash = "#/run/" + encodeURIComponent(r.run_id))}>
                <td><${Badge} state=${r.state} /></td>
                <td><a class="mono" href=${"#/run/" + encodeURIComponent(r.run_id)} title=${r.run_id}>${shortId(r.run_id)}</a></td>
                <td class="ellipsis" title=${inputText(r.input)}>${inputText(r.input)}</td>
                <td>${r.user_id || html`<span class="muted">—</span>`}</td>
                <td class="mono muted hide-sm" title=${r.session_id}>${shortId(r.session_id)}</td>
                <td class="num hide-sm">${fmtInt(totalTokens(r.usage))}</td>
                <td class="muted">${timeAgo(r.started_at)}</td>
                <td class="num muted hide-sm">${duration(r.started_at, r.finished_at)}</td>
              </tr>`,
            )}
          </tbody>
        </table></div>`}
    ${!data && !error && html`<div class="loading">Loading runs…</div>`}
  </section>`;
}
