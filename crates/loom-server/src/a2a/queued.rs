//! A2A in queue mode (`[server] execution = "queue"`): tasks are runs of the durable queue, executed
//! by whichever worker claims them; this server answers `GetTask`, `CancelTask`,
//! `SubscribeToTask` and `ListTasks` from the database (a cancel is recorded for the worker).

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use loom_agent::store::RunQueue;
use serde_json::Value;

use super::rpc::RpcError;
use super::{stream, task};
use crate::exec::QueuedRun;
use crate::state::{AppState, Tenant};

/// The queued run of a task the tenant owns; `TaskNotFound` otherwise (another tenant's too).
pub(super) async fn owned(
    state: &AppState,
    queue: &Arc<dyn RunQueue>,
    tenant: &Tenant,
    id: &str,
) -> Result<QueuedRun, RpcError> {
    // Not the tenant's (or no such run) is "not found"; a database failure is said as such.
    let s = crate::queued::owned(queue.as_ref(), tenant, id).await.map_err(|e| {
        if e.status == axum::http::StatusCode::NOT_FOUND {
            RpcError::task_not_found(id)
        } else {
            RpcError::internal(e.message)
        }
    })?;
    let (_, agent) = state.agent(s.agent.as_deref()).map_err(|_| RpcError::task_not_found(id))?;
    Ok(QueuedRun::of_status(queue.clone(), agent, &s))
}

/// `GetTask`.
pub(super) async fn get(
    state: &AppState,
    queue: &Arc<dyn RunQueue>,
    tenant: &Tenant,
    id: &str,
    history: Option<i64>,
) -> Result<Value, RpcError> {
    let run = owned(state, queue, tenant, id).await?;
    Ok(task::task(&run.transcript().await?, history))
}

/// `CancelTask`: recorded for the worker that holds the run; answers once it has ended (or after
/// 5 s with its state then).
pub(super) async fn cancel(
    state: &AppState,
    queue: &Arc<dyn RunQueue>,
    tenant: &Tenant,
    id: &str,
) -> Result<Value, RpcError> {
    let run = owned(state, queue, tenant, id).await?;
    let t = run.transcript().await?;
    let a2a = task::task_state(t.state, t.error.as_ref());
    if t.state == loom_agent::RunState::Suspended {
        return Err(RpcError::task_not_cancelable(
            id,
            "it waits for a person's approval of a tool call; deny the call to end it",
        ));
    }
    if task::is_terminal(a2a) {
        return Err(RpcError::task_not_cancelable(id, &format!("it has ended ({a2a})")));
    }
    queue.request_cancel(id).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), run.result()).await;
    Ok(task::task(&run.transcript().await?, None))
}

/// `SubscribeToTask`: the task, then its durable event log followed until it ends.
pub(super) async fn subscribe(
    state: &AppState,
    queue: &Arc<dyn RunQueue>,
    tenant: &Tenant,
    req_id: Value,
    id: &str,
) -> Result<Response, RpcError> {
    let run = owned(state, queue, tenant, id).await?;
    let t = run.transcript().await?;
    let a2a = task::task_state(t.state, t.error.as_ref());
    if t.state == loom_agent::RunState::Suspended {
        return Ok(stream::single(req_id, task::task(&t, None)));
    }
    if task::is_terminal(a2a) {
        return Err(RpcError::unsupported(format!("task `{id}` is in a terminal state ({a2a})")));
    }
    Ok(stream::task_stream(req_id, run.events(), task::task(&t, None)))
}
