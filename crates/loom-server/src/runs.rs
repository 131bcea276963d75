//! `/runs`: create (with the busy-session strategy), get, list, cancel, resume.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use loom_agent::run::RunInput;
use loom_agent::store::SessionKey;
use loom_agent::{Agent, Run, RunContext, RunRequest, RunState, SessionConfig, Transcript};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Body, SessionEntry, Tenant};

/// What a run posted to a busy session does (as in LangGraph's server).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Busy {
    /// Wait behind the session's runs (the default).
    #[default]
    Enqueue,
    /// Refuse with 409.
    Reject,
    /// Cancel the session's runs in flight, then run.
    Interrupt,
}

/// The body of `POST /runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// A prompt (string) or a run input (`{"prompt": …}`, `{"task": …}`, `{"parts": …}`).
    pub input: Value,
    /// The user the run acts for (within the caller's tenant).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The session to continue (made when new); a new session when unset.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The run's context (`inputs`, `knowledge`, `extensions`).
    #[serde(default)]
    pub context: Option<RunContext>,
    /// Answer when the run has ended (default: at once, with the run `queued` or `running`).
    #[serde(default)]
    pub wait: bool,
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
    /// What to do when the session has a run in flight.
    #[serde(default)]
    pub busy: Busy,
    /// Request metadata, recorded with the run.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

pub(crate) fn parse_input(input: Value) -> ApiResult<RunInput> {
    match input {
        Value::String(s) => Ok(RunInput::Prompt(s)),
        Value::Object(o) => serde_json::from_value(Value::Object(o))
            .map_err(|e| ApiError::bad_request(format!("`input` is a string or a run input object: {e}"))),
        _ => Err(ApiError::bad_request("`input` is a string or a run input object")),
    }
}

/// A run as the API shows it.
pub(crate) fn view(tenant: &Tenant, agent: &str, t: &Transcript) -> Value {
    json!({
        "run_id": t.run_id,
        "session_id": t.session_id,
        "user_id": tenant.owns(t.user_id.as_deref()).flatten(),
        "agent": agent,
        "state": t.state,
        "input": t.input,
        "output": t.output,
        "parsed": t.parsed,
        "error": t.error,
        "usage": t.usage,
        "turns": t.turns,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
    })
}

pub(crate) fn run_view(tenant: &Tenant, agent: &str, run: &Run) -> Value {
    let mut t = run.transcript();
    // The live state (the transcript's is the sealed one).
    t.state = run.state();
    view(tenant, agent, &t)
}

/// Checks a user id the client sent.
pub(crate) fn check_user(user: Option<&str>) -> ApiResult<()> {
    if user.is_some_and(str::is_empty) {
        return Err(ApiError::bad_request("`user_id` is empty; omit it for no user"));
    }
    Ok(())
}

/// The session of a request: the tenant's session of this id (opened, and recorded, when new), or
/// a new one.
pub(crate) fn open_session(
    state: &AppState,
    tenant: &Tenant,
    agent_name: &str,
    agent: &Agent,
    user: Option<&str>,
    session_id: Option<&str>,
) -> ApiResult<SessionEntry> {
    let mut sessions = state.sessions();
    if let Some(id) = session_id
        && let Some(entry) = sessions.get(&(tenant.clone(), id.to_string()))
    {
        if entry.user.as_deref() != user {
            return Err(ApiError::conflict(format!("session `{id}` belongs to another user")));
        }
        if entry.agent != agent_name {
            return Err(ApiError::conflict(format!("session `{id}` belongs to agent `{}`", entry.agent)));
        }
        if entry.session.is_closed() {
            return Err(ApiError::conflict(format!("session `{id}` is closed")));
        }
        return Ok(entry.clone());
    }
    let mut config = SessionConfig {
        id: session_id.map(str::to_string),
        user_id: Some(tenant.scoped_user(user)),
        ..Default::default()
    };
    config.extensions.insert(crate::sessions::AGENT_EXTENSION.into(), json!(agent_name));
    // Queue mode: the session's waiting signals are a worker's to handle, not this server's.
    let session = if state.queue.is_some() { agent.session_without_sweep(config) } else { agent.session(config) };
    let entry = SessionEntry {
        agent: agent_name.to_string(),
        user: user.map(str::to_string),
        session,
        created_at: chrono::Utc::now(),
    };
    sessions.insert((tenant.clone(), entry.session.id().to_string()), entry.clone());
    Ok(entry)
}

