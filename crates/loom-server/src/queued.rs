//! `[server] execution = "queue"`: runs are queued in the journal's database and executed by
//! workers (`loom worker --config`, or this server when it runs a worker itself). Every answer
//! comes from the database, so any server sees every run of the tenant, across restarts: create,
//! get, list, cancel (recorded for the worker that executes the run) and the event log, followed
//! by polling.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use loom_agent::store::{RunQueue, RunStatus, SessionKey};
use loom_agent::{Event, queued_request};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::runs::{Busy, CreateRun, ListRuns, check_user, parse_input, view};
use crate::state::{AppState, Tenant};

/// How often a follower polls the event log (and a waiting request the run's state).
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// The status of a run the tenant owns; 404 otherwise (another tenant's run included).
pub(crate) async fn owned(queue: &dyn RunQueue, tenant: &Tenant, run_id: &str) -> ApiResult<RunStatus> {
    match queue.status(run_id).await? {
        Some(s) if tenant.owns(s.user_id.as_deref()).is_some() => Ok(s),
        _ => Err(ApiError::not_found("run", run_id)),
    }
}

/// A run as the API shows it: its transcript once the worker saved it, else what the queue knows.
pub(crate) async fn status_view(state: &AppState, tenant: &Tenant, s: &RunStatus) -> ApiResult<Value> {
    let name = s.agent.clone().or_else(|| state.agents.keys().next().cloned()).unwrap_or_default();
    if s.state.is_terminal()
        && let Ok((name, agent)) = state.agent(Some(&name))
    {
        let key = SessionKey::scoped(s.user_id.as_deref(), &s.session_id);
        if let Some(t) = agent.session_store().get_run(key, &s.run_id).await? {
            let mut v = view(tenant, &name, &t);
            v["cancel_requested"] = json!(s.cancel_requested);
            return Ok(v);
        }
    }
    Ok(light_view(tenant, &name, s))
}

