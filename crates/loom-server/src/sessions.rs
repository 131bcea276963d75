//! `/sessions`: create, get, list, close, history, runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use loom_agent::store::{SessionRecord, StoredSession};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::runs::{check_user, open_session};
use crate::state::{AppState, Body, SessionEntry, Tenant};

/// The body of `POST /sessions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The id (made when unset); an id the tenant already has is a 409.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The user the session belongs to.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
    /// Metadata merged into the session's.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// The session extension that names the agent a server session belongs to (so that one read
/// back from the store after it left the server's memory is served by the same agent).
pub(crate) const AGENT_EXTENSION: &str = "loom_server_agent";

fn view(id: &str, e: &SessionEntry) -> Value {
    json!({
        "session_id": id,
        "user_id": e.user,
        "agent": e.agent,
        "closed": e.session.is_closed(),
        "metadata": e.session.metadata(),
        "created_at": e.created_at,
    })
}

/// The tenant's session of this id: held in memory, or read back from the agents' session stores
/// (a session the bounded map dropped, or one another server process opened) and held again.
pub(crate) async fn lookup(state: &AppState, tenant: &Tenant, id: &str) -> ApiResult<Option<SessionEntry>> {
    if let Some(e) = state.sessions().get(&(tenant.clone(), id.to_string())) {
        return Ok(Some(e.clone()));
    }
    let prefix = format!("{}/", tenant.0);
    for (name, agent) in &state.agents {
        let found = agent.session_store().find_sessions(&prefix, Some(id), 1).await?;
        let Some(stored) = found.into_iter().next() else { continue };
        let Some(user) = tenant.owns(stored.record.user_id.as_deref()) else { continue };
        // The agent the session was opened with, when this server has it.
        let (name, agent) = match stored.record.extensions.get(AGENT_EXTENSION).and_then(Value::as_str) {
            Some(n) => state.agent(Some(n)).unwrap_or_else(|_| (name.clone(), agent.clone())),
            None => (name.clone(), agent.clone()),
        };
        let config = loom_agent::SessionConfig {
            id: Some(id.to_string()),
            user_id: stored.record.user_id.clone(),
            metadata: stored.record.metadata.clone(),
            extensions: stored.record.extensions.clone(),
        };
        let session = agent.session(config);
        if stored.closed && !session.is_closed() {
            session.close().await?;
        }
        let entry = SessionEntry { agent: name, user, session, created_at: stored.updated_at };
        let mut sessions = state.sessions();
        // Another request may have restored it meanwhile: keep the one held.
        let key = (tenant.clone(), id.to_string());
        if let Some(held) = sessions.get(&key) {
            return Ok(Some(held.clone()));
        }
        sessions.insert(key, entry.clone());
        return Ok(Some(entry));
    }
    Ok(None)
}

/// The tenant's session of this id (in memory or in the store), or 404.
pub(crate) async fn entry(state: &AppState, tenant: &Tenant, id: &str) -> ApiResult<SessionEntry> {
    lookup(state, tenant, id).await?.ok_or_else(|| ApiError::not_found("session", id))
}

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Body(body): Body<CreateSession>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_user(body.user_id.as_deref())?;
    if let Some(id) = &body.session_id {
        if id.is_empty() {
            return Err(ApiError::bad_request("`session_id` is empty; omit it for a new id"));
        }
        if lookup(&state, &tenant, id).await?.is_some() {
            return Err(ApiError::conflict(format!("session `{id}` exists")));
        }
    }
    let (name, agent) = state.agent(body.agent.as_deref())?;
    let e = open_session(&state, &tenant, &name, &agent, body.user_id.as_deref(), body.session_id.as_deref())?;
    // Stored now (not at its first run): it outlives the server's memory of it.
    let mut record = SessionRecord {
        id: e.session.id().to_string(),
        user_id: Some(tenant.scoped_user(e.user.as_deref())),
        metadata: body.metadata.clone(),
        ..Default::default()
    };
    record.extensions.insert(AGENT_EXTENSION.into(), json!(name));
    agent.session_store().open_session(&record).await?;
    if !body.metadata.is_empty() {
        let mut config = loom_agent::SessionConfig::new(e.session.id()).user(tenant.scoped_user(e.user.as_deref()));
        config.metadata = body.metadata;
        let _ = agent.session(config);
    }
    Ok((StatusCode::CREATED, Json(view(e.session.id(), &e))))
}

pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(view(&id, &entry(&state, &tenant, &id).await?)))
}

/// Filters of `GET /sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSessions {
    /// Only this user's sessions.
    pub user_id: Option<String>,
    /// At most this many (default and most 1,000): the most recently used.
    pub limit: Option<usize>,
}

/// A session listed from a store: (id, user as the client names it, agent, closed, metadata,
/// last written).
fn stored_view(tenant: &Tenant, agent: &str, s: &StoredSession) -> Option<(String, DateTime<Utc>, Value)> {
    let user = tenant.owns(s.record.user_id.as_deref())?;
    let agent = s.record.extensions.get(AGENT_EXTENSION).and_then(Value::as_str).unwrap_or(agent);
    let v = json!({
        "session_id": s.record.id,
        "user_id": user,
        "agent": agent,
        "closed": s.closed,
        "metadata": s.record.metadata,
        "created_at": s.updated_at,
    });
    Some((s.record.id.clone(), s.updated_at, v))
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Query(q): Query<ListSessions>,
) -> ApiResult<Json<Value>> {
    check_user(q.user_id.as_deref())?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 1000);
    // Held in memory (live: closed, metadata), then the stores' (every process's, and the ones
    // this server dropped from memory).
    let mut found: BTreeMap<String, (DateTime<Utc>, Value)> = state
        .sessions()
        .iter()
        .filter(|((t, _), e)| t == &tenant && q.user_id.as_deref().is_none_or(|u| e.user.as_deref() == Some(u)))
        .map(|((_, id), e)| (id.clone(), (e.created_at, view(id, e))))
        .collect();
    let prefix = match q.user_id.as_deref() {
        Some(u) => tenant.scoped_user(Some(u)),
        None => format!("{}/", tenant.0),
    };
    for (name, agent) in &state.agents {
        for s in agent.session_store().find_sessions(&prefix, None, limit).await? {
            if q.user_id.is_some() && s.record.user_id.as_deref() != Some(prefix.as_str()) {
                continue;
            }
            if let Some((id, at, v)) = stored_view(&tenant, name, &s) {
                found.entry(id).or_insert((at, v));
            }
        }
    }
    let mut found: Vec<(String, (DateTime<Utc>, Value))> = found.into_iter().collect();
    // The most recent `limit`, oldest first.
    found.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| b.0.cmp(&a.0)));
    found.truncate(limit);
    found.reverse();
    let sessions: Vec<Value> = found.into_iter().map(|(_, (_, v))| v).collect();
    Ok(Json(json!({ "sessions": sessions })))
}

pub(crate) async fn close(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = entry(&state, &tenant, &id).await?;
    e.session.close().await?;
    Ok(Json(view(&id, &e)))
}

pub(crate) async fn history(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = entry(&state, &tenant, &id).await?;
    let (_, agent) = state.agent(Some(&e.agent))?;
    let messages = agent.session_store().history(e.session.key()).await?;
    Ok(Json(json!({ "session_id": id, "messages": messages })))
}

pub(crate) async fn runs(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = entry(&state, &tenant, &id).await?;
    let runs = e.session.list_runs().await?;
    let runs: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "run_id": r.run_id,
                "state": r.state,
                "user_id": tenant.owns(r.user_id.as_deref()).flatten(),
            })
        })
        .collect();
    Ok(Json(json!({ "session_id": id, "runs": runs })))
}
