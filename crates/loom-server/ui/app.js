// The dashboard's shell: the key form, the sidebar and the hash routes.

import { render } from "./vendor/preact.mjs";
import { useEffect, useState } from "./vendor/hooks.mjs";
import { authIsOff, checkKey, clearKey, getKey, setKey, setUnauthorizedHandler } from "./api.js";
import { Icon, html } from "./parts.js";
import { RunsView } from "./runs.js";
import { RunView } from "./run.js";
import { ApprovalsView, AuditView, SessionsView, UsageView } from "./views.js";

const NAV = [
  { id: "runs", label: "Runs" },
  { id: "approvals", label: "Approvals" },
  { id: "sessions", label: "Sessions" },
  { id: "usage", label: "Usage" },
  { id: "audit", label: "Audit log" },
];

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  return { view: parts[0] || "runs", id: parts[1] || null };
}

function KeyForm({ notice, onKey }) {
  const [key, setValue] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const k = key.trim();
    if (!k) return;
    setBusy(true);
    setError(null);
    try {
      await checkKey(k);
      setKey(k);
      onKey();
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="login">
    <form class="login-card" onSubmit=${submit} id="key-form">
      <div class="brand brand-large"><span class="logo">◆</span> Loom</div>
      <h1>Sign in to the dashboard</h1>
      <p class="muted">
        Paste an API key of this server (made with <code>loom keys create --tenant …</code>). It is kept in this
        tab only and sent as a bearer token.
      </p>
      ${notice && !error && html`<div class="note note-warn">${notice}</div>`}
      ${error && html`<div class="note note-error" role="alert" id="key-error">${error}</div>`}
      <label for="key-input">API key</label>
      <input
        id="key-input"
        type="password"
        autocomplete="off"
        spellcheck="false"
        placeholder="loom_…"
        value=${key}
        onInput=${(e) => setValue(e.currentTarget.value)}
      />
      <button class="btn btn-primary btn-block" type="submit" disabled=${busy || !key.trim()}>
        ${busy ? "Checking…" : "Continue"}
      </button>
    </form>
  </main>`;
}

function Shell({ open, onSignOut }) {
  const [route, setRoute] = useState(parseRoute());
  const [menu, setMenu] = useState(false);
  useEffect(() => {
    const on = () => {
      setRoute(parseRoute());
      setMenu(false);
    };
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  const active = route.view === "run" ? "runs" : route.view;
  let page;
  if (route.view === "run" && route.id) page = html`<${RunView} id=${route.id} key=${route.id} />`;
  else if (route.view === "approvals") page = html`<${ApprovalsView} />`;
  else if (route.view === "sessions") page = html`<${SessionsView} />`;
  else if (route.view === "usage") page = html`<${UsageView} />`;
  else if (route.view === "audit") page = html`<${AuditView} />`;
  else page = html`<${RunsView} />`;
  return html`<div class=${"shell" + (menu ? " menu-open" : "")}>
    <aside class="sidebar">
      <div class="brand"><span class="logo">◆</span> Loom <span class="brand-sub">dashboard</span></div>
      <nav>
        ${NAV.map(
          (n) => html`<a
            href=${"#/" + n.id}
            id=${"nav-" + n.id}
            class=${"nav-item" + (active === n.id ? " active" : "")}
            aria-current=${active === n.id ? "page" : undefined}
            ><${Icon} name=${n.id} />${n.label}</a
          >`,
        )}
      </nav>
      <div class="sidebar-foot">
        ${open
          ? html`<div class="note note-warn small">This server runs without authentication.</div>`
          : html`<button class="btn btn-ghost btn-block" id="sign-out" onClick=${onSignOut}>Sign out</button>`}
      </div>
    </aside>
    <div class="main">
      <header class="topbar">
        <button class="btn btn-ghost menu-button" aria-label="Menu" onClick=${() => setMenu(!menu)}><${Icon} name="menu" /></button>
        <div class="brand brand-small"><span class="logo">◆</span> Loom</div>
      </header>
      <div class="content">${page}</div>
    </div>
  </div>`;
}

function App() {
  const [authed, setAuthed] = useState(!!getKey());
  const [notice, setNotice] = useState(null);
  const [open, setOpen] = useState(false);
  useEffect(() => {
    setUnauthorizedHandler(() => {
      setNotice("The server refused the key (it may have been revoked). Enter a key again.");
      setAuthed(false);
    });
    // A server without authentication (local development) needs no key.
    if (!getKey()) {
      authIsOff().then((off) => {
        if (off) {
          setOpen(true);
          setAuthed(true);
        }
      });
    }
  }, []);
  if (!authed) {
    return html`<${KeyForm}
      notice=${notice}
      onKey=${() => {
        setNotice(null);
        setAuthed(true);
      }}
    />`;
  }
  return html`<${Shell}
    open=${open}
    onSignOut=${() => {
      clearKey();
      setAuthed(false);
    }}
  />`;
}

const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
