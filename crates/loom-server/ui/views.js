// The other pages: pending approvals, sessions, usage (tokens and cost by user and day), and the
// audit log with its chain's verification status.

import { useState } from "./vendor/hooks.mjs";
import { api } from "./api.js";
import { Code, Empty, ErrorNote, fmtCost, fmtInt, html, shortId, timeAgo, usePoll } from "./parts.js";

export function ApprovalsView() {
  const [data, error, reload] = usePoll(() => api("/approvals"), 2000, []);
  const [busy, setBusy] = useState(null);
  const [failure, setFailure] = useState(null);
  const decide = async (a, decision) => {
    setBusy(a.call_id);
    setFailure(null);
    try {
      const path = "/runs/" + encodeURIComponent(a.run_id) + "/approvals/" + encodeURIComponent(a.call_id);
      await api(path, { method: "POST", body: { decision } });
      reload();
    } catch (e) {
      setFailure(e);
    } finally {
      setBusy(null);
    }
  };
  const list = (data && data.approvals) || [];
  return html`<section>
    <div class="page-head"><div><h1>Approvals</h1>
      <p class="muted">Tool calls that wait for a person. A decision continues the run.</p></div></div>
    <${ErrorNote} error=${error || failure} />
    ${data && !list.length && html`<${Empty} title="Nothing waits for you">Calls that need approval appear here.</${Empty}>`}
    <div class="grid">
      ${list.map(
        (a) => html`<div class="card approval" data-call=${a.call_id}>
          <div class="approval-head">
            <span class="mono tool-name">${a.tool}</span>
            <a class="mono small" href=${"#/run/" + encodeURIComponent(a.run_id)}>${shortId(a.run_id)}</a>
          </div>
          ${a.reason && html`<div class="muted small">${a.reason}</div>`}
          <${Code} value=${a.arguments} />
          <div class="row">
            <button class="btn btn-allow" disabled=${busy === a.call_id} onClick=${() => decide(a, "allow")}>Allow</button>
            <button class="btn btn-deny" disabled=${busy === a.call_id} onClick=${() => decide(a, "deny")}>Deny</button>
          </div>
        </div>`,
      )}
    </div>
  </section>`;
}

export function SessionsView() {
  const [user, setUser] = useState("");
  const [filter, setFilter] = useState("");
  const [data, error] = usePoll(
    () => api("/sessions" + (filter ? "?user_id=" + encodeURIComponent(filter) : "")),
    3000,
    [filter],
  );
  const [open, setOpen] = useState(null);
  const list = (data && data.sessions) || [];
  return html`<section>
    <div class="page-head"><div><h1>Sessions</h1><p class="muted">Conversations this server holds, oldest first.</p></div></div>
    <form class="filters" onSubmit=${(e) => (e.preventDefault(), setFilter(user.trim()))}>
      <label>User <input placeholder="any user" value=${user} onInput=${(e) => setUser(e.currentTarget.value)}
        onBlur=${() => setFilter(user.trim())} /></label>
    </form>
    <${ErrorNote} error=${error} />
    ${data && !list.length && html`<${Empty} title="No sessions">Sessions are made by <code>POST /sessions</code> and by runs.</${Empty}>`}
    ${list.length > 0 &&
    html`<div class="table-wrap"><table class="table">
      <thead><tr><th>Session</th><th>User</th><th>Agent</th><th>Status</th><th>Created</th></tr></thead>
      <tbody>${list.map(
        (s) => html`<tr class="clickable" onClick=${() => setOpen(open === s.session_id ? null : s.session_id)}>
            <td class="mono">${s.session_id}</td><td>${s.user_id || html`<span class="muted">—</span>`}</td>
            <td>${s.agent}</td>
            <td>${s.closed ? html`<span class="tag">closed</span>` : html`<span class="tag tag-ok">open</span>`}</td>
            <td class="muted">${timeAgo(s.created_at)}</td></tr>
          ${open === s.session_id && html`<tr class="detail"><td colspan="5"><${SessionRuns} id=${s.session_id} /></td></tr>`}`,
      )}</tbody></table></div>`}
  </section>`;
}

