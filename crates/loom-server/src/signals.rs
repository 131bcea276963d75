//! Signals and schedules over HTTP.
//!
//! - `POST /sessions/{session_id}/signals`: a signal (text, source, type, urgency, payload,
//!   dedupe key) into one of the tenant's sessions (opened when new, as `POST /runs` does); the
//!   agent's attention policy decides, and the answer says what happened: a run started (its
//!   `run_id`), the signal was stored (ignored, or observed for the next run), or it was a
//!   duplicate of an earlier signal with the same dedupe key. In queue mode the run is queued for a
//!   worker and an interrupt is a cancel recorded for the workers holding the session's runs.
//! - `GET /sessions/{session_id}/signals`: the session's signals with their status.
//! - `POST /schedules`, `GET /schedules`, `DELETE /schedules/{schedule_id}`: schedules (cron, a
//!   fixed interval, or once; missed occurrences skipped or run once) into the tenant's users'
//!   sessions, stored in the agent's signal store and fired by a worker (`loom worker`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use loom_agent::signal::{MissedPolicy, RuntimeSignal, Schedule, ScheduleRecord, SignalRecord, SignalStatus, Urgency};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::runs::{check_user, open_session, run_view};
use crate::state::{AppState, Body, SessionEntry, Tenant};

/// The body of `POST /sessions/{session_id}/signals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostSignal {
    /// What happened, as the model reads it.
    pub text: String,
    /// Where it came from (default `api`).
    #[serde(default)]
    pub source: Option<String>,
    /// What kind of event it is (default `message`).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `low`, `normal` (default), `high` or `critical`.
    #[serde(default)]
    pub urgency: Urgency,
    /// Data that goes with it.
    #[serde(default)]
    pub payload: Value,
    /// A second signal with the same key in the session is a duplicate, dropped.
    #[serde(default)]
    pub dedupe_key: Option<String>,
    /// The session's user (for a session that is new; must match an existing one's).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
}

/// The tenant's session of this id: the known one, or a new one of `user`.
fn session_for(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
    user: Option<&str>,
    agent: Option<&str>,
) -> ApiResult<SessionEntry> {
    let known = state.sessions().get(&(tenant.clone(), id.to_string())).cloned();
    if let Some(entry) = known {
        if user.is_some() && entry.user.as_deref() != user {
            return Err(ApiError::conflict(format!("session `{id}` belongs to another user")));
        }
        if entry.session.is_closed() {
            return Err(ApiError::conflict(format!("session `{id}` is closed")));
        }
        return Ok(entry);
    }
    let (name, agent) = state.agent(agent)?;
    open_session(state, tenant, &name, &agent, user, Some(id))
}

pub(crate) async fn post(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(session_id): Path<String>,
    Body(body): Body<PostSignal>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_user(body.user_id.as_deref())?;
    if body.text.trim().is_empty() {
        return Err(ApiError::bad_request("a signal needs a non-empty `text`"));
    }
    crate::sessions::lookup(&state, &tenant, &session_id).await?;
    if let Some(queue) = state.queue.clone() {
        return post_queued(&state, queue.as_ref(), &tenant, &session_id, body).await;
    }
    let entry = session_for(&state, &tenant, &session_id, body.user_id.as_deref(), body.agent.as_deref())?;
    let signal = signal_of(body);
    let receipt = entry.session.receive(signal, None).await?;
    if let Some(run) = &receipt.run {
        state.track(&tenant, &entry.agent, run);
    }
    let outcome = match (&receipt.run, receipt.duplicate, receipt.attention) {
        (Some(_), _, _) => "run_started",
        (None, true, _) => "duplicate",
        _ => "stored",
    };
    let body = json!({
        "signal_id": receipt.signal_id,
        "session_id": session_id,
        "outcome": outcome,
        "duplicate": receipt.duplicate,
        "attention": receipt.attention,
        "run_id": receipt.run.as_ref().map(|r| r.id().to_string()),
        "run": receipt.run.as_ref().map(|r| run_view(&tenant, &entry.agent, r)),
        "interrupted": receipt.interrupted,
    });
    let status = if receipt.duplicate { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(body)))
}

fn signal_of(body: PostSignal) -> RuntimeSignal {
    let mut signal = RuntimeSignal::create(
        body.text,
        body.source.unwrap_or_else(|| "api".into()),
        body.kind.unwrap_or_else(|| "message".into()),
        body.urgency,
    )
    .payload(body.payload);
    if let Some(key) = body.dedupe_key.filter(|k| !k.is_empty()) {
        signal = signal.dedupe_key(key);
    }
    signal
}