/// Starts a run in the tenant's session `session_id` (opened when new; a new session when `None`)
/// and tracks it: what `/v1/*` and A2A do (`POST /runs` adds its busy-session strategy between
/// the two steps).
pub(crate) fn start_in_session(
    state: &Arc<AppState>,
    tenant: &Tenant,
    agent_name: &str,
    agent: &Agent,
    user: Option<&str>,
    session_id: Option<&str>,
    request: RunRequest,
) -> ApiResult<Run> {
    let entry = open_session(state, tenant, agent_name, agent, user, session_id)?;
    let run = entry.session.start(request);
    state.track(tenant, agent_name, &run);
    Ok(run)
}

/// The tenant's runs of a session that have not ended.
pub(crate) fn in_flight(state: &AppState, tenant: &Tenant, session_id: &str) -> Vec<Run> {
    state
        .runs()
        .values()
        .filter(|e| &e.tenant == tenant && e.run.session_id() == session_id && !e.run.state().is_terminal())
        .map(|e| e.run.clone())
        .collect()
}

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Body(body): Body<CreateRun>,
) -> ApiResult<Response> {
    if let Some(queue) = state.queue.clone() {
        return crate::queued::create(state, queue, tenant, body).await;
    }
    let wait = body.wait;
    let (agent_name, run) = start(&state, &tenant, body).await?;
    if wait {
        let _ = run.result().await;
        return Ok((StatusCode::OK, Json(run_view(&tenant, &agent_name, &run))).into_response());
    }
    Ok((StatusCode::CREATED, Json(run_view(&tenant, &agent_name, &run))).into_response())
}

/// Starts (and tracks) the run `body` asks for, after its busy-session strategy: the agent's name
/// and the run. `POST /runs` and `POST /runs/stream` (not in queue mode).
pub(crate) async fn start(state: &Arc<AppState>, tenant: &Tenant, body: CreateRun) -> ApiResult<(String, Run)> {
    check_user(body.user_id.as_deref())?;
    let (agent_name, agent) = state.agent(body.agent.as_deref())?;
    let input = parse_input(body.input)?;
    if let Some(id) = body.session_id.as_deref() {
        // A session the server no longer holds in memory is read back from the store.
        crate::sessions::lookup(state, tenant, id).await?;
    }
    let entry = open_session(state, tenant, &agent_name, &agent, body.user_id.as_deref(), body.session_id.as_deref())?;
    // A session made by this request has nothing in flight: only a named one needs the scan.
    let busy = if body.session_id.is_some() { in_flight(state, tenant, entry.session.id()) } else { Vec::new() };
    // And the session's runs in flight in other server processes on the same database (a run
    // whose process died is not: its lease has expired).
    let elsewhere = if body.session_id.is_some() && body.busy != Busy::Enqueue {
        crate::elsewhere::in_flight(state, &agent, tenant, entry.session.id()).await?
    } else {
        Vec::new()
    };
    let first = busy.first().map(|r| r.id().to_string()).or_else(|| elsewhere.first().map(|r| r.run_id.clone()));
    if let Some(first) = first {
        match body.busy {
            Busy::Enqueue => {}
            Busy::Reject => {
                return Err(ApiError::conflict(format!(
                    "session `{}` has a run in flight ({first}); retry later, or post with \"busy\": \"enqueue\" or \"interrupt\"",
                    entry.session.id(),
                )));
            }
            Busy::Interrupt => {
                busy.iter().for_each(Run::cancel);
                if !elsewhere.is_empty() {
                    crate::elsewhere::interrupt(&agent, entry.session.id(), &elsewhere).await?;
                }
            }
        }
    }
    let context = body.context.unwrap_or_default();
    // A run of a named session may wait before it executes: recorded for the other servers.
    let held = (body.session_id.is_some() && agent.journal().is_some())
        .then(|| loom_agent::queued_request(&input, &context, &body.metadata));
    let mut request = RunRequest::new(input).user(tenant.scoped_user(body.user_id.as_deref()));
    request.context = context;
    request.metadata = body.metadata;
    let run = entry.session.start(request);
    state.track(tenant, &agent_name, &run);
    if let Some(held) = held
        && let Err(e) = crate::elsewhere::hold(&agent_name, &agent, &run, held).await
    {
        // Not recorded: the run must not go on unseen by the other servers' busy checks.
        run.cancel();
        return Err(e);
    }
    Ok((agent_name, run))
}