function messageText(m) {
  if (m.role === "user") return (m.content || []).map((c) => c.text || "[" + c.type + "]").join("\n");
  if (m.role === "assistant" && !m.content && m.tool_calls) return m.tool_calls.map((c) => c.name + "(" + c.arguments + ")").join("\n");
  return m.content || "";
}

function SessionRuns({ id }) {
  const base = "/sessions/" + encodeURIComponent(id);
  const [data, error] = usePoll(() => Promise.all([api(base + "/runs"), api(base + "/history")]), 0, [id]);
  if (error) return html`<${ErrorNote} error=${error} />`;
  if (!data) return html`<div class="loading">Loading…</div>`;
  const [runs, history] = data;
  return html`<div class="session-detail">
    <div class="label">Runs</div>
    ${runs.runs.length
      ? html`<div class="chips">${runs.runs.map(
          (r) => html`<a class="chip mono" href=${"#/run/" + encodeURIComponent(r.run_id)}>${shortId(r.run_id)} · ${r.state}</a>`,
        )}</div>`
      : html`<span class="muted">No runs in this session.</span>`}
    <div class="label">History (${history.messages.length} messages)</div>
    <div class="history">${history.messages.map(
      (m) => html`<div class=${"history-line role-" + m.role}><span class="tag">${m.role}</span>
        <span class=${m.role === "tool" ? "mono small" : ""}>${messageText(m)}</span></div>`,
    )}</div>
  </div>`;
}