/// [`status_view`] of each of `rows` (in their order), the finished runs' transcripts read in one
/// query per agent store ([`loom_agent::store::SessionStore::get_runs`]).
pub(crate) async fn status_views(state: &AppState, tenant: &Tenant, rows: &[RunStatus]) -> ApiResult<Vec<Value>> {
    let default = state.agents.keys().next().cloned().unwrap_or_default();
    let name_of = |s: &RunStatus| s.agent.clone().unwrap_or_else(|| default.clone());
    let mut transcripts: HashMap<String, Arc<loom_agent::Transcript>> = HashMap::new();
    let mut by_agent: BTreeMap<String, Vec<&RunStatus>> = BTreeMap::new();
    for s in rows.iter().filter(|s| s.state.is_terminal()) {
        by_agent.entry(name_of(s)).or_default().push(s);
    }
    for (name, wanted) in by_agent {
        let Ok((_, agent)) = state.agent(Some(&name)) else { continue };
        let keys: Vec<(SessionKey<'_>, &str)> = wanted
            .iter()
            .map(|s| (SessionKey::scoped(s.user_id.as_deref(), &s.session_id), s.run_id.as_str()))
            .collect();
        for t in agent.session_store().get_runs(&keys).await? {
            transcripts.insert(t.run_id.clone(), t);
        }
    }
    Ok(rows
        .iter()
        .map(|s| {
            let name = name_of(s);
            match transcripts.get(&s.run_id).filter(|_| s.state.is_terminal()) {
                Some(t) if state.agent(Some(&name)).is_ok() => {
                    let mut v = view(tenant, &name, t);
                    v["cancel_requested"] = json!(s.cancel_requested);
                    v
                }
                _ => light_view(tenant, &name, s),
            }
        })
        .collect())
}

fn light_view(tenant: &Tenant, agent: &str, s: &RunStatus) -> Value {
    json!({
        "run_id": s.run_id,
        "session_id": s.session_id,
        "user_id": tenant.owns(s.user_id.as_deref()).flatten(),
        "agent": agent,
        "state": s.state,
        "started_at": s.created_at,
        "finished_at": s.finished_at,
        "cancel_requested": s.cancel_requested,
    })
}

/// Whether a run keeps its session busy in queue mode: it is in flight (queued, or held by a live
/// lease), or its worker died (its lease expired) and a worker will take it over (a queued run of
/// an agent: the queue's claim picks it up again). A run whose process died that no worker takes
/// over (one a `loom serve` began in process, not queued) is not: nothing executes it until it is
/// resumed, as in-process mode (`crate::elsewhere`) counts it.
pub(crate) fn will_execute(r: &RunStatus, now: chrono::DateTime<chrono::Utc>) -> bool {
    r.in_flight(now) || (!r.finished && !r.state.is_terminal() && r.agent.is_some())
}

/// Queues the run `body` asks for (after its busy-session strategy): the agent's name and the
/// queued run.
pub(crate) async fn enqueue(
    state: &AppState,
    queue: &dyn RunQueue,
    tenant: &Tenant,
    body: CreateRun,
) -> ApiResult<(String, loom_agent::store::QueuedRun)> {
    check_user(body.user_id.as_deref())?;
    let (agent_name, agent) = state.agent(body.agent.as_deref())?;
    let input = parse_input(body.input)?;
    let user = tenant.scoped_user(body.user_id.as_deref());
    if let Some(session) = body.session_id.as_deref()
        && body.busy != Busy::Enqueue
    {
        let now = chrono::Utc::now();
        let busy: Vec<RunStatus> = queue
            .runs(&user, Some(session), Some(&user), None, 1000)
            .await?
            .into_iter()
            .filter(|r| will_execute(r, now))
            .collect();
        if let Some(first) = busy.first() {
            if body.busy == Busy::Reject {
                return Err(ApiError::conflict(format!(
                    "session `{session}` has a run in flight ({}); retry later, or post with \"busy\": \"enqueue\" or \"interrupt\"",
                    first.run_id
                )));
            }
            for r in &busy {
                queue.request_cancel(&r.run_id).await?;
            }
        }
    }
    let request = queued_request(&input, &body.context.unwrap_or_default(), &body.metadata);
    let queued = agent.enqueue(&agent_name, body.session_id.as_deref(), Some(&user), request).await?;
    state.budgets.adopt(tenant, &queued.run_id).await;
    Ok((agent_name, queued))
}

/// `POST /runs` in queue mode: the run is queued and its id returned at once (201), or, with
/// `wait`, the finished run (200) once a worker has ended it.
pub(crate) async fn create(
    state: Arc<AppState>,
    queue: Arc<dyn RunQueue>,
    tenant: Tenant,
    body: CreateRun,
) -> ApiResult<Response> {
    let wait = body.wait;
    let (agent_name, queued) = enqueue(&state, queue.as_ref(), &tenant, body).await?;
    let run_id = queued.run_id.clone();
    if wait {
        let done = loop {
            match queue.status(&run_id).await? {
                Some(s) if s.finished || s.state == loom_agent::RunState::Suspended => break s,
                _ => tokio::time::sleep(POLL * 2).await,
            }
        };
        return Ok((StatusCode::OK, Json(status_view(&state, &tenant, &done).await?)).into_response());
    }
    // As queued (a worker may have claimed it already: GET tells).
    let s = RunStatus {
        run_id,
        agent: Some(agent_name.clone()),
        session_id: queued.session_id,
        user_id: queued.user_id,
        state: loom_agent::RunState::Queued,
        finished: false,
        created_at: queued.queued_at,
        finished_at: None,
        cancel_requested: false,
        lease_owner: None,
        lease_expires_at: None,
    };
    Ok((StatusCode::CREATED, Json(light_view(&tenant, &agent_name, &s))).into_response())
}

/// `GET /runs/{id}` in queue mode.
pub(crate) async fn get(state: &AppState, queue: &dyn RunQueue, tenant: &Tenant, run_id: &str) -> ApiResult<Value> {
    let s = owned(queue, tenant, run_id).await?;
    status_view(state, tenant, &s).await
}

/// `GET /runs` in queue mode: the tenant's runs from the database, newest first.
pub(crate) async fn list(state: &AppState, queue: &dyn RunQueue, tenant: &Tenant, q: &ListRuns) -> ApiResult<Value> {
    let prefix = format!("{}/", tenant.0);
    let user = q.user_id.as_deref().map(|u| tenant.scoped_user(Some(u)));
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = queue
        .runs_before(&prefix, q.session_id.as_deref(), user.as_deref(), q.state, q.before.as_deref(), limit)
        .await?;
    let default = state.agents.keys().next().cloned().unwrap_or_default();
    let runs: Vec<Value> = rows.iter().map(|s| light_view(tenant, s.agent.as_deref().unwrap_or(&default), s)).collect();
    let next = (rows.len() == limit).then(|| rows.last().map(|r| r.run_id.clone())).flatten();
    Ok(json!({ "runs": runs, "next": next }))
}

/// `POST /runs/{id}/cancel` in queue mode: the cancel is recorded in the database and honoured by
/// the worker that holds the run (or the one that claims it next); answers once the run has ended,
/// or after 5 s with its state then.
pub(crate) async fn cancel(state: &AppState, queue: &dyn RunQueue, tenant: &Tenant, run_id: &str) -> ApiResult<Value> {
    let s = owned(queue, tenant, run_id).await?;
    if !s.finished {
        queue.request_cancel(run_id).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = owned(queue, tenant, run_id).await?;
        if s.finished || tokio::time::Instant::now() >= deadline {
            return status_view(state, tenant, &s).await;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `POST /runs/{id}/resume` in queue mode: the run is queued again for a worker, which resumes it
/// from its journal (a suspended run, or one whose process died); answers at once with its state.
/// 409 when it has finished, or a worker holds it (in flight).
pub(crate) async fn resume(state: &AppState, queue: &dyn RunQueue, tenant: &Tenant, run_id: &str) -> ApiResult<Value> {
    let s = owned(queue, tenant, run_id).await?;
    if s.finished {
        return Err(ApiError::conflict(format!("run {run_id} has finished ({})", json!(s.state))));
    }
    let (name, _) = state.agent(s.agent.as_deref())?;
    if !queue.request_resume(run_id, &name).await? {
        return Err(ApiError::conflict(format!(
            "run {run_id} is in flight (a worker holds it, or it has not begun); nothing to resume"
        )));
    }
    let s = owned(queue, tenant, run_id).await?;
    status_view(state, tenant, &s).await
}

/// A run's durable event log, followed: events in seq order without gaps, ending after the run's
/// terminal event. A gap (an event not yet visible) is waited for, never skipped.
pub(crate) struct Follow {
    pub queue: Arc<dyn RunQueue>,
    pub run_id: String,
    /// The last seq delivered.
    pub after: Option<u64>,
    pub done: bool,
    idle: u32,
}

impl Follow {
    pub(crate) fn new(queue: Arc<dyn RunQueue>, run_id: String, after: Option<u64>) -> Follow {
        Follow { queue, run_id, after, done: false, idle: 0 }
    }

    /// The next events (waiting for some), or `None` once the run's end was delivered.
    pub(crate) async fn next_batch(&mut self) -> Option<Vec<Event>> {
        loop {
            if self.done {
                return None;
            }
            let batch = match self.queue.events_after(&self.run_id, self.after, 500).await {
                Ok(b) => self.contiguous(b),
                Err(e) => {
                    tracing::warn!(run_id = %self.run_id, error = %e, "following the event log failed");
                    Vec::new()
                }
            };
            if !batch.is_empty() {
                self.idle = 0;
                return Some(batch);
            }
            self.idle += 1;
            // A run that finished without a terminal event in its log (its saving failed) ends
            // the stream once its state says so.
            if self.idle.is_multiple_of(20)
                && let Ok(Some(s)) = self.queue.status(&self.run_id).await
                && s.finished
            {
                let rest = self.queue.events_after(&self.run_id, self.after, 500).await.unwrap_or_default();
                let rest = self.contiguous(rest);
                self.done = true;
                return (!rest.is_empty()).then_some(rest);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A JSON page: the leading events without a gap (`done` tells whether the run's end is in it).
    pub(crate) fn contiguous_page(&mut self, batch: Vec<Event>) -> Vec<Event> {
        self.contiguous(batch)
    }

    /// The leading events that follow `after` without a gap; notes the end.
    fn contiguous(&mut self, batch: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::with_capacity(batch.len());
        for e in batch {
            let next = self.after.map_or(0, |a| a + 1);
            if e.seq != next || self.done {
                break;
            }
            self.after = Some(e.seq);
            self.done = e.is_terminal();
            out.push(e);
        }
        out
    }
}
