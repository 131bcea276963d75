//! Several `loom serve` processes executing runs in-process on one database: a cancel for a run
//! that another server executes is recorded on the run's row (`RunQueue::request_cancel`, as queue
//! mode records cancels for workers), and the server that executes it notices it within
//! [`WATCH`] and cancels the run there — it ends `cancelled`, recorded by that server's journal as
//! any cancel. The server that asked waits (at most [`WAIT`]) until the run has ended.
//!
//! A run posted to a named session may wait before it executes (behind the session's earlier
//! runs, here or in another server): [`hold`] records it `queued` on its row, held by this
//! server's lease (renewed by the watcher while it waits), so other servers see it in flight —
//! their busy checks, `GET /runs/{id}`, and the cancels they record, which the watcher honours as
//! for executing runs (the run then ends `cancelled` without having started).
//!
//! A run whose server died (its lease expired before it finished: [`RunStatus::abandoned`]) is
//! not in flight: nothing executes it, and `POST /runs/{id}/resume` continues it, or `POST
//! /runs/{id}/cancel` ends it: the cancelling server takes the run over from its journal (the
//! takeover's fencing number makes exactly one of concurrent resumers and cancellers win) only to
//! end it `cancelled` ([`loom_agent::ResumeOptions::cancelled`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use loom_agent::store::{RunQueue, RunStatus};
use loom_agent::{Agent, Run, RunState};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Tenant};

/// How often a server with runs in flight looks for cancels recorded for them by other servers.
pub(crate) const WATCH: Duration = Duration::from_millis(200);

/// How long a request waits for a run of another server to end after asking it to cancel.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// How often the waiting request reads the run's state.
const POLL: Duration = Duration::from_millis(50);

/// Has this server watch its runs for cancels recorded by other servers (one task, running while
/// it has journaled runs in flight). Not in queue mode: there the workers watch.
pub(crate) fn watch_cancels(state: &Arc<AppState>, agent: &Agent) {
    if state.queue.is_some() || agent.journal().is_none() || state.cancel_watch.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        state.cancel_watch.store(false, Ordering::Release);
        return;
    };
    handle.spawn(watch(Arc::clone(state)));
}

/// This server's runs that have not ended, by agent: executing ones (begun, so their rows exist)
/// and waiting ones (whose rows exist when they were [held](hold)).
fn unended(state: &AppState) -> HashMap<String, HashMap<String, Run>> {
    let mut out: HashMap<String, HashMap<String, Run>> = HashMap::new();
    for (id, e) in state.runs().iter() {
        if matches!(e.run.state(), RunState::Running | RunState::Queued) {
            out.entry(e.agent.clone()).or_default().insert(id.clone(), e.run.clone());
        }
    }
    out
}

/// Records `run` (just started in a named session, so it may wait before it executes) `queued`
/// on its row, held by this server (see the module's documentation). Agents without a durable
/// journal have no rows: nothing to do.
pub(crate) async fn hold(agent_name: &str, agent: &Agent, run: &Run, request: Value) -> ApiResult<()> {
    if agent.journal().is_none() || run.state().is_terminal() {
        return Ok(());
    }
    agent.hold_waiting(agent_name, run, request).await?;
    Ok(())
}

/// Whether this server holds runs that have not ended (they may begin executing soon).
fn any_live(state: &AppState) -> bool {
    state.runs().values().any(|e| !e.run.state().is_terminal() && e.run.state() != RunState::Suspended)
}