/// `POST /sessions/{id}/signals` in queue mode: the attention policy decides here (seeing the
/// session's runs in flight in the database), a run it starts is queued for a worker, and an
/// interrupt is a cancel recorded for the workers holding the session's runs. A `tool.result`
/// signal (which continues a suspended run in the receiving process) is refused with 501.
async fn post_queued(
    state: &AppState,
    queue: &dyn loom_agent::store::RunQueue,
    tenant: &Tenant,
    session_id: &str,
    body: PostSignal,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if body.kind.as_deref() == Some(loom_agent::signal::TOOL_RESULT) {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "a `tool.result` signal continues a suspended run in the process that receives it; in queue mode \
             send it to a worker's process (`loom signal`) instead",
        ));
    }
    let (name, agent) = state.agent(body.agent.as_deref())?;
    let user = tenant.scoped_user(body.user_id.as_deref());
    let in_flight: Vec<String> = queue
        .runs(&user, Some(session_id), Some(&user), None, 1000)
        .await?
        .into_iter()
        .filter(|r| !r.state.is_terminal())
        .map(|r| r.run_id)
        .collect();
    let signal = signal_of(body);
    let (receipt, queued) = agent.receive_queued(&name, session_id, Some(&user), signal, None, &in_flight).await?;
    let run = match &queued {
        Some(q) => match queue.status(&q.run_id).await? {
            Some(s) => Some(crate::queued::status_view(state, tenant, &s).await?),
            None => None,
        },
        None => None,
    };
    let outcome = match (&queued, receipt.duplicate) {
        (Some(_), _) => "run_started",
        (None, true) => "duplicate",
        _ => "stored",
    };
    let answer = json!({
        "signal_id": receipt.signal_id,
        "session_id": session_id,
        "outcome": outcome,
        "duplicate": receipt.duplicate,
        "attention": receipt.attention,
        "run_id": queued.as_ref().map(|q| q.run_id.clone()),
        "run": run,
        "interrupted": receipt.interrupted,
    });
    let status = if receipt.duplicate { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(answer)))
}

/// Filters of `GET /sessions/{session_id}/signals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSignals {
    /// `pending` (not handled yet: pending, claimed or observed), `processed` (handled), or one of
    /// the stored statuses `claimed`, `observed`, `handled`.
    #[serde(default)]
    pub status: Option<String>,
    /// The session's user, for a session this server did not open (queue mode).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The session's agent, for a session this server did not open (queue mode).
    #[serde(default)]
    pub agent: Option<String>,
}

fn signal_view(tenant: &Tenant, r: &SignalRecord) -> Value {
    json!({
        "signal_id": r.signal.id,
        "session_id": r.session_id,
        "user_id": tenant.owns(r.user_id.as_deref()).flatten(),
        "text": r.signal.text,
        "source": r.signal.source,
        "type": r.signal.kind,
        "urgency": r.signal.urgency,
        "payload": r.signal.payload,
        "dedupe_key": r.signal.dedupe_key,
        "received_at": r.signal.received_at,
        "status": r.status,
        "attention": r.attention,
        "run_id": r.run_id,
        "handled_at": r.handled_at,
    })
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(session_id): Path<String>,
    Query(q): Query<ListSignals>,
) -> ApiResult<Json<Value>> {
    let entry = crate::sessions::lookup(&state, &tenant, &session_id).await?;
    let keep: fn(SignalStatus) -> bool = match q.status.as_deref() {
        None => |_| true,
        Some("pending") => |s| s != SignalStatus::Handled,
        Some("processed" | "handled") => |s| s == SignalStatus::Handled,
        Some("claimed") => |s| s == SignalStatus::Claimed,
        Some("observed") => |s| s == SignalStatus::Observed,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown status `{other}`; accepted: pending, processed, claimed, observed, handled"
            )));
        }
    };
    let records = match (entry, &state.queue) {
        (Some(entry), _) => entry.session.signals().await?,
        // Queue mode: a session the signals went to through another server, read from the store.
        (None, Some(_)) => {
            let (_, agent) = state.agent(q.agent.as_deref())?;
            let user = tenant.scoped_user(q.user_id.as_deref());
            let key = loom_agent::store::SessionKey::scoped(Some(user.as_str()), &session_id);
            let records = agent.signal_store().signals(key).await?;
            if records.is_empty() {
                return Err(ApiError::not_found("session", &session_id));
            }
            records
        }
        (None, None) => return Err(ApiError::not_found("session", &session_id)),
    };
    let signals: Vec<Value> = records.iter().filter(|r| keep(r.status)).map(|r| signal_view(&tenant, r)).collect();
    Ok(Json(json!({ "session_id": session_id, "signals": signals })))
}