/** Every day from `from` to `to` (YYYY-MM-DD, UTC). */
function dayRange(from, to) {
  const out = [];
  const end = new Date(to + "T00:00:00Z").getTime();
  for (let t = new Date(from + "T00:00:00Z").getTime(); t <= end && out.length < 400; t += 86400000) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

function Bars({ rows, from, to }) {
  const byDay = new Map();
  for (const r of rows) byDay.set(r.day, (byDay.get(r.day) || 0) + r.total_tokens);
  if (!byDay.size) return null;
  const days = dayRange(from, to).map((d) => [d, byDay.get(d) || 0]);
  const max = Math.max(1, ...days.map(([, v]) => v));
  const every = Math.ceil(days.length / 10);
  return html`<div class="card"><div class="card-title">Tokens per day</div>
    <div class="bars">${days.map(
      ([day, v], i) => html`<div class="bar-col" title=${day + ": " + fmtInt(v) + " tokens"}>
        <div class=${"bar" + (v ? "" : " bar-zero")} style=${{ height: (v ? Math.max(3, Math.round((v / max) * 100)) : 1) + "%" }}></div>
        <div class="bar-label">${i % every === 0 || i === days.length - 1 ? day.slice(5) : ""}</div></div>`,
    )}</div></div>`;
}

export function UsageView() {
  const [days, setDays] = useState(30);
  const [data, error] = usePoll(() => api("/usage?group=user,day&days=" + days), 5000, [days]);
  const rows = (data && data.groups) || [];
  const t = (data && data.total) || {};
  return html`<section>
    <div class="page-head"><div><h1>Usage</h1><p class="muted">Tokens and cost per user and day (UTC).</p></div>
      <select value=${days} onChange=${(e) => setDays(Number(e.currentTarget.value))}>
        ${[1, 7, 30, 90].map((d) => html`<option value=${d}>Last ${d} day${d > 1 ? "s" : ""}</option>`)}
      </select></div>
    <${ErrorNote} error=${error} />
    <div class="stats">
      <div class="stat"><div class="stat-label">Runs</div><div class="stat-value" id="usage-runs">${fmtInt(t.runs)}</div></div>
      <div class="stat"><div class="stat-label">Input tokens</div><div class="stat-value">${fmtInt(t.input_tokens)}</div></div>
      <div class="stat"><div class="stat-label">Output tokens</div><div class="stat-value">${fmtInt(t.output_tokens)}</div></div>
      <div class="stat"><div class="stat-label">Cost</div><div class="stat-value">${fmtCost(t.cost_usd)}</div></div>
    </div>
    ${data && html`<${Bars} rows=${rows} from=${data.from} to=${data.to} />`}
    ${data && !rows.length && html`<${Empty} title="No usage">No runs in this period.</${Empty}>`}
    ${rows.length > 0 &&
    html`<div class="table-wrap"><table class="table" id="usage-table">
      <thead><tr><th>Day</th><th>User</th><th class="num">Runs</th><th class="num">Input</th><th class="num">Cached</th>
        <th class="num">Output</th><th class="num">Total</th><th class="num">Cost</th></tr></thead>
      <tbody>${[...rows].reverse().map(
        (r) => html`<tr><td class="mono">${r.day}</td><td>${r.user_id || html`<span class="muted">—</span>`}</td>
          <td class="num">${fmtInt(r.runs)}</td><td class="num">${fmtInt(r.input_tokens)}</td>
          <td class="num">${fmtInt(r.cached_input_tokens)}</td><td class="num">${fmtInt(r.output_tokens)}</td>
          <td class="num"><strong>${fmtInt(r.total_tokens)}</strong></td><td class="num">${fmtCost(r.cost_usd)}</td></tr>`,
      )}</tbody></table></div>`}
  </section>`;
}

function Verification({ v }) {
  if (v.intact)
    return html`<div class="verify verify-ok" data-intact="true"><span class="verify-icon">✔</span><div>
      <strong>Chain verified</strong><div class="muted small">Every hash, signature and link checks out${v.head_checked ? ", and the log reaches its signed head" : ""}.</div></div></div>`;
  return html`<div class="verify verify-bad" data-intact="false"><span class="verify-icon">✖</span><div>
    <strong>Chain broken</strong>
    <div class="small">${v.problems.map((p) => html`<div>${p.seq ? "seq " + p.seq + ": " : ""}${p.kind} — ${p.detail}</div>`)}
      ${v.problems_elsewhere > 0 && html`<div>${v.problems_elsewhere} problem(s) in entries of other tenants.</div>`}</div></div></div>`;
}

export function AuditView() {
  const [action, setAction] = useState("");
  const [data, error] = usePoll(
    () => api("/audit?limit=300" + (action ? "&action=" + encodeURIComponent(action) : "")),
    15000,
    [action],
  );
  const [open, setOpen] = useState(null);
  return html`<section>
    <div class="page-head"><div><h1>Audit log</h1><p class="muted">Signed, hash-chained record of what runs did. Newest first.</p></div>
      <select value=${action} onChange=${(e) => setAction(e.currentTarget.value)}>
        ${["", "run_started", "tool_call", "tool_result", "permission_decision", "guardrail_triggered", "budget_exceeded", "run_finished"].map(
          (a) => html`<option value=${a}>${a || "all actions"}</option>`,
        )}
      </select></div>
    <${ErrorNote} error=${error} />
    ${data && !data.configured && html`<${Empty} title="No audit log">Configure <code>audit_log = { path, secret_env }</code> for the agent.</${Empty}>`}
    ${data && data.logs.map(
      (log) => html`<div class="audit-log" key=${log.name}>
        <div class="audit-head"><span class="mono">${log.name}</span></div>
        <${Verification} v=${log.verification} />
        ${!log.entries.length && html`<${Empty} title="No entries">Nothing recorded for this key yet.</${Empty}>`}
        ${log.entries.length > 0 &&
        html`<div class="table-wrap"><table class="table audit-table">
          <thead><tr><th class="num">Seq</th><th>Time</th><th>Action</th><th>Run</th><th>User</th><th>Hash</th></tr></thead>
          <tbody>${log.entries.map(
            (e) => html`<tr class="clickable" onClick=${() => setOpen(open === e.seq ? null : e.seq)}>
                <td class="num mono">${e.seq}</td><td class="muted">${new Date(e.at).toLocaleString()}</td>
                <td><span class="tag">${e.action}</span></td>
                <td><a class="mono" href=${"#/run/" + encodeURIComponent(e.run_id)} onClick=${(ev) => ev.stopPropagation()}>${shortId(e.run_id)}</a></td>
                <td>${e.user_id || html`<span class="muted">—</span>`}</td>
                <td class="mono muted small" title=${e.hash}>${e.hash.slice(0, 12)}…</td></tr>
              ${open === e.seq && html`<tr class="detail"><td colspan="6"><${Code} value=${e.payload} /></td></tr>`}`,
          )}</tbody></table></div>`}
      </div>`,
    )}
  </section>`;
}