/// A run the tenant owns that this server has not seen: from the agents' journals and stores. An
/// unfinished one whose process died (its lease expired) says `"resumable": true`.
pub(crate) async fn stored_view(state: &AppState, tenant: &Tenant, run_id: &str) -> ApiResult<Option<Value>> {
    for (name, agent) in &state.agents {
        let Some(journal) = agent.journal() else { continue };
        let Some(stored) = journal.load(run_id).await? else {
            // A run that has not begun: held waiting by another server (or ended before it began).
            if let Ok(queue) = agent.run_queue()
                && let Some(s) = queue.status(run_id).await?
            {
                if tenant.owns(s.user_id.as_deref()).is_none() {
                    return Ok(None);
                }
                return crate::queued::status_view(state, tenant, &s).await.map(Some);
            }
            continue;
        };
        if tenant.owns(stored.record.user_id.as_deref()).is_none() {
            return Ok(None);
        }
        let key = SessionKey::scoped(stored.record.user_id.as_deref(), &stored.record.session_id);
        if let Some(t) = agent.session_store().get_run(key, run_id).await? {
            return Ok(Some(view(tenant, name, &t)));
        }
        let mut v = json!({
            "run_id": run_id,
            "session_id": stored.record.session_id,
            "user_id": tenant.owns(stored.record.user_id.as_deref()).flatten(),
            "agent": name,
            "state": stored.state,
            "input": stored.record.input,
            "started_at": stored.record.started_at,
        });
        if let Ok(queue) = agent.run_queue()
            && queue.status(run_id).await?.is_some_and(|s| s.abandoned(chrono::Utc::now()))
        {
            v["resumable"] = json!(true);
        }
        return Ok(Some(v));
    }
    Ok(None)
}

pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(run_id): Path<String>,
) -> ApiResult<Json<Value>> {
    if let Some(e) = state.run_entry(&tenant, &run_id) {
        return Ok(Json(run_view(&tenant, &e.agent, &e.run)));
    }
    if state.runs().contains_key(&run_id) {
        return Err(ApiError::not_found("run", &run_id));
    }
    if let Some(queue) = &state.queue {
        return crate::queued::get(&state, queue.as_ref(), &tenant, &run_id).await.map(Json);
    }
    stored_view(&state, &tenant, &run_id).await?.map(Json).ok_or_else(|| ApiError::not_found("run", &run_id))
}