/// The body of `POST /schedules`: exactly one of `cron`, `every_ms` and `at`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// The session each occurrence signals (opened by the worker when new).
    pub session_id: String,
    /// The text of each occurrence's signal.
    pub input: String,
    /// The session's user (within the caller's tenant).
    #[serde(default)]
    pub user_id: Option<String>,
    /// A cron expression (five fields, or six with seconds; UTC), such as `0 9 * * MON-FRI`.
    #[serde(default)]
    pub cron: Option<String>,
    /// A fixed interval in milliseconds (at least 1).
    #[serde(default)]
    pub every_ms: Option<u64>,
    /// Once, at this time (RFC 3339).
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// The urgency of the signals (default normal).
    #[serde(default)]
    pub urgency: Urgency,
    /// Occurrences missed while no worker ran: `skip` (default) or `run_once`.
    #[serde(default)]
    pub missed: MissedPolicy,
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
}

fn schedule_view(tenant: &Tenant, agent: &str, r: &ScheduleRecord) -> Value {
    json!({
        "schedule_id": r.id,
        "agent": agent,
        "session_id": r.session_id,
        "user_id": tenant.owns(r.user_id.as_deref()).flatten(),
        "schedule": r.schedule,
        "input": r.input,
        "urgency": r.urgency,
        "missed": r.missed,
        "next_at": r.next_at,
        "created_at": r.created_at,
    })
}

pub(crate) async fn create_schedule(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Body(body): Body<CreateSchedule>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_user(body.user_id.as_deref())?;
    if body.session_id.is_empty() {
        return Err(ApiError::bad_request("`session_id` is empty"));
    }
    if body.input.trim().is_empty() {
        return Err(ApiError::bad_request("a schedule needs a non-empty `input`"));
    }
    let schedule = match (body.cron, body.every_ms, body.at) {
        (Some(expr), None, None) => Schedule::cron(expr),
        (None, Some(every_ms), None) => Schedule::Every { every_ms },
        (None, None, Some(at)) => Schedule::once(at),
        _ => return Err(ApiError::bad_request("give exactly one of `cron`, `every_ms` and `at`")),
    };
    let (name, agent) = state.agent(body.agent.as_deref())?;
    let record = ScheduleRecord::new(schedule, body.session_id, body.input)
        .user(tenant.scoped_user(body.user_id.as_deref()))
        .urgency(body.urgency)
        .missed(body.missed);
    let record = agent.add_schedule(record).await?;
    Ok((StatusCode::CREATED, Json(schedule_view(&tenant, &name, &record))))
}

/// Filters of `GET /schedules` and the agent of `DELETE /schedules/{schedule_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSchedules {
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
    /// Only this user's schedules.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Only this session's schedules.
    #[serde(default)]
    pub session_id: Option<String>,
}

pub(crate) async fn list_schedules(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Query(q): Query<ListSchedules>,
) -> ApiResult<Json<Value>> {
    let (name, agent) = state.agent(q.agent.as_deref())?;
    let schedules: Vec<Value> = agent
        .schedules()
        .await?
        .iter()
        .filter(|r| match tenant.owns(r.user_id.as_deref()) {
            None => false,
            Some(user) => {
                q.user_id.as_deref().is_none_or(|u| user.as_deref() == Some(u))
                    && q.session_id.as_deref().is_none_or(|s| r.session_id == s)
            }
        })
        .map(|r| schedule_view(&tenant, &name, r))
        .collect();
    Ok(Json(json!({ "schedules": schedules })))
}

pub(crate) async fn delete_schedule(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
    Query(q): Query<ListSchedules>,
) -> ApiResult<Json<Value>> {
    let (name, agent) = state.agent(q.agent.as_deref())?;
    let found =
        agent.schedules().await?.into_iter().find(|r| r.id == id && tenant.owns(r.user_id.as_deref()).is_some());
    let Some(record) = found else { return Err(ApiError::not_found("schedule", &id)) };
    if !agent.remove_schedule(&id).await? {
        return Err(ApiError::not_found("schedule", &id));
    }
    let mut view = schedule_view(&tenant, &name, &record);
    view["deleted"] = json!(true);
    Ok(Json(view))
}