async fn watch(state: Arc<AppState>) {
    let mut renewed: HashMap<String, tokio::time::Instant> = HashMap::new();
    loop {
        tokio::time::sleep(WATCH).await;
        if !any_live(&state) {
            state.cancel_watch.store(false, Ordering::Release);
            // A run tracked since found the flag still set and started no watcher: look again.
            if !any_live(&state) || state.cancel_watch.swap(true, Ordering::AcqRel) {
                return;
            }
        }
        for (name, runs) in unended(&state) {
            let Some(agent) = state.agents.get(&name) else { continue };
            let Ok(queue) = agent.run_queue() else { continue };
            let ids: Vec<String> = runs.keys().cloned().collect();
            renew_waiting(agent, &name, &runs, &mut renewed).await;
            match queue.cancels_requested(&ids).await {
                Ok(asked) => {
                    for id in asked {
                        if let Some(run) = runs.get(&id) {
                            tracing::info!(run_id = %id, "a cancel recorded by another server: cancelling the run");
                            run.cancel();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the cancels other servers recorded failed"),
            }
        }
    }
}

/// Renews (every third of the lease's life) this server's lease on its waiting runs of `agent`
/// that it [held](hold); the ones that began renew their own.
async fn renew_waiting(
    agent: &Agent,
    name: &str,
    runs: &HashMap<String, Run>,
    renewed: &mut HashMap<String, tokio::time::Instant>,
) {
    let now = tokio::time::Instant::now();
    if renewed.get(name).is_some_and(|at| now.duration_since(*at) < agent.lease_ttl() / 3) {
        return;
    }
    let waiting: Vec<String> =
        runs.iter().filter(|(_, r)| r.state() == RunState::Queued).map(|(id, _)| id.clone()).collect();
    if waiting.is_empty() {
        return;
    }
    renewed.insert(name.to_string(), now);
    if let Err(e) = agent.renew_waiting(&waiting).await {
        tracing::warn!(error = %e, "renewing the leases of waiting runs failed");
    }
}

/// The runs of the tenant's session `session_id` that the agent's store records as in flight in
/// another process on the database (begun, not ended, not suspended, their lease alive), newest
/// first.
pub(crate) async fn in_flight(
    state: &AppState,
    agent: &Agent,
    tenant: &Tenant,
    session_id: &str,
) -> ApiResult<Vec<RunStatus>> {
    let Ok(store) = agent.run_queue() else { return Ok(Vec::new()) };
    let prefix = format!("{}/", tenant.0);
    let rows = store.runs_before(&prefix, Some(session_id), None, None, None, 20).await?;
    let now = chrono::Utc::now();
    let held = state.runs();
    Ok(rows.into_iter().filter(|r| r.in_flight(now) && !held.contains_key(&r.run_id)).collect())
}

/// Waits (at most [`WAIT`]) until none of `run_ids` is in flight (each ended, or its process
/// died); the ones still in flight then.
async fn wait_ended(queue: &dyn RunQueue, run_ids: &[String]) -> ApiResult<Vec<String>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut left = Vec::new();
        let now = chrono::Utc::now();
        for id in run_ids {
            if queue.status(id).await?.is_some_and(|s| s.in_flight(now)) {
                left.push(id.clone());
            }
        }
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `busy: "interrupt"` for the session's runs in flight in other servers: records a cancel for
/// each and waits until they have ended; 409 when one has not ended within [`WAIT`].
pub(crate) async fn interrupt(agent: &Agent, session_id: &str, runs: &[RunStatus]) -> ApiResult<()> {
    let queue = agent.run_queue()?;
    let ids: Vec<String> = runs.iter().map(|r| r.run_id.clone()).collect();
    for id in &ids {
        queue.request_cancel(id).await?;
    }
    let left = wait_ended(queue.as_ref(), &ids).await?;
    if let Some(first) = left.first() {
        return Err(ApiError::conflict(format!(
            "session `{session_id}`: the run {first} in flight in another server process was asked to cancel \
             and has not ended within {} s; the cancel stays recorded — retry later",
            WAIT.as_secs()
        )));
    }
    Ok(())
}

/// `POST /runs/{id}/cancel` for a run this server does not hold: one another server on the
/// database executes or holds waiting (its cancel recorded, then waited for at most [`WAIT`]),
/// one whose server died (taken over here only to end it `cancelled`), or one that ended. The run
/// as `GET /runs/{id}` shows it; `None` when no agent's store has it for the tenant.
pub(crate) async fn cancel(state: &Arc<AppState>, tenant: &Tenant, run_id: &str) -> ApiResult<Option<Value>> {
    if state.runs().contains_key(run_id) {
        return Ok(None);
    }
    for (name, agent) in &state.agents {
        let Ok(queue) = agent.run_queue() else { continue };
        let Some(status) = queue.status(run_id).await? else { continue };
        if tenant.owns(status.user_id.as_deref()).is_none() {
            return Ok(None);
        }
        if status.abandoned(chrono::Utc::now()) {
            return cancel_abandoned(state, tenant, name, agent, queue.as_ref(), &status).await.map(Some);
        }
        if status.in_flight(chrono::Utc::now()) {
            queue.request_cancel(run_id).await?;
            wait_ended(queue.as_ref(), &[run_id.to_string()]).await?;
        }
        return crate::runs::stored_view(state, tenant, run_id).await;
    }
    Ok(None)
}

/// Ends a run whose server died `cancelled`: taken over from its journal (a fencing number of
/// its own) only to end it, so its journal, events (the terminal one: followers' streams end),
/// transcript and audit log record the end. When another server took it over first (a resume),
/// the run is in flight there: its cancel is recorded for that server, as for any run in flight.
async fn cancel_abandoned(
    state: &Arc<AppState>,
    tenant: &Tenant,
    name: &str,
    agent: &Agent,
    queue: &dyn RunQueue,
    status: &RunStatus,
) -> ApiResult<Value> {
    let run_id = status.run_id.as_str();
    let user = status.user_id.clone().unwrap_or_else(|| tenant.scoped_user(None));
    match agent.resume_with(run_id, loom_agent::ResumeOptions::default().user(user).cancelled()).await {
        Ok(run) => {
            state.track(tenant, name, &run);
            let _ = tokio::time::timeout(WAIT, run.result()).await;
            return Ok(crate::runs::run_view(tenant, name, &run));
        }
        Err(loom_agent::Error::LeaseHeld { .. }) => {
            queue.request_cancel(run_id).await?;
            wait_ended(queue, &[run_id.to_string()]).await?;
        }
        Err(loom_agent::Error::RunFinished { .. }) => {}
        // It never began (its server died while it waited): claimed by id and ended.
        Err(loom_agent::Error::RunNotFound(_)) => match agent.cancel_unbegun(run_id).await? {
            Some(run) => {
                state.track(tenant, name, &run);
                let _ = tokio::time::timeout(WAIT, run.result()).await;
                return Ok(crate::runs::run_view(tenant, name, &run));
            }
            // Another process claimed it first: in flight there, or ended.
            None => {
                queue.request_cancel(run_id).await?;
                wait_ended(queue, &[run_id.to_string()]).await?;
            }
        },
        Err(e) => return Err(e.into()),
    }
    crate::runs::stored_view(state, tenant, run_id).await?.ok_or_else(|| ApiError::not_found("run", run_id))
}
