// One run: its header, pending approvals (Allow / Deny), the live event stream, the transcript
// built from the events (model answers, tool calls with their results), and the saved messages.

import { useEffect, useRef, useState } from "./vendor/hooks.mjs";
import { FINAL_STATES, TERMINAL, api, streamEvents } from "./api.js";
import {
  Badge,
  Code,
  Empty,
  ErrorNote,
  Icon,
  clock,
  duration,
  fmtCost,
  fmtInt,
  html,
  inputText,
  pretty,
  timeAgo,
  totalTokens,
  usePoll,
} from "./parts.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Follows a run's events: the stream, reopened after the last seq until the run has ended. */
function useEvents(id) {
  const [events, setEvents] = useState([]);
  const [live, setLive] = useState(false);
  const [error, setError] = useState(null);
  useEffect(() => {
    const ctl = new AbortController();
    let last = null;
    let lastType = null;
    (async () => {
      while (!ctl.signal.aborted) {
        try {
          setLive(true);
          last = await streamEvents(
            id,
            last,
            (ev) => {
              lastType = ev.type;
              setEvents((es) => (es.length && es[es.length - 1].seq >= ev.seq ? es : [...es, ev]));
            },
            ctl.signal,
          );
          setError(null);
        } catch (e) {
          if (ctl.signal.aborted) return;
          setError(e);
          if (e.status === 404 || e.status === 401) return;
        } finally {
          setLive(false);
        }
        // A finished run's log is complete; a suspended one goes on after a decision.
        if (lastType && TERMINAL.has(lastType) && lastType !== "run.suspended") return;
        await sleep(lastType === "run.suspended" ? 1000 : 500);
      }
    })();
    return () => ctl.abort();
  }, [id]);
  return [events, live, error];
}

/** The user as the client named it: the stores' `tenant/user` without the tenant. */
const ownUser = (internal) => (internal && internal.includes("/") ? internal.slice(internal.indexOf("/") + 1) : internal) || null;

/** The transcript as a list of items, from the events. */
function timeline(events) {
  const items = [];
  const tools = new Map();
  const drafts = new Map();
  for (const ev of events) {
    const p = ev.payload || {};
    switch (ev.type) {
      case "run.started":
        items.push({ kind: "input", key: ev.seq, text: inputText(p.input), at: ev.at, user: ownUser(p.user_id) });
        break;
      case "model.delta":
        if (p.kind === "text") {
          let d = drafts.get(p.turn);
          if (!d) {
            d = { kind: "assistant", key: "t" + p.turn, text: "", draft: true, at: ev.at, turn: p.turn };
            drafts.set(p.turn, d);
            items.push(d);
          }
          d.text += p.text;
        }
        break;
      case "model.response": {
        const d = drafts.get(p.turn);
        if (d) {
          d.text = p.text;
          d.draft = false;
          d.usage = p.usage;
        } else if (p.text) {
          items.push({ kind: "assistant", key: "t" + p.turn, text: p.text, at: ev.at, turn: p.turn, usage: p.usage });
        }
        break;
      }
      case "tool.call": {
        const t = { kind: "tool", key: "c" + p.call.id, call: p.call, at: ev.at, decisions: [], result: null };
        tools.set(p.call.id, t);
        items.push(t);
        break;
      }
      case "permission.decision": {
        const t = tools.get(p.call_id);
        if (t) t.decisions.push(p);
        break;
      }
      case "tool.result": {
        const t = tools.get(p.call_id);
        if (t) t.result = p;
        else items.push({ kind: "tool", key: "r" + p.call_id, call: { id: p.call_id, name: p.name, arguments: "" }, decisions: [], result: p });
        break;
      }
      case "run.completed": {
        // The last answer is the final one: marked, not repeated.
        const lastItem = items[items.length - 1];
        if (lastItem && lastItem.kind === "assistant" && lastItem.text === p.output) lastItem.final = true;
        else items.push({ kind: "final", key: ev.seq, text: p.output, at: ev.at });
        break;
      }
      case "run.suspended":
        items.push({ kind: "paused", key: ev.seq, at: ev.at });
        break;
      case "run.failed":
      case "run.cancelled":
      case "run.interrupted":
        items.push({ kind: "ended", key: ev.seq, type: ev.type, error: p.error, at: ev.at });
        break;
      default:
        break;
    }
    // Anything after a pause means the run went on.
    if (ev.type !== "run.suspended") {
      for (const it of items) if (it.kind === "paused") it.resumed = true;
    }
  }
  return items;
}

