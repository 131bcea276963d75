//! Approvals: the calls suspended runs wait on, and the decisions (allow, deny, edit) that
//! continue them — the durable pause (`Approval::Defer`) over HTTP.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use loom_agent::RunState;
use loom_agent::governance::Approval;
use loom_agent::store::JournalEntry;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::runs::{owned_run, run_view};
use crate::state::{AppState, Body, Tenant};

/// The pending calls of one journaled run: (call id, tool, arguments, reason).
async fn pending_of(agent: &loom_agent::Agent, run_id: &str) -> ApiResult<Vec<Value>> {
    let Some(journal) = agent.journal() else { return Ok(Vec::new()) };
    let Some(stored) = journal.load(run_id).await? else { return Ok(Vec::new()) };
    if stored.finished {
        return Ok(Vec::new());
    }
    let mut pending: Vec<Value> = Vec::new();
    for entry in &stored.entries {
        match entry {
            JournalEntry::ApprovalPending { call, reason, .. } => {
                let arguments: Value =
                    serde_json::from_str(&call.arguments).unwrap_or(Value::String(call.arguments.clone()));
                pending.push(json!({
                    "run_id": run_id,
                    "session_id": stored.record.session_id,
                    "call_id": call.id,
                    "tool": call.name,
                    "arguments": arguments,
                    "reason": reason,
                }));
            }
            JournalEntry::ApprovalDecision { call_id, .. } => pending.retain(|p| p["call_id"] != json!(call_id)),
            _ => {}
        }
    }
    Ok(pending)
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
) -> ApiResult<Json<Value>> {
    if let Some(queue) = &state.queue {
        // Queue mode: the tenant's suspended runs, whichever worker suspended them.
        let prefix = format!("{}/", tenant.0);
        let mut out = Vec::new();
        for s in queue.runs(&prefix, None, None, Some(RunState::Suspended), 1000).await? {
            let (_, agent) = state.agent(s.agent.as_deref())?;
            out.extend(pending_of(&agent, &s.run_id).await?);
        }
        return Ok(Json(json!({ "approvals": out })));
    }
    let suspended: Vec<(String, String)> = state
        .runs()
        .values()
        .filter(|e| e.tenant == tenant && e.run.state() == RunState::Suspended)
        .map(|e| (e.agent.clone(), e.run.id().to_string()))
        .collect();
    let mut out = Vec::new();
    for (agent, run_id) in suspended {
        let (_, agent) = state.agent(Some(&agent))?;
        out.extend(pending_of(&agent, &run_id).await?);
    }
    Ok(Json(json!({ "approvals": out })))
}

/// The body of a decision.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    /// `allow`, `deny` or `edit`.
    pub decision: DecisionKind,
    /// Why (for `deny`; the model reads it).
    #[serde(default)]
    pub reason: Option<String>,
    /// The arguments to run with (for `edit`).
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// A decision.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Run the call.
    Allow,
    /// Do not run it.
    Deny,
    /// Run it with other arguments.
    Edit,
}

pub(crate) async fn decide(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path((run_id, call_id)): Path<(String, String)>,
    Body(body): Body<Decide>,
) -> ApiResult<Json<Value>> {
    let queued = match &state.queue {
        Some(queue) if state.run_entry(&tenant, &run_id).is_none() => {
            Some((queue.clone(), crate::queued::owned(queue.as_ref(), &tenant, &run_id).await?))
        }
        _ => None,
    };
    let (name, agent, _) = match &queued {
        Some((_, s)) => {
            let (name, agent) = state.agent(s.agent.as_deref())?;
            (name, agent, s.user_id.clone())
        }
        None => owned_run(&state, &tenant, &run_id).await?,
    };
    let approval = match body.decision {
        DecisionKind::Allow => Approval::Allow,
        DecisionKind::Deny => Approval::Deny(body.reason.unwrap_or_else(|| "denied by a reviewer".to_string())),
        DecisionKind::Edit => {
            Approval::Edit(body.arguments.ok_or_else(|| ApiError::bad_request("an `edit` decision needs `arguments`"))?)
        }
    };
    if !pending_of(&agent, &run_id).await?.iter().any(|p| p["call_id"] == json!(call_id)) {
        return Err(ApiError::not_found("pending approval", &call_id));
    }
    if let Some((queue, _)) = queued {
        // Queue mode: the decision is recorded in the journal (it needs no lease), and the run is
        // queued again: the worker that claims it resumes it, and its replay applies the decision.
        let journal = agent.journal().ok_or_else(|| ApiError::conflict("queue mode needs the agent's journal"))?;
        journal.decide(&run_id, &JournalEntry::ApprovalDecision { call_id: call_id.clone(), approval }).await?;
        // The worker may still be suspending it (the pending call is journaled before the run
        // lets go of its lease): wait for that a little.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !queue.request_resume(&run_id, &name).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::conflict(format!(
                    "the decision on `{call_id}` is recorded, but run {run_id} is still held by a worker; \
                     resume it with POST /runs/{run_id}/resume once it has suspended"
                )));
            }
            tokio::time::sleep(crate::queued::POLL).await;
        }
        let s = crate::queued::owned(queue.as_ref(), &tenant, &run_id).await?;
        return crate::queued::status_view(&state, &tenant, &s).await.map(Json);
    }
    let run = agent.decide(&run_id, &call_id, approval).await?;
    state.track(&tenant, &name, &run);
    Ok(Json(run_view(&tenant, &name, &run)))
}
