//! Memory over HTTP: facts, search, working blocks, forgetting and export, per user of the
//! caller's tenant (`user_id` names a user within the tenant; the stores see `TENANT/USER`, so
//! nothing crosses between tenants). An agent without a memory store answers 404 with the code
//! `memory_not_configured`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use loom_agent::memory::{Forget, MemoryHandle, NewFact};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::runs::check_user;
use crate::state::{AppState, Body, Tenant};

/// The agent's memory, and the store's id of the user.
fn memory_of(
    state: &AppState,
    tenant: &Tenant,
    agent: Option<&str>,
    user: Option<&str>,
) -> ApiResult<(MemoryHandle, String)> {
    check_user(user)?;
    let (name, agent) = state.agent(agent)?;
    let memory = agent.memory();
    if !memory.is_enabled() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "memory_not_configured",
            format!(
                "agent `{name}` has no memory store; configure `memory = \"sqlite:./memory.db\"` (or postgres://…)"
            ),
        ));
    }
    Ok((memory, tenant.scoped_user(user)))
}

/// The query of the memory endpoints that read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// The user (within the caller's tenant); none: the tenant's runs without a user.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
    /// For `GET /memory/facts`: include superseded facts.
    #[serde(default)]
    pub history: bool,
}

pub(crate) async fn facts(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<Value>> {
    let (memory, user) = memory_of(&state, &tenant, q.agent.as_deref(), q.user_id.as_deref())?;
    let facts = if q.history { memory.fact_history(&user).await? } else { memory.facts(&user).await? };
    Ok(Json(json!({ "user_id": q.user_id, "facts": facts })))
}

/// The body of `POST /memory/facts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostFact {
    /// The statement.
    pub statement: String,
    /// What it is about: a valid fact with the same key is superseded.
    #[serde(default)]
    pub key: Option<String>,
    /// How much it matters, 0 to 1 (default 0.5).
    #[serde(default)]
    pub importance: Option<f32>,
    /// The id of a fact of the same user this one replaces.
    #[serde(default)]
    pub supersedes: Option<String>,
    /// Since when it holds (default now).
    #[serde(default)]
    pub valid_from: Option<DateTime<Utc>>,
    /// The user (within the caller's tenant).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
}

pub(crate) async fn add_fact(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Body(body): Body<PostFact>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (memory, user) = memory_of(&state, &tenant, body.agent.as_deref(), body.user_id.as_deref())?;
    let mut fact = NewFact::new(body.statement);
    fact.key = body.key;
    fact.supersedes = body.supersedes;
    fact.valid_from = body.valid_from;
    if let Some(i) = body.importance {
        fact.importance = i;
    }
    let fact = memory.remember_fact(&user, fact).await?;
    Ok((StatusCode::CREATED, Json(json!({ "user_id": body.user_id, "fact": fact }))))
}

/// The query of `GET /memory/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// What to look for.
    pub q: String,
    /// The user (within the caller's tenant).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
    /// At most this many (default 10, at most 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<Value>> {
    if q.q.trim().is_empty() {
        return Err(ApiError::bad_request("`q` is empty"));
    }
    let (memory, user) = memory_of(&state, &tenant, q.agent.as_deref(), q.user_id.as_deref())?;
    let found = memory.search(&user, &q.q, q.limit.unwrap_or(10).clamp(1, 100)).await?;
    let results: Vec<Value> = found
        .into_iter()
        .map(|(score, item)| {
            json!({
                "id": item.id, "kind": item.kind, "text": item.text, "importance": item.importance,
                "recorded_at": item.recorded_at, "score": score,
            })
        })
        .collect();
    Ok(Json(json!({ "user_id": q.user_id, "query": q.q, "results": results })))
}

pub(crate) async fn blocks(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<Value>> {
    let (memory, user) = memory_of(&state, &tenant, q.agent.as_deref(), q.user_id.as_deref())?;
    let blocks = memory.blocks(&user).await?;
    Ok(Json(json!({ "user_id": q.user_id, "blocks": blocks })))
}

/// The body of `PUT /memory/blocks/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBlock {
    /// The block's text (at most the memory's block limit).
    pub text: String,
    /// The user (within the caller's tenant).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
}

pub(crate) async fn put_block(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(name): Path<String>,
    Body(body): Body<PutBlock>,
) -> ApiResult<Json<Value>> {
    let (memory, user) = memory_of(&state, &tenant, body.agent.as_deref(), body.user_id.as_deref())?;
    let block = memory.set_block(&user, &name, &body.text).await?;
    Ok(Json(json!({ "user_id": body.user_id, "block": block })))
}

pub(crate) async fn delete_block(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(name): Path<String>,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<Value>> {
    let (memory, user) = memory_of(&state, &tenant, q.agent.as_deref(), q.user_id.as_deref())?;
    if !memory.delete_block(&user, &name).await? {
        return Err(ApiError::not_found("block", &name));
    }
    Ok(Json(json!({ "user_id": q.user_id, "name": name, "deleted": true })))
}

/// The query of `DELETE /memory`: exactly one of `item_id`, `from` and `to` (a range), `all`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetQuery {
    /// The user (within the caller's tenant).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
    /// One fact or episode, by id.
    #[serde(default)]
    pub item_id: Option<String>,
    /// Facts and episodes recorded from this time (RFC 3339; with `to`).
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// … until this time (exclusive).
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
    /// Everything about the user: episodes, facts with their history, blocks.
    #[serde(default)]
    pub all: bool,
}

pub(crate) async fn forget(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Query(q): Query<ForgetQuery>,
) -> ApiResult<Json<Value>> {
    let what = match (q.item_id, q.from, q.to, q.all) {
        (Some(id), None, None, false) if !id.is_empty() => Forget::Item(id),
        (None, Some(from), Some(to), false) if from < to => Forget::Range(from, to),
        (None, Some(_), Some(_), false) => return Err(ApiError::bad_request("`from` must be before `to`")),
        (None, None, None, true) => Forget::All,
        _ => {
            return Err(ApiError::bad_request(
                "say what to forget: `item_id=ID`, or `from=…&to=…` (RFC 3339), or `all=true`",
            ));
        }
    };
    let (memory, user) = memory_of(&state, &tenant, q.agent.as_deref(), q.user_id.as_deref())?;
    let forgotten = memory.forget(&user, what.clone()).await?;
    if let Forget::Item(id) = &what
        && forgotten == 0
    {
        return Err(ApiError::not_found("memory item", id));
    }
    Ok(Json(json!({ "user_id": q.user_id, "forgotten": forgotten })))
}

pub(crate) async fn export(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<Value>> {
    let (memory, user) = memory_of(&state, &tenant, q.agent.as_deref(), q.user_id.as_deref())?;
    let mut export = memory.export(&user).await?;
    // The user as the client names it, not the store's tenant-scoped id.
    export["user"] = json!(q.user_id);
    Ok(Json(export))
}