function ToolCard({ t }) {
  const r = t.result;
  const deferred = t.decisions.some((d) => d.decision === "defer");
  const last = t.decisions[t.decisions.length - 1];
  let status = html`<span class="tag tag-run">running</span>`;
  if (r) status = r.is_error ? html`<span class="tag tag-bad">${r.error_kind || "error"}</span>` : html`<span class="tag tag-ok">ok · ${r.duration_ms} ms</span>`;
  else if (last && last.decision === "defer") status = html`<span class="tag tag-wait">waiting for approval</span>`;
  return html`<div class="item tool" data-call=${t.call.id}>
    <div class="item-head">
      <span class="tool-icon"><${Icon} name="tool" size=${14} /></span>
      <span class="tool-name mono">${t.call.name}</span>
      ${status}
      <span class="muted small grow-right">${clock(t.at)}</span>
    </div>
    <div class="tool-body">
      <div class="label">Arguments</div>
      <${Code} value=${t.call.arguments || "{}"} />
      ${t.decisions.length > 0 &&
      html`<div class="decisions">${t.decisions.map(
        (d) => html`<span class=${"tag " + (d.decision === "deny" ? "tag-bad" : d.decision === "defer" ? "tag-wait" : "tag-ok")}>
          ${d.decision} · ${d.by}${d.reason ? " — " + d.reason : ""}</span>`,
      )}</div>`}
      ${r && html`<div class="label">Result</div><${Code} value=${r.output} cls=${r.is_error ? "code-error" : ""} />`}
      ${!r && deferred && html`<div class="muted small">The run is paused until someone allows or denies this call.</div>`}
    </div>
  </div>`;
}

function Timeline({ events }) {
  const items = timeline(events);
  if (!items.length) return html`<${Empty} title="Nothing yet">The run has not started.</${Empty}>`;
  return html`<div class="timeline" id="timeline">
    ${items.map((it) => {
      if (it.kind === "input")
        return html`<div class="item bubble user" key=${it.key}>
          <div class="item-head"><span class="who">${it.user || "User"}</span><span class="muted small">${clock(it.at)}</span></div>
          <div class="text">${it.text}</div></div>`;
      if (it.kind === "assistant")
        return html`<div class=${"item bubble assistant" + (it.draft ? " draft" : "") + (it.final ? " final" : "")} key=${it.key}
          id=${it.final ? "final-output" : undefined}>
          <div class="item-head"><span class="who">${it.final ? "Final answer" : "Assistant"}</span><span class="muted small">turn ${it.turn}${it.usage ? " · " + fmtInt(totalTokens(it.usage)) + " tokens" : ""}</span></div>
          <div class="text">${it.text}${it.draft ? html`<span class="caret"></span>` : ""}</div></div>`;
      if (it.kind === "tool") return html`<${ToolCard} t=${it} key=${it.key} />`;
      if (it.kind === "final")
        return html`<div class="item final" key=${it.key} id="final-output"><div class="label">Final answer</div><div class="text">${it.text}</div></div>`;
      if (it.kind === "paused")
        return it.resumed
          ? html`<div class="item resumed" key=${it.key}>Paused for a decision, then resumed.</div>`
          : html`<div class="item paused" key=${it.key}>Paused: waiting for a decision on a tool call.</div>`;
      return html`<div class="item ended" key=${it.key}><strong>${it.type.replace("run.", "Run ")}</strong>
        ${it.error && html`<div class="mono small">${it.error.kind}: ${it.error.message}</div>`}</div>`;
    })}
  </div>`;
}

function EventList({ events }) {
  const [open, setOpen] = useState(null);
  if (!events.length) return html`<${Empty} title="No events yet">Events appear here as the run makes them.</${Empty}>`;
  return html`<div class="events" id="events">
    ${events.map(
      (ev) => html`<div class=${"event" + (open === ev.seq ? " open" : "")} data-type=${ev.type} key=${ev.seq}>
        <button class="event-row" onClick=${() => setOpen(open === ev.seq ? null : ev.seq)}>
          <span class="seq mono">#${ev.seq}</span>
          <span class=${"etype etype-" + ev.type.split(".")[0]}>${ev.type}</span>
          <span class="muted small ellipsis grow">${summary(ev)}</span>
          <span class="muted small mono">${clock(ev.at)}</span>
        </button>
        ${open === ev.seq && html`<${Code} value=${ev} />`}
      </div>`,
    )}
  </div>`;
}

