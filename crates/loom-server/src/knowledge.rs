//! Knowledge over HTTP: search the agent's configured knowledge sources, and re-index them.
//!
//! A query sees the shared sources and the caller's tenant's (a source made with
//! `KnowledgeSource::…().tenant("acme")` is searched only for the tenant `acme`). An agent without
//! knowledge sources answers 404 with the code `knowledge_not_configured`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use loom_agent::knowledge::{Knowledge, KnowledgeQuery};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Body, Tenant};

/// The most passages one search returns.
const MAX_TOP_K: usize = 50;

fn knowledge_of(state: &AppState, agent: Option<&str>) -> ApiResult<Arc<Knowledge>> {
    let (name, agent) = state.agent(agent)?;
    agent.knowledge().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "knowledge_not_configured",
            format!("agent `{name}` has no knowledge sources"),
        )
    })
}

/// The query of `GET /knowledge/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchKnowledge {
    /// The question or keywords.
    pub q: String,
    /// The most passages (default 3, at most 50).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Only these sources, comma-separated.
    #[serde(default)]
    pub sources: Option<String>,
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
}

pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Query(q): Query<SearchKnowledge>,
) -> ApiResult<Json<Value>> {
    if q.q.trim().is_empty() {
        return Err(ApiError::bad_request("`q` is empty"));
    }
    let top_k = q.top_k.unwrap_or(3);
    if top_k == 0 || top_k > MAX_TOP_K {
        return Err(ApiError::bad_request(format!("`top_k` is 1 to {MAX_TOP_K}")));
    }
    let knowledge = knowledge_of(&state, q.agent.as_deref())?;
    let mut query = KnowledgeQuery::new(q.q).top_k(top_k).tenant(&*tenant.0);
    if let Some(names) = &q.sources {
        query = query.sources(names.split(',').map(str::trim).filter(|n| !n.is_empty()));
    }
    let bundle = knowledge.resolve(&query).await?;
    let passages: Vec<Value> = bundle
        .passages
        .iter()
        .map(|p| {
            json!({
                "source": p.source, "document": p.document, "location": p.location, "citation": p.citation(),
                "text": p.text, "score": p.score, "uri": p.uri,
            })
        })
        .collect();
    Ok(Json(json!({ "query": bundle.query, "passages": passages })))
}

/// The body of `POST /knowledge/index`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexKnowledge {
    /// The agent (the only one by default).
    #[serde(default)]
    pub agent: Option<String>,
}

/// Re-indexes the agent's inline and directory sources now (incrementally: unchanged files are
/// not re-read); the reports of the shared sources and the caller's tenant's.
pub(crate) async fn index(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Body(body): Body<IndexKnowledge>,
) -> ApiResult<Json<Value>> {
    let knowledge = knowledge_of(&state, body.agent.as_deref())?;
    let reports = knowledge.index().await?;
    let visible: Vec<_> = reports.into_iter().filter(|r| r.tenant.is_empty() || r.tenant == *tenant.0).collect();
    Ok(Json(json!({ "sources": visible })))
}
