//! `/sessions`: create, get, list, close, history, runs.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
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

fn entry(state: &AppState, tenant: &Tenant, id: &str) -> ApiResult<SessionEntry> {
    state.sessions().get(&(tenant.clone(), id.to_string())).cloned().ok_or_else(|| ApiError::not_found("session", id))
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
        if state.sessions().contains_key(&(tenant.clone(), id.clone())) {
            return Err(ApiError::conflict(format!("session `{id}` exists")));
        }
    }
    let (name, agent) = state.agent(body.agent.as_deref())?;
    let e = open_session(&state, &tenant, &name, &agent, body.user_id.as_deref(), body.session_id.as_deref())?;
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
    Ok(Json(view(&id, &entry(&state, &tenant, &id)?)))
}

/// Filters of `GET /sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSessions {
    /// Only this user's sessions.
    pub user_id: Option<String>,
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Query(q): Query<ListSessions>,
) -> ApiResult<Json<Value>> {
    let mut found: Vec<(String, SessionEntry)> = state
        .sessions()
        .iter()
        .filter(|((t, _), e)| t == &tenant && q.user_id.as_deref().is_none_or(|u| e.user.as_deref() == Some(u)))
        .map(|((_, id), e)| (id.clone(), e.clone()))
        .collect();
    found.sort_by(|a, b| a.1.created_at.cmp(&b.1.created_at).then_with(|| a.0.cmp(&b.0)));
    let sessions: Vec<Value> = found.iter().map(|(id, e)| view(id, e)).collect();
    Ok(Json(json!({ "sessions": sessions })))
}

pub(crate) async fn close(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = entry(&state, &tenant, &id)?;
    e.session.close().await?;
    Ok(Json(view(&id, &e)))
}

pub(crate) async fn history(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = entry(&state, &tenant, &id)?;
    let (_, agent) = state.agent(Some(&e.agent))?;
    let messages = agent.session_store().history(e.session.key()).await?;
    Ok(Json(json!({ "session_id": id, "messages": messages })))
}

pub(crate) async fn runs(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = entry(&state, &tenant, &id)?;
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