function summary(ev) {
  const p = ev.payload || {};
  switch (ev.type) {
    case "run.started": return inputText(p.input);
    case "model.request": return "turn " + p.turn;
    case "model.delta": return p.text;
    case "model.response": return p.text || (p.tool_calls || []).map((c) => c.name + "()").join(", ");
    case "tool.call": return p.call.name + " " + p.call.arguments;
    case "tool.result": return p.output;
    case "permission.decision": return p.tool + ": " + p.decision + " by " + p.by;
    case "run.completed": return p.output;
    default: return p.error ? p.error.message : "";
  }
}

function Messages({ id, state }) {
  const [data, error] = usePoll(() => api("/runs/" + encodeURIComponent(id) + "/transcript"), 0, [id, state]);
  if (error) return html`<${ErrorNote} error=${error} />`;
  if (!data) return html`<div class="loading">Loading…</div>`;
  return html`<div class="messages">
    ${!data.complete && html`<div class="note note-info">The run is in flight: this is the seeded conversation; its turns are in the timeline.</div>`}
    ${data.messages.map((m, i) => {
      let body;
      if (m.role === "user") body = (m.content || []).map((c) => c.text || "[" + c.type + "]").join("\n");
      else body = m.content || "";
      return html`<div class=${"message role-" + m.role} key=${i}>
        <div class="label">${m.role}${m.name ? " · " + m.name : ""}${m.is_error ? " · error" : ""}</div>
        ${body && html`<div class=${m.role === "tool" || m.role === "system" ? "code" : "text"}>${m.role === "tool" ? pretty(body) : body}</div>`}
        ${(m.tool_calls || []).map((c) => html`<div class="call"><span class="mono">${c.name}</span><${Code} value=${c.arguments} /></div>`)}
      </div>`;
    })}
  </div>`;
}

function Approvals({ id, pending, onDecided }) {
  const [busy, setBusy] = useState(null);
  const [error, setError] = useState(null);
  const [reason, setReason] = useState("");
  const [editing, setEditing] = useState(null);
  const [draft, setDraft] = useState("");
  if (!pending.length) return null;
  const decide = async (call, decision) => {
    setBusy(call + decision);
    setError(null);
    try {
      const body = { decision };
      if (decision === "deny" && reason.trim()) body.reason = reason.trim();
      if (decision === "edit") {
        try {
          body.arguments = JSON.parse(draft);
        } catch (e) {
          throw new Error("The arguments are not valid JSON: " + e.message);
        }
      }
      await api("/runs/" + encodeURIComponent(id) + "/approvals/" + encodeURIComponent(call), { method: "POST", body });
      onDecided();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(null);
    }
  };
  return html`<div class="card approval-card" id="approvals">
    <div class="card-title"><${Icon} name="hand" /> Waiting for your decision</div>
    <${ErrorNote} error=${error} />
    ${pending.map(
      (a) => html`<div class="approval" data-call=${a.call_id}>
        <div class="approval-head"><span class="mono tool-name">${a.tool}</span>
          ${a.reason && html`<span class="muted small">${a.reason}</span>`}</div>
        ${editing === a.call_id
          ? html`<textarea class="code editor" rows="6" spellcheck="false" aria-label="Arguments"
              value=${draft} onInput=${(e) => setDraft(e.currentTarget.value)}></textarea>
            <div class="row">
              <button class="btn btn-allow" disabled=${!!busy} onClick=${() => decide(a.call_id, "edit")}>Run with these arguments</button>
              <button class="btn btn-ghost" onClick=${() => setEditing(null)}>Back</button>
            </div>`
          : html`<${Code} value=${a.arguments} />`}
        <div class="row" hidden=${editing === a.call_id}>
          <input class="grow" placeholder="Reason (for a denial; the model reads it)" value=${reason}
            onInput=${(e) => setReason(e.currentTarget.value)} />
          <button class="btn btn-allow" id=${"allow-" + a.call_id} disabled=${!!busy}
            onClick=${() => decide(a.call_id, "allow")}>${busy === a.call_id + "allow" ? "Allowing…" : "Allow"}</button>
          <button class="btn btn-deny" id=${"deny-" + a.call_id} disabled=${!!busy}
            onClick=${() => decide(a.call_id, "deny")}>${busy === a.call_id + "deny" ? "Denying…" : "Deny"}</button>
          <button class="btn btn-ghost" id=${"edit-" + a.call_id} disabled=${!!busy}
            onClick=${() => (setDraft(pretty(a.arguments)), setEditing(a.call_id))}>Edit…</button>
        </div>
      </div>`,
    )}
  </div>`;
}