/// Filters of `GET /runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRuns {
    /// Only this user's runs.
    pub user_id: Option<String>,
    /// Only this session's runs.
    pub session_id: Option<String>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// At most this many (newest first; default 100, at most 1,000).
    pub limit: Option<usize>,
    /// The next page: only runs older than this one (the `next` of the previous page).
    pub before: Option<String>,
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Query(q): Query<ListRuns>,
) -> ApiResult<Json<Value>> {
    check_user(q.user_id.as_deref())?;
    if let Some(queue) = &state.queue {
        return crate::queued::list(&state, queue.as_ref(), &tenant, &q).await.map(Json);
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let before = q.before.as_deref();
    // The runs this server holds (their live state)...
    let (mut runs, held): (BTreeMap<String, Value>, HashSet<String>) = {
        let entries = state.runs();
        let held = entries.iter().filter(|(_, e)| e.tenant == tenant).map(|(id, _)| id.clone()).collect();
        let runs = entries
            .values()
            .filter(|e| {
                e.tenant == tenant
                    && before.is_none_or(|b| e.run.id() < b)
                    && q.session_id.as_deref().is_none_or(|s| e.run.session_id() == s)
                    && q.user_id.as_deref().is_none_or(|u| tenant.owns(e.run.user_id()).flatten().as_deref() == Some(u))
                    && q.state.is_none_or(|s| e.run.state() == s)
            })
            .map(|e| (e.run.id().to_string(), run_view(&tenant, &e.agent, &e.run)))
            .collect();
        (runs, held)
    };
    // ...and the tenant's runs in the agents' stores: from before a restart, of another server
    // process on the same database, or forgotten here.
    let prefix = format!("{}/", tenant.0);
    let user = q.user_id.as_deref().map(|u| tenant.scoped_user(Some(u)));
    for (name, agent) in &state.agents {
        let Ok(store) = agent.run_queue() else { continue };
        let rows = store.runs_before(&prefix, q.session_id.as_deref(), user.as_deref(), q.state, before, limit).await?;
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|row| !held.contains(&row.run_id) && !runs.contains_key(&row.run_id))
            .map(|mut row| {
                row.agent.get_or_insert_with(|| name.clone());
                row
            })
            .collect();
        // The finished runs' transcripts in one query per agent store.
        let views = crate::queued::status_views(&state, &tenant, &rows).await?;
        let now = chrono::Utc::now();
        for (row, mut v) in rows.into_iter().zip(views) {
            if row.abandoned(now) {
                v["resumable"] = json!(true);
            }
            runs.insert(row.run_id, v);
        }
    }
    let runs: Vec<Value> = runs.into_values().rev().take(limit).collect();
    let next = (runs.len() == limit).then(|| runs.last().map(|r| r["run_id"].clone())).flatten();
    Ok(Json(json!({ "runs": runs, "next": next })))
}

pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(run_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = match (state.run_entry(&tenant, &run_id), &state.queue) {
        (Some(e), _) => e,
        (None, Some(queue)) => return crate::queued::cancel(&state, queue.as_ref(), &tenant, &run_id).await.map(Json),
        // A run another server on the database executes (its cancel recorded there), or ended.
        (None, None) => {
            return crate::elsewhere::cancel(&state, &tenant, &run_id)
                .await?
                .map(Json)
                .ok_or_else(|| ApiError::not_found("run", &run_id));
        }
    };
    e.run.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), e.run.result()).await;
    Ok(Json(run_view(&tenant, &e.agent, &e.run)))
}

/// The agent and internal user of a run the tenant owns (live here, or in a journal).
pub(crate) async fn owned_run(
    state: &AppState,
    tenant: &Tenant,
    run_id: &str,
) -> ApiResult<(String, Agent, Option<String>)> {
    if let Some(e) = state.run_entry(tenant, run_id) {
        let (name, agent) = state.agent(Some(&e.agent))?;
        return Ok((name, agent, e.run.user_id().map(str::to_string)));
    }
    if state.runs().contains_key(run_id) {
        return Err(ApiError::not_found("run", run_id));
    }
    for (name, agent) in &state.agents {
        let Some(journal) = agent.journal() else { continue };
        let Some(stored) = journal.load(run_id).await? else { continue };
        if tenant.owns(stored.record.user_id.as_deref()).is_none() {
            break;
        }
        return Ok((name.clone(), agent.clone(), stored.record.user_id));
    }
    Err(ApiError::not_found("run", run_id))
}

pub(crate) async fn resume(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(run_id): Path<String>,
) -> ApiResult<Json<Value>> {
    if let Some(queue) = &state.queue
        && state.run_entry(&tenant, &run_id).is_none()
    {
        return crate::queued::resume(&state, queue.as_ref(), &tenant, &run_id).await.map(Json);
    }
    let (name, agent, user) = owned_run(&state, &tenant, &run_id).await?;
    if let Some(e) = state.run_entry(&tenant, &run_id)
        && !e.run.state().is_terminal()
        && e.run.state() != RunState::Suspended
    {
        return Err(ApiError::conflict(format!("run {run_id} is in flight here")));
    }
    let user = user.unwrap_or_else(|| tenant.scoped_user(None));
    let run = agent.resume_as(&user, &run_id).await?;
    state.track(&tenant, &name, &run);
    Ok(Json(run_view(&tenant, &name, &run)))
}
