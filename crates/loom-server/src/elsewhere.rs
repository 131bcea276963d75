//! Several `loom serve` processes executing runs in-process on one database: a cancel for a run
//! that another server executes is recorded on the run's row (`RunQueue::request_cancel`, as queue
//! mode records cancels for workers), and the server that executes it notices it within
//! [`WATCH`] and cancels the run there — it ends `cancelled`, recorded by that server's journal as
//! any cancel. The server that asked waits (at most [`WAIT`]) until the run has ended.
//!
//! A run whose server died (its lease expired before it finished: [`RunStatus::abandoned`]) is
//! not in flight: nothing executes it, and `POST /runs/{id}/resume` continues it.

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

/// This server's runs that execute (begun, so their rows exist), by agent.
fn executing(state: &AppState) -> HashMap<String, HashMap<String, Run>> {
    let mut out: HashMap<String, HashMap<String, Run>> = HashMap::new();
    for (id, e) in state.runs().iter() {
        if e.run.state() == RunState::Running {
            out.entry(e.agent.clone()).or_default().insert(id.clone(), e.run.clone());
        }
    }
    out
}

/// Whether this server holds runs that have not ended (they may begin executing soon).
fn any_live(state: &AppState) -> bool {
    state.runs().values().any(|e| !e.run.state().is_terminal() && e.run.state() != RunState::Suspended)
}

async fn watch(state: Arc<AppState>) {
    loop {
        tokio::time::sleep(WATCH).await;
        if !any_live(&state) {
            state.cancel_watch.store(false, Ordering::Release);
            // A run tracked since found the flag still set and started no watcher: look again.
            if !any_live(&state) || state.cancel_watch.swap(true, Ordering::AcqRel) {
                return;
            }
        }
        for (name, runs) in executing(&state) {
            let Some(queue) = state.agents.get(&name).and_then(|a| a.run_queue().ok()) else { continue };
            let ids: Vec<String> = runs.keys().cloned().collect();
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
/// database executes (its cancel recorded, then waited for at most [`WAIT`]), or one that ended.
/// The run as `GET /runs/{id}` shows it; `None` when no agent's store has it for the tenant.
/// 409 for a run whose server died (nothing executes it to cancel).
pub(crate) async fn cancel(state: &AppState, tenant: &Tenant, run_id: &str) -> ApiResult<Option<Value>> {
    if state.runs().contains_key(run_id) {
        return Ok(None);
    }
    for agent in state.agents.values() {
        let Ok(queue) = agent.run_queue() else { continue };
        let Some(status) = queue.status(run_id).await? else { continue };
        if tenant.owns(status.user_id.as_deref()).is_none() {
            return Ok(None);
        }
        if status.abandoned(chrono::Utc::now()) {
            return Err(ApiError::conflict(format!(
                "run {run_id} is not executing in any server (its process stopped before it finished); \
                 POST /runs/{run_id}/resume continues it"
            )));
        }
        if status.in_flight(chrono::Utc::now()) {
            queue.request_cancel(run_id).await?;
            wait_ended(queue.as_ref(), &[run_id.to_string()]).await?;
        }
        return crate::runs::stored_view(state, tenant, run_id).await;
    }
    Ok(None)
}