export function RunView({ id }) {
  const [events, live, streamError] = useEvents(id);
  const [tab, setTab] = useState("timeline");
  const [run, runError, reloadRun] = usePoll(() => api("/runs/" + encodeURIComponent(id)), 1500, [id]);
  const state = run && run.state;
  const [approvals, , reloadApprovals] = usePoll(
    () => (state === "suspended" ? api("/approvals") : Promise.resolve({ approvals: [] })),
    state === "suspended" ? 1500 : 0,
    [id, state],
  );
  // The run's state follows its events at once (the poll catches up).
  const lastSeen = useRef(null);
  useEffect(() => {
    const last = events[events.length - 1];
    if (last && last.type !== lastSeen.current && TERMINAL.has(last.type)) {
      lastSeen.current = last.type;
      reloadRun();
      reloadApprovals();
    }
  }, [events.length]);
  const pending = ((approvals && approvals.approvals) || []).filter((a) => a.run_id === id);
  const cancel = async () => {
    await api("/runs/" + encodeURIComponent(id) + "/cancel", { method: "POST", body: {} }).catch(() => {});
    reloadRun();
  };
  if (runError && runError.status === 404) {
    return html`<section><a class="back" href="#/runs">← Runs</a>
      <${Empty} title="Run not found">No run <code>${id}</code> for this key.</${Empty}></section>`;
  }
  const usage = (run && run.usage) || {};
  return html`<section class="run-view" data-run=${id}>
    <a class="back" href="#/runs">← Runs</a>
    <div class="page-head">
      <div class="run-title">
        <h1 class="mono">${id}</h1>
        <div class="run-meta">
          ${run && html`<${Badge} state=${run.state} />`}
          ${live && !(state && FINAL_STATES.has(state)) && html`<span class="live" id="live"><span class="pulse"></span>Live</span>`}
          ${run && run.user_id && html`<span class="muted">user <strong>${run.user_id}</strong></span>`}
          ${run && html`<span class="muted">session <span class="mono">${run.session_id}</span></span>`}
          ${run && html`<span class="muted">agent <strong>${run.agent}</strong></span>`}
        </div>
      </div>
      ${state && !FINAL_STATES.has(state) && html`<button class="btn btn-ghost" onClick=${cancel}>Cancel run</button>`}
    </div>
    <div class="stats">
      <div class="stat"><div class="stat-label">Started</div><div class="stat-value">${run ? timeAgo(run.started_at) : "—"}</div></div>
      <div class="stat"><div class="stat-label">Duration</div><div class="stat-value">${run ? duration(run.started_at, run.finished_at) : "—"}</div></div>
      <div class="stat"><div class="stat-label">Turns</div><div class="stat-value">${run ? run.turns || 0 : "—"}</div></div>
      <div class="stat"><div class="stat-label">Tokens</div><div class="stat-value">${fmtInt(totalTokens(usage))}</div></div>
      <div class="stat"><div class="stat-label">Cost</div><div class="stat-value">${fmtCost(usage.cost_usd)}</div></div>
    </div>
    ${run && run.error && run.state !== "suspended" && html`<div class="note note-error">${run.error.kind}: ${run.error.message}</div>`}
    <${Approvals} id=${id} pending=${pending} onDecided=${() => { reloadApprovals(); reloadRun(); }} />
    <${ErrorNote} error=${streamError && streamError.status !== 404 ? streamError : null} />
    <div class="tabs" role="tablist">
      ${[["timeline", "Transcript"], ["events", "Events (" + events.length + ")"], ["messages", "Messages"]].map(
        ([t, label]) => html`<button role="tab" id=${"tab-" + t} aria-selected=${tab === t} class=${"tab" + (tab === t ? " active" : "")}
          onClick=${() => setTab(t)}>${label}</button>`,
      )}
    </div>
    ${tab === "timeline" && html`<${Timeline} events=${events} />`}
    ${tab === "events" && html`<${EventList} events=${events} />`}
    ${tab === "messages" && html`<${Messages} id=${id} state=${state} />`}
  </section>`;
}
